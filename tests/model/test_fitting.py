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


def test_dense_polar_gpu_form_equals_the_packed_cpu_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's unpack-once kernel and the CPU's packed row products are the same α, also
    across chunk boundaries (both chunk sizes forced small here)."""
    model = tiny_model("polar", fit_diag=False, scale=[1.5, 0.5])
    fit = model.fitting
    m1, h = round(fit.unpack.numel() ** 0.5), 12
    g_ = torch.Generator().manual_seed(3)
    n = 37
    hidden = torch.randn(n, h, generator=g_, dtype=torch.float64)
    matrix = torch.randn(h, m1 * (m1 + 1) // 2, generator=g_, dtype=torch.float64)
    bias = torch.randn(m1 * (m1 + 1) // 2, generator=g_, dtype=torch.float64)
    gr = torch.randn(n, m1, 3, generator=g_, dtype=torch.float64)
    scale = torch.tensor(1.5, dtype=torch.float64)
    packed = fitting_fast.packed_polar(hidden, matrix, bias, scale, gr, fit.row_offsets, fit.pack_diag, chunk=8)
    monkeypatch.setattr(fitting_fast, "DENSE_POLAR_ELEMENTS", 5 * m1 * m1)  # chunks of 5 rows
    dense = fitting_fast.dense_polar(hidden, matrix, bias, scale, gr, fit.unpack)
    assert dense.shape == (n, 3, 3)
    torch.testing.assert_close(dense, packed, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense, dense.transpose(1, 2), rtol=0, atol=1e-12)  # α symmetric
