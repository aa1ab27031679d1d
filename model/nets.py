"""Dense layers and MLPs with DeePMD-kit's residual rules, weights stored [in, out]."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "softplus": nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
    "none": lambda x: x,
}


class Dense(nn.Module):
    """y = x @ matrix + bias; ``matrix`` is [in, out] as in DeePMD-kit checkpoints."""

    def __init__(self, n_in: int, n_out: int, *, resnet_dt: bool, dtype: torch.dtype,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        # DeePMD-kit's initialisation: N(0, 1/sqrt(in+out)) weights, N(0, 1) biases,
        # timestep N(0.1, 0.001).
        self.matrix = nn.Parameter(torch.randn(n_in, n_out, dtype=dtype, generator=generator) / (n_in + n_out) ** 0.5)
        self.bias = nn.Parameter(torch.randn(n_out, dtype=dtype, generator=generator))
        # The timestep only exists where a residual connection does (out = in or 2·in).
        has_residual = n_out in (n_in, 2 * n_in)
        self.idt = (
            nn.Parameter(0.1 + 0.001 * torch.randn(n_out, dtype=dtype, generator=generator))
            if resnet_dt and has_residual else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.addmm(self.bias, x, self.matrix)


class MLP(nn.Module):
    """Hidden layers y = act(x W + b) [· idt] [+ x | + (x, x)], then an optional plain
    linear output layer (no residual, no timestep), as DeePMD-kit's embedding/fitting nets."""

    def __init__(self, sizes: list[int], *, activation: str, resnet_dt: bool, dtype: torch.dtype,
                 linear_out: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        layers = [Dense(a, b, resnet_dt=resnet_dt, dtype=dtype, generator=generator) for a, b in itertools.pairwise(sizes)]
        if linear_out is not None:
            layers.append(Dense(sizes[-1], linear_out, resnet_dt=False, dtype=dtype, generator=generator))
        self.layers = nn.ModuleList(layers)
        self.n_hidden = len(sizes) - 1

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            if i == self.n_hidden:  # linear output layer
                return layer(x)
            y = self.act(layer(x))
            if layer.idt is not None:
                y = y * layer.idt
            n_in, n_out = layer.matrix.shape
            if n_out == n_in:
                y = y + x
            elif n_out == 2 * n_in:
                y = y + torch.cat([x, x], dim=-1)
            x = y
        return x
