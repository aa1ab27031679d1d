"""Dense layers and MLPs with DeePMD-kit's residual rules, weights stored [in, out].

tanh is evaluated as 1 − 2σ(−2z) with the factor −2 folded into the matmul (addmm's alpha
and beta): float64 tanh is several times slower than sigmoid on CPUs, and the affine
rest fuses with the timestep into one pass (``model/tanh_mlp.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from model.tanh_mlp import TanhMLP, add_residual_, affine, layer_params, tanh_layer

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "softplus": nn.functional.softplus,
    "sigmoid": torch.sigmoid,
    "linear": lambda x: x,
    "none": lambda x: x,
}


def version_key(*tensors: Tensor) -> tuple[tuple[int, int], ...] | None:
    """What identifies the current values of ``tensors`` for a cache of derived data: their
    version counters (an in-place update bumps them) and storage (a cast moves it). None for
    inference tensors, which have no version counter: derive afresh, do not cache."""
    if any(t.is_inference() for t in tensors):
        return None
    return tuple((t._version, t.data_ptr()) for t in tensors)


VersionKey = tuple[tuple[int, int], ...]
Derived = TypeVar("Derived")


def derived_from(cache: dict[int, tuple[VersionKey, Derived]], slot: int, tensors: Sequence[Tensor],
                 build: Callable[[], Derived]) -> Derived:
    """``build()`` (run without a graph) of data derived from ``tensors``, kept in
    ``cache[slot]`` while their values are unchanged (``version_key``); for inference
    tensors built afresh and not kept."""
    key = version_key(*tensors)
    hit = cache.get(slot)
    if key is not None and hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        value = build()
    if key is not None:
        cache[slot] = (key, value)
    return value


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
        return affine(x, self.matrix, self.bias)

    def hidden(self, x: Tensor, activation: str, out: Tensor | None = None, *, differentiable: bool = True) -> Tensor:
        """act(x W + b) [· idt] [+ x | + (x, x)], written into ``out`` when given (tanh only).
        ``differentiable=False``: the residual is added in place (no autograd graph)."""
        if activation == "tanh":
            return tanh_layer(x, self.matrix, self.bias, self.idt, self.residual, out=out)[1]
        y = ACTIVATIONS[activation](self(x))
        if self.idt is not None:
            y = y * self.idt
        if out is not None:
            y = out.copy_(y)
        if not self.residual:
            return y
        if differentiable:
            # out of place: torch's relu and sigmoid save their output for the backward
            return y + (x if y.shape[1] == x.shape[1] else x.repeat(1, 2))
        return add_residual_(y, x)


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
        # (has_idt, residual, is_linear) per layer, as TanhMLP takes it; fixed by the sizes
        self.spec = tuple((layer.idt is not None, layer.residual, i >= self.n_hidden) for i, layer in enumerate(layers))

    def _hidden_layers(self) -> Iterator[Dense]:
        # islice, not self.layers[:n]: slicing a ModuleList builds a new Module (tens of µs a call)
        return itertools.islice(self.layers, self.n_hidden)

    def _fused(self, x: Tensor, with_output: bool, differentiable: bool) -> Tensor | None:
        """The hand-differentiated path for differentiable tanh nets (training, derivatives),
        else None."""
        if self.activation != "tanh" or not differentiable:
            return None
        layers = list(self.layers) if with_output else list(self._hidden_layers())
        spec = self.spec if with_output else self.spec[: self.n_hidden]
        out = TanhMLP.apply(x, spec, *layer_params(layers))
        assert isinstance(out, Tensor)
        return out

    def hidden(self, x: Tensor, *, differentiable: bool = True) -> Tensor:
        """The hidden layers only (the input of the linear output layer)."""
        fused = self._fused(x, False, differentiable)
        if fused is not None:
            return fused
        for layer in self._hidden_layers():
            x = layer.hidden(x, self.activation, differentiable=differentiable)
        return x

    def forward_into(self, x: Tensor, out: Tensor) -> Tensor:
        """forward() writing the last hidden layer into ``out`` (no linear output layer)."""
        assert len(self.layers) == self.n_hidden, "only for nets without a linear output layer"
        *first, last = self._hidden_layers()
        for layer in first:
            x = layer.hidden(x, self.activation, differentiable=False)
        return last.hidden(x, self.activation, out=out, differentiable=False)

    def forward(self, x: Tensor, *, differentiable: bool = True) -> Tensor:
        """``differentiable``: the autograd-ready kernels (training, derivatives); False: the
        inference kernels (in place, no graph; call under torch.no_grad)."""
        fused = self._fused(x, True, differentiable)
        if fused is not None:
            return fused
        x = self.hidden(x, differentiable=differentiable)
        if len(self.layers) > self.n_hidden:
            x = self.layers[self.n_hidden](x)
        return x
