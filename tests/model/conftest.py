"""Small random systems and tiny model configurations for fast model tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from model.config import ModelConfig, parse_section
from model.tensor_model import TensorModel


def random_frames(nf: int, nat: int, ntypes: int, *, box_len: float = 6.0, seed: int = 0, pbc: bool = True,
                  triclinic: bool = False, min_dist: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """coord [nf, nat, 3] with no pair closer than min_dist, atype [nat], box [nf, 3, 3]."""
    rng = np.random.default_rng(seed)
    atype = np.arange(nat) % ntypes
    boxes = []
    coords = np.zeros((nf, nat, 3))
    for f in range(nf):
        box = np.eye(3) * box_len * (1 + 0.05 * rng.random())
        if triclinic:
            box[1, 0], box[2, 0], box[2, 1] = 0.3 * box_len, -0.2 * box_len, 0.25 * box_len
        boxes.append(box)
        placed: list[np.ndarray] = []
        while len(placed) < nat:
            p = rng.random(3) @ box
            if all(np.linalg.norm(p - q) > min_dist for q in placed):
                placed.append(p)
        coords[f] = np.array(placed)
    return coords, atype, (np.array(boxes) if pbc else None)


def random_rotation(seed: int) -> np.ndarray:
    """A proper rotation (det +1) drawn from the seed."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def assert_rotated(kind: str, q: np.ndarray, before: tuple[np.ndarray, np.ndarray],
                   after: tuple[np.ndarray, np.ndarray]) -> None:
    """(global, atomic) of rotated input = the rotated outputs: μ → qμ, α → q α qᵀ; and the
    output is not trivially zero."""
    (g0, a0), (g1, a1) = before, after
    if kind == "dipole":
        np.testing.assert_allclose(a1, a0 @ q.T, atol=1e-10)
        np.testing.assert_allclose(g1, g0 @ q.T, atol=1e-10)
    else:
        shape = (*a0.shape[:2], 3, 3)
        rot = np.einsum("ab,fnbc,dc->fnad", q, a0.reshape(shape), q)
        np.testing.assert_allclose(a1.reshape(shape), rot, atol=1e-10)
    assert np.abs(a0).max() > 1e-3  # a non-trivial output


def tiny_config(kind: str = "dipole", **overrides: Any) -> ModelConfig:
    """A small model: fast enough to evaluate the naive reference on it."""
    desc = {"type": "se_e2_a", "sel": [24, 24], "rcut": 3.2, "rcut_smth": 1.5, "neuron": [4, 8, 16],
            "axis_neuron": 3, "type_one_side": True, "resnet_dt": False, "seed": 1}
    fit: dict[str, Any] = {"type": kind, "neuron": [12, 12], "resnet_dt": True, "seed": 2}
    top: dict[str, Any] = {"type_map": ["O", "H"]}
    for key, value in overrides.items():
        if key == "activation":
            desc["activation_function"] = fit["activation_function"] = value
        elif key in ("sel", "rcut", "rcut_smth", "neuron", "axis_neuron", "type_one_side", "resnet_dt_desc", "precision"):
            desc["resnet_dt" if key == "resnet_dt_desc" else key] = value
        elif key in ("fit_diag", "scale", "shift_diag", "sel_type", "fit_neuron", "resnet_dt"):
            fit["neuron" if key == "fit_neuron" else key] = value
        else:
            top[key] = value
    return parse_section({**top, "descriptor": desc, "fitting_net": fit}, ModelConfig)  # type: ignore[no-any-return]


def tiny_model(kind: str = "dipole", seed: int = 0, **overrides: Any) -> TensorModel:
    """A tiny model with non-trivial statistics, biases and shift (so tests exercise them)."""
    model = TensorModel(tiny_config(kind, **overrides))
    g = torch.Generator().manual_seed(seed)
    d = model.descriptor
    with torch.no_grad():
        davg = torch.zeros_like(d.davg)
        davg[..., 0] = 0.2 + 0.1 * torch.rand(d.davg.shape[:2], generator=g, dtype=d.davg.dtype)
        d.davg.copy_(davg)
        dstd = 0.3 + 0.2 * torch.rand(d.dstd.shape, generator=g, dtype=d.dstd.dtype)
        dstd[..., 2:] = dstd[..., 1:2]  # one pooled angular std, as DeePMD-kit computes it
        d.dstd.copy_(dstd)
        f = model.fitting
        f.bias_atom_e.copy_(0.1 * torch.randn(f.bias_atom_e.shape, generator=g, dtype=f.bias_atom_e.dtype))
        if kind == "polar":
            f.shift_diag.copy_(torch.rand(f.shift_diag.shape, generator=g, dtype=f.shift_diag.dtype))
    return model.eval()


@pytest.fixture
def frames() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return random_frames(2, 16, 2, box_len=5.0, seed=3)
