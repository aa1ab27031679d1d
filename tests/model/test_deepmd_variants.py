"""DeePMD-kit models in other configurations than the two reference ones (made by
bench/make_deepmd_variants.py with DeePMD-kit 3.2.0 itself): two-side embedding, descriptor
timestep, diagonal polar head with a per-type scale on every type, full polar head without
the diagonal shift in float32, softplus embedding — each with DeePMD-kit's own predictions
on periodic and open frames, which dptensor must reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_model
from model.inference import predict

VARIANTS = sorted(p for p in (Path(__file__).resolve().parents[1] / "data" / "deepmd_variants").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", VARIANTS, ids=[p.name for p in VARIANTS])
@pytest.mark.parametrize("frames", ["pbc", "open"])
def test_reproduces_deepmd_kit(folder: Path, frames: str) -> None:
    spec = json.loads((folder / "variant.json").read_text())
    ref = np.load(folder / "predictions.npz", allow_pickle=False)
    model = load_model(folder / "model_slim.pt")
    assert model.kind == spec["task"]
    box = ref.get(f"{frames}__box", None)
    pred = predict(model, ref[f"{frames}__coord"], ref[f"{frames}__atype"], box)
    single = "f32" in folder.name  # float32 models agree to float32 rounding only
    tol = 1e-5 if single else 1e-10
    for ours, theirs in ((pred.atomic_tensor, ref[f"{frames}__atomic"]), (pred.global_tensor, ref[f"{frames}__global"])):
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() / np.abs(theirs).max() < tol
    assert np.abs(pred.atomic_tensor).max() > 1e-3  # a non-trivial model
