"""The packed symmetric output layer of full polar heads."""

from __future__ import annotations

import torch

from model.fitting import TensorFitting, pack_symmetric


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
