"""Physics of the tensor model: equivariance, invariances, smoothness at the cutoff, and the
optimised descriptor against the naive formula (every Σsel slot through the nets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import descriptor, descriptor_fast, reference
from model.tensor_model import TensorModel
from tests.model.conftest import assert_rotated, random_frames, random_rotation, tiny_model

VARIANTS = [
    pytest.param("dipole", {}, id="dipole"),
    pytest.param("dipole", {"type_one_side": False, "resnet_dt_desc": True}, id="dipole-two-side-resnet"),
    pytest.param("polar", {"fit_diag": False, "scale": [1.5, 0.5]}, id="polar-full-scale"),
    pytest.param("polar", {"fit_diag": True, "scale": [2.0, 0.5]}, id="polar-diag-scale"),
    pytest.param("polar", {"sel_type": [0, 1], "type_one_side": False}, id="polar-all-types-two-side"),
]


def _run(model: TensorModel, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None,
         differentiable: bool = True):
    out = model(torch.as_tensor(coord), torch.as_tensor(atype), None if box is None else torch.as_tensor(box),
                differentiable=differentiable)
    return out.global_.detach().numpy(), out.atomic.detach().numpy()


@pytest.mark.parametrize(("kind", "over"), VARIANTS)
@pytest.mark.parametrize("pbc", [True, False])
@pytest.mark.parametrize("contraction", ["dense", "blocked", "training"])
def test_matches_naive_formula(kind: str, over: dict, pbc: bool, contraction: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path against the naive formula: dense and blocked contraction of the inference
    kernels (blocked: large batches, with the same-type distinct-value embedding), and the
    differentiable kernels (the full polar head's hand-written backward)."""
    monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 10**12 if contraction == "dense" else 0)
    monkeypatch.setattr(descriptor_fast, "EMBED_BLOCK", 7)  # many small blocks, uneven ends
    model = tiny_model(kind, **over)
    coord, atype, box = random_frames(2, 14, 2, box_len=4.5, seed=11, pbc=pbc)
    if contraction == "training":
        glob, atomic = _run(model, coord, atype, box)
    else:
        with torch.inference_mode():
            glob, atomic = _run(model, coord, atype, box, differentiable=False)
    ref_g, ref_a = reference.predict(reference.params_from_model(model), coord, atype, box)
    np.testing.assert_allclose(atomic, ref_a, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(glob, ref_g, rtol=1e-10, atol=1e-12)
    excluded = ~np.isin(atype, model.sel_type)
    assert np.all(atomic[:, excluded] == 0.0)


@pytest.mark.parametrize("kind", ["dipole", "polar"])
def test_the_kernels_are_chosen_by_the_caller_not_by_the_grad_mode(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """differentiable=False gives the inference kernels' numbers and no graph even with
    autograd on; differentiable=True keeps the graph (derivatives at inference) — and both
    are the naive formula."""
    monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 0)  # the blocked inference kernels
    model = tiny_model(kind, fit_diag=False) if kind == "polar" else tiny_model(kind)
    coord, atype, box = random_frames(2, 14, 2, box_len=4.5, seed=5)
    assert box is not None
    x = torch.tensor(coord, requires_grad=True)
    fast = model(x, torch.as_tensor(atype), torch.as_tensor(box), differentiable=False)
    assert torch.is_grad_enabled() and not fast.global_.requires_grad
    slow = model(x, torch.as_tensor(atype), torch.as_tensor(box), differentiable=True)
    assert slow.global_.requires_grad
    ref_g, _ = reference.predict(reference.params_from_model(model), coord, atype, box)
    np.testing.assert_allclose(fast.global_.numpy(), ref_g, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(slow.global_.detach().numpy(), ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("kind", "over"), VARIANTS)
def test_rotation_equivariance(kind: str, over: dict) -> None:
    model = tiny_model(kind, **over)
    coord, atype, box = random_frames(2, 16, 2, box_len=5.0, seed=12)
    assert box is not None
    q = random_rotation(1)
    assert_rotated(kind, q, _run(model, coord, atype, box), _run(model, coord @ q.T, atype, box @ q.T))


@pytest.mark.parametrize(("kind", "over"), VARIANTS[:3])
def test_translation_and_periodic_image_invariance(kind: str, over: dict) -> None:
    model = tiny_model(kind, **over)
    coord, atype, box = random_frames(2, 16, 2, box_len=5.0, seed=13)
    assert box is not None
    _, a0 = _run(model, coord, atype, box)
    shifted = coord + np.array([0.37, -1.2, 2.5])
    np.testing.assert_allclose(_run(model, shifted, atype, box)[1], a0, atol=1e-11)
    wrapped = coord.copy()
    wrapped[:, 3] += box[:, 1] - 2 * box[:, 2]  # move one atom by lattice vectors
    np.testing.assert_allclose(_run(model, wrapped, atype, box)[1], a0, atol=1e-11)
    g_open, _ = _run(model, coord, atype, None)
    np.testing.assert_allclose(_run(model, shifted, atype, None)[0], g_open, atol=1e-11)


@pytest.mark.parametrize(("kind", "over"), VARIANTS)
def test_same_type_permutation_permutes_outputs(kind: str, over: dict) -> None:
    model = tiny_model(kind, **over)
    coord, atype, box = random_frames(1, 16, 2, box_len=5.0, seed=14)
    perm = np.arange(16)
    rng = np.random.default_rng(0)
    for t in (0, 1):
        idx = np.flatnonzero(atype == t)
        perm[idx] = rng.permutation(idx)
    g0, a0 = _run(model, coord, atype, box)
    g1, a1 = _run(model, coord[:, perm], atype[perm], box)
    np.testing.assert_allclose(a1, a0[:, perm], atol=1e-11)
    np.testing.assert_allclose(g1, g0, atol=1e-11)


@pytest.mark.parametrize("kind", ["dipole", "polar"])
def test_smooth_as_a_neighbour_crosses_rcut(kind: str) -> None:
    model = tiny_model(kind, sel_type=[0, 1])
    rcut = model.rcut
    # centre at the origin, one neighbour moved radially through rcut, others well inside
    base = np.array([[0.0, 0.0, 0.0], [1.1, 0.2, 0.0], [-0.4, 1.3, 0.3], [0.2, -0.5, -1.2]])
    atype = np.array([0, 1, 0, 1, 1])
    direction = np.array([0.6, 0.64, 0.48])

    def tensor_at(r: float) -> np.ndarray:
        coord = np.vstack([base, r * direction])[None]
        return _run(model, coord, atype, None)[1][0, 0]

    eps = [1e-2, 1e-3, 1e-4]
    jumps = [np.abs(tensor_at(rcut - e) - tensor_at(rcut + e)).max() for e in eps]
    assert jumps[0] > 0  # the neighbour does contribute inside rcut
    assert jumps[2] < 1e-9  # and fades out smoothly (sw ~ (rcut − r)³)
    assert jumps[1] < jumps[0] / 50 and jumps[2] < jumps[1] / 50
    # beyond rcut nothing changes at all
    assert np.array_equal(tensor_at(rcut + 1e-6), tensor_at(rcut + 0.5))


@pytest.mark.parametrize("contraction", ["dense", "blocked"])
def test_float32_model_close_to_float64(contraction: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(descriptor, "DENSE_CONTRACTION_MAX", 10**12 if contraction == "dense" else 0)
    model = tiny_model("polar")
    coord, atype, box = random_frames(2, 16, 2, box_len=5.0, seed=15)
    with torch.inference_mode():
        g64, _ = _run(model, coord, atype, box)
        model.set_precision(torch.float32)
        g32, _ = _run(model, coord, atype, box)
    assert g32.dtype == np.float32
    np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5)
