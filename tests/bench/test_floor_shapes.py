"""bench/floor.py's inference floor: it counts the work of a predict() call (embedding rows
per net, centres per fitting type) from the model's own environment, and times every part."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from floor import measure_inference_floor, predict_shapes
from inputs import Task

from model import load_model

WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


def test_one_water_molecule_is_one_centre_with_its_two_hydrogens() -> None:
    model = load_model(Task("dipole").reference_model, device="cpu")
    two = torch.as_tensor(np.stack([WATER, WATER + 0.1]))  # two frames, one molecule each
    shapes = predict_shapes(model, two, torch.tensor([0, 1, 1]), None)
    assert shapes.n_centres == 2 and sum(shapes.centres.values()) == 2  # the O of each frame
    assert sum(shapes.embed_rows.values()) == 4  # its two O–H pairs per frame
    assert shapes.embed_sizes[0] == 1 and shapes.fit_sizes[-1] == model.fitting.dim_out

    floor = measure_inference_floor(shapes, model.kind, frames=2, threads=1)
    assert floor.unit == "frame" and all(v > 0 for v in floor.ms.values())
    assert list(floor.ms) == ["embedding matmuls", "fitting matmuls", "sigmoids", "contraction",
                              "descriptor product", "output head"]
