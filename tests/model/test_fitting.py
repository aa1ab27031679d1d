"""The packed symmetric output layer of full polar heads."""

from __future__ import annotations

import pytest
import torch

from model import fitting_fast
from model.fitting import SymmetricContraction, TensorFitting, pack_symmetric, triu_pack_indices
from tests.model.conftest import tiny_model


def test_pack_keeps_the_symmetric_part() -> None:
    m1 = 5
    full = torch.randn(3, m1 * m1, dtype=torch.float64)
    packed = pack_symmetric(full, m1)
    fit = TensorFitting(kind="polar", ntypes=1, sel_type=[0], dim_descrpt=4, m1=m1, neuron=[4],
                        resnet_dt=False, activation="tanh", dtype=torch.float64, fit_diag=False)
    sym = full.view(3, m1, m1)
    sym = 0.5 * (sym + sym.transpose(1, 2))
    assert torch.allclose(packed[:, fit.unpack].view(3, m1, m1), sym)


def test_packed_initialisation_matches_the_symmetrised_full_layer() -> None:
    """Off-diagonal packed weights start with 1/√2 the spread of the diagonal ones, as the
    symmetric part of DeePMD-kit's i.i.d. initialised M1² layer does."""
    gen = torch.Generator().manual_seed(0)
    fit = TensorFitting(kind="polar", ntypes=1, sel_type=[0], dim_descrpt=8, m1=60, neuron=[200],
                        resnet_dt=False, activation="tanh", dtype=torch.float64, fit_diag=False, generator=gen)
    w = fit.nets["0"].layers[-1].matrix.detach()  # type: ignore[index]
    diag = torch.zeros(w.shape[1], dtype=torch.bool)
    diag[fit.pack_diag] = True
    ratio = float(w[:, ~diag].std() / w[:, diag].std())
    assert abs(ratio - 0.5**0.5) < 0.03
    assert abs(float(w[:, diag].std()) - (200 + 60 * 60) ** -0.5) < 0.03 * (200 + 3600) ** -0.5


def _contraction_inputs(m1: int, n: int = 5) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(3)
    fit = TensorFitting(kind="polar", ntypes=1, sel_type=[0], dim_descrpt=8, m1=m1, neuron=[4],
                        resnet_dt=False, activation="tanh", dtype=torch.float64, fit_diag=False)
    packed = torch.randn(n, m1 * (m1 + 1) // 2, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(n, m1, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    return packed, g, torch.tensor(1.7, dtype=torch.float64), fit.unpack, fit.upper, fit.upper_weight


def test_symmetric_contraction_matches_autograd_through_the_full_matrix() -> None:
    """The hand-written backward equals autograd through A = sym(unpack(U)), α = grᵀ A gr,
    for an arbitrary (non-symmetric) upstream gradient."""
    m1 = 6
    packed, g, scale, unpack, upper, weight = _contraction_inputs(m1)
    upstream = torch.randn(packed.shape[0], 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = SymmetricContraction.apply(packed, g, scale, unpack, upper, weight)
    d_packed, d_g = torch.autograd.grad((out * upstream).sum(), (packed, g))

    p2, g2 = packed.detach().clone().requires_grad_(), g.detach().clone().requires_grad_()
    mn, nm = triu_pack_indices(m1)
    full = p2.new_zeros(p2.shape[0], m1 * m1).index_copy(1, mn, p2).index_copy(1, nm, p2).view(-1, m1, m1)
    ref = g2.transpose(1, 2) @ (full * scale) @ g2
    ref_p, ref_g = torch.autograd.grad((ref * upstream).sum(), (p2, g2))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_packed, ref_p, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_g, ref_g, rtol=1e-12, atol=1e-12)


def test_symmetric_contraction_gradcheck() -> None:
    packed, g, scale, unpack, upper, weight = _contraction_inputs(4, n=3)
    assert torch.autograd.gradcheck(lambda p, x: SymmetricContraction.apply(p, x, scale, unpack, upper, weight),
                                    (packed, g))


def _polar_inputs(m1: int, h: int = 12, n: int = 37, seed: int = 3) -> tuple[torch.Tensor, ...]:
    g_ = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g_, dtype=torch.float64)
    matrix = torch.randn(h, m1 * (m1 + 1) // 2, generator=g_, dtype=torch.float64)
    bias = torch.randn(m1 * (m1 + 1) // 2, generator=g_, dtype=torch.float64)
    gr = torch.randn(n, m1, 3, generator=g_, dtype=torch.float64)
    return hidden, matrix, bias, gr, torch.tensor(1.5, dtype=torch.float64)


def _polar_formula(hidden: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor, gr: torch.Tensor,
                   scale: torch.Tensor) -> torch.Tensor:
    """scale · grᵀ A gr with A the whole symmetric matrix: the readable formula."""
    m1 = gr.shape[1]
    mn, nm = triu_pack_indices(m1)
    packed = hidden @ matrix + bias
    full = packed.new_zeros(packed.shape[0], m1 * m1).index_copy(1, mn, packed).index_copy(1, nm, packed)
    return scale * gr.transpose(1, 2) @ full.view(-1, m1, m1) @ gr


@pytest.mark.parametrize(("m1", "size"), [(100, None), (12, None), (12, 1), (12, 12), (7, None), (1, None)])
def test_blocked_polar_equals_the_formula(m1: int, size: int | None) -> None:
    """The CPU kernel's block layout (off-diagonal blocks whole, diagonal blocks halved) is
    the same α as grᵀ A gr on the whole matrix, for any block size dividing M1, across
    chunk boundaries (chunks of 8 rows of 37)."""
    hidden, matrix, bias, gr, scale = _polar_inputs(m1)
    blocks = fitting_fast.polar_blocks(matrix, bias, fitting_fast.block_layout(m1, size))
    assert blocks.weight.shape == (matrix.shape[0] + 1, matrix.shape[1])  # no more columns than packed, + the bias
    out = fitting_fast.blocked_polar(hidden, blocks, scale, gr, chunk=8)
    ref = _polar_formula(hidden, matrix, bias, gr, scale)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12 * float(ref.abs().max()))


def test_block_size_divides_m1_near_the_target() -> None:
    assert fitting_fast.block_size(100) == 20
    assert fitting_fast.block_size(7) == 7
    assert all(m % fitting_fast.block_size(m) == 0 for m in range(1, 130))


def test_block_layout_follows_the_weights() -> None:
    """The fitting caches the block layout; a change of the weights (in place, as an
    optimizer step) rebuilds it, so predictions never use stale weights."""
    model = tiny_model("polar", fit_diag=False)
    fit = model.fitting
    m1 = fit.m1
    n = 5
    d = torch.randn(1, n, fit.nets["0"].layers[0].matrix.shape[0], dtype=torch.float64)
    gr = torch.randn(1, n, m1, 3, dtype=torch.float64)
    slices = [(0, 0, n)]
    with torch.no_grad():
        first = fit(d, gr, slices, differentiable=False)
        fit.nets["0"].layers[-1].matrix.mul_(2.0)
        second = fit(d, gr, slices, differentiable=False)
    torch.testing.assert_close(second, fit(d, gr, slices, differentiable=True).detach(), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(first, second)


def test_dense_polar_gpu_form_equals_the_blocked_cpu_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's unpack-once kernel and the CPU's block kernel are the same α, also across
    chunk boundaries (both chunk sizes forced small here)."""
    model = tiny_model("polar", fit_diag=False, scale=[1.5, 0.5])
    fit = model.fitting
    m1 = round(fit.unpack.numel() ** 0.5)
    hidden, matrix, bias, gr, scale = _polar_inputs(m1)
    n = hidden.shape[0]
    blocks = fitting_fast.polar_blocks(matrix, bias, fitting_fast.block_layout(m1))
    blocked = fitting_fast.blocked_polar(hidden, blocks, scale, gr, chunk=8)
    monkeypatch.setattr(fitting_fast, "DENSE_POLAR_ELEMENTS", 5 * m1 * m1)  # chunks of 5 rows
    dense = fitting_fast.dense_polar(hidden, matrix, bias, scale, gr, fit.unpack)
    assert dense.shape == (n, 3, 3)
    torch.testing.assert_close(dense, blocked, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense, dense.transpose(1, 2), rtol=0, atol=1e-12)  # α symmetric


@pytest.mark.parametrize(("kind", "over"), [("dipole", {}), ("polar", {"fit_diag": True}), ("polar", {"fit_diag": False})])
def test_z_space_head_equals_the_net_and_follows_hidden_weights(kind: str, over: dict) -> None:
    """The inference head (hidden layers in z-space, output layer folded onto z) is the
    differentiable net's tensor to 1e-12, and is rebuilt after an in-place change of a
    hidden layer (its α moves the folded output bias)."""
    fit = tiny_model(kind, **over).fitting
    n = 7
    d = torch.randn(1, n, fit.nets["0"].layers[0].matrix.shape[0], dtype=torch.float64)
    gr = torch.randn(1, n, fit.m1, 3, dtype=torch.float64)
    slices = [(0, 0, n)]
    with torch.no_grad():
        first = fit(d, gr, slices, differentiable=False)
        torch.testing.assert_close(first, fit(d, gr, slices, differentiable=True), rtol=1e-12, atol=1e-12)
        fit.nets["0"].layers[1].matrix.mul_(1.7)
        second = fit(d, gr, slices, differentiable=False)
        torch.testing.assert_close(second, fit(d, gr, slices, differentiable=True), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(first, second)
