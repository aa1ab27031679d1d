"""MLPs: the hand-differentiated training path against plain autograd, and residual nets
with every activation under autograd."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from model.nets import ACTIVATIONS, MLP, Dense
from model.tanh_mlp import BIAS_IN_PRODUCT_MIN_ROWS

F64 = torch.float64


def _reference(net: MLP, x: Tensor, activation: str) -> Tensor:
    """Layer by layer, out of place, with torch's own activation: DeePMD-kit's rules."""
    for i, layer in enumerate(net.layers):
        assert isinstance(layer, Dense)
        z = x @ layer.matrix + layer.bias
        if i >= net.n_hidden:
            return z
        y = ACTIVATIONS[activation](z)
        if layer.idt is not None:
            y = y * layer.idt
        if layer.residual:
            y = y + (x if y.shape[1] == x.shape[1] else torch.cat([x, x], dim=1))
        x = y
    return x


CASES = [  # sizes, linear_out, resnet_dt
    ([1, 4, 8, 16], None, False),  # embedding net: 1-wide input, out = 2·in residuals
    ([1, 4, 8, 16], None, True),
    ([12, 6, 6, 6], 5, True),  # fitting net: out = in residuals, timestep, linear output
    ([12, 6, 12], 3, False),
]


@pytest.mark.parametrize(("sizes", "linear_out", "resnet_dt"), CASES)
@pytest.mark.parametrize("rows", [9, BIAS_IN_PRODUCT_MIN_ROWS + 3])  # bias added, bias in the product
def test_fused_tanh_path_matches_autograd(sizes: list[int], linear_out: int | None, resnet_dt: bool, rows: int) -> None:
    gen = torch.Generator().manual_seed(5)
    net = MLP(sizes, activation="tanh", resnet_dt=resnet_dt, dtype=F64, linear_out=linear_out, generator=gen)
    x = torch.randn(rows, sizes[0], dtype=F64, generator=gen, requires_grad=sizes[0] > 1)
    upstream = torch.randn(rows, linear_out or sizes[-1], dtype=F64, generator=gen)
    inputs = [*net.parameters()] + ([x] if x.requires_grad else [])

    out = net(x)
    assert out.grad_fn is not None and type(out.grad_fn).__name__ == "TanhMLPBackward"
    ref = _reference(net, x, "tanh")
    torch.testing.assert_close(out, ref, rtol=1e-13, atol=1e-13)
    got = torch.autograd.grad(out, inputs, upstream)
    want = torch.autograd.grad(ref, inputs, upstream)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_fused_hidden_layers_pass_gradcheck() -> None:
    gen = torch.Generator().manual_seed(6)
    net = MLP([5, 5, 10], activation="tanh", resnet_dt=True, dtype=F64, linear_out=7, generator=gen)
    x = torch.randn(4, 5, dtype=F64, generator=gen, requires_grad=True)
    params = tuple(net.parameters())

    def hidden(x: Tensor, *_: Tensor) -> Tensor:
        return net.hidden(x)

    assert torch.autograd.gradcheck(hidden, (x, *params))
    assert torch.autograd.gradcheck(net, (x,))


def test_inference_takes_the_plain_path() -> None:
    net = MLP([1, 4, 8], activation="tanh", resnet_dt=False, dtype=F64)
    x = torch.randn(3, 1, dtype=F64)
    with torch.no_grad():
        y = net(x)
    torch.testing.assert_close(y, _reference(net, x, "tanh").detach())


@pytest.mark.parametrize("resnet_dt", [False, True])
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softplus", "relu6"])
def test_residual_nets_with_other_activations_differentiate(activation: str, resnet_dt: bool) -> None:
    """Activations that save their output for the backward must not see it changed in
    place by the residual add."""
    gen = torch.Generator().manual_seed(7)
    net = MLP([1, 4, 8, 8], activation=activation, resnet_dt=resnet_dt, dtype=F64, linear_out=2, generator=gen)
    x = torch.rand(6, 1, dtype=F64, generator=gen)
    params = list(net.parameters())
    got = torch.autograd.grad(net(x).sum(), params)
    want = torch.autograd.grad(_reference(net, x, activation).sum(), params)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_fused_path_in_float32() -> None:
    gen = torch.Generator().manual_seed(8)
    net = MLP([1, 4, 8, 16], activation="tanh", resnet_dt=True, dtype=torch.float32, generator=gen)
    x = torch.randn(11, 1, dtype=torch.float32, generator=gen)
    out = net(x)
    assert out.dtype == torch.float32 and type(out.grad_fn).__name__ == "TanhMLPBackward"
    ref = _reference(net, x, "tanh")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    upstream = torch.randn(11, 16, dtype=torch.float32, generator=gen)
    for g, w in zip(torch.autograd.grad(out, list(net.parameters()), upstream),
                    torch.autograd.grad(ref, list(net.parameters()), upstream), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)
