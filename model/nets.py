"""Dense layers and MLPs with DeePMD-kit's residual rules, weights stored [in, out].

tanh is evaluated as 2·σ(2z) − 1 with the factor 2 folded into the matmul (addmm's alpha
and beta): float64 tanh is several times slower than sigmoid on CPUs, and the affine
rest fuses with the timestep and the residual into one pass.
"""

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
        self.residual = n_out in (n_in, 2 * n_in)
        self.idt = (
            nn.Parameter(0.1 + 0.001 * torch.randn(n_out, dtype=dtype, generator=generator))
            if resnet_dt and self.residual else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:  # a 1-wide input (the embedding net's first layer): no GEMM needed
            return torch.addcmul(self.bias, x, self.matrix)
        return torch.addmm(self.bias, x, self.matrix)

    def hidden(self, x: Tensor, activation: str, out: Tensor | None = None) -> Tensor:
        """act(x W + b) [· idt] [+ x | + (x, x)], written into ``out`` when given (tanh only)."""
        if activation == "tanh":
            z = (2.0 * torch.addcmul(self.bias, x, self.matrix) if x.shape[1] == 1
                 else torch.addmm(self.bias, x, self.matrix, beta=2.0, alpha=2.0))
            u = torch.sigmoid(z)
            # tanh = 2u − 1; with the timestep (2u − 1)·idt = u·(2 idt) − idt: one fused pass
            if self.idt is None:
                two = torch.full((), 2.0, dtype=u.dtype, device=u.device)
                y = torch.addcmul(-0.5 * two, u, two, out=out)
            else:
                y = torch.addcmul(-self.idt, u, 2.0 * self.idt, out=out)
        else:
            y = ACTIVATIONS[activation](self(x))
            if self.idt is not None:
                y = y * self.idt
            if out is not None:
                y = out.copy_(y)
        # In place is safe under autograd: addcmul's backward does not use its output.
        if self.residual:
            n_in = x.shape[1]
            if y.shape[1] == n_in:
                y.add_(x)
            else:  # out = 2·in: y += (x, x) without materialising the concatenation
                y.view(-1, 2, n_in).add_(x[:, None, :])
        return y


class MLP(nn.Module):
    """Hidden layers y = act(x W + b) [· idt] [+ x | + (x, x)], then an optional plain
    linear output layer (no residual, no timestep), as DeePMD-kit's embedding/fitting nets."""

    def __init__(self, sizes: list[int], *, activation: str, resnet_dt: bool, dtype: torch.dtype,
                 linear_out: int | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.activation = activation
        layers = [Dense(a, b, resnet_dt=resnet_dt, dtype=dtype, generator=generator)
                  for a, b in itertools.pairwise(sizes)]
        if linear_out is not None:
            layers.append(Dense(sizes[-1], linear_out, resnet_dt=False, dtype=dtype, generator=generator))
        self.layers: list[Dense] = nn.ModuleList(layers)  # type: ignore[assignment]
        self.n_hidden = len(sizes) - 1

    def hidden(self, x: Tensor) -> Tensor:
        """The hidden layers only (the input of the linear output layer)."""
        for layer in self.layers[: self.n_hidden]:
            x = layer.hidden(x, self.activation)
        return x

    def forward_into(self, x: Tensor, out: Tensor) -> Tensor:
        """forward() writing the last hidden layer into ``out`` (no linear output layer)."""
        assert len(self.layers) == self.n_hidden, "only for nets without a linear output layer"
        for layer in self.layers[: self.n_hidden - 1]:
            x = layer.hidden(x, self.activation)
        return self.layers[self.n_hidden - 1].hidden(x, self.activation, out=out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.hidden(x)
        if len(self.layers) > self.n_hidden:
            x = self.layers[self.n_hidden](x)
        return x
