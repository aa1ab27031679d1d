"""Prediction glue: cached models, structures (as validated by the api) → arrays → tensors."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from jobs.layout import shown
from model.checkpoint import model_from_checkpoint, model_summary, read_checkpoint
from model.deepmd_compat import is_deepmd_checkpoint
from model.errors import CheckpointError
from model.inference import predict, save_predictions_npz
from model.structures import load_structures
from model.tensor_model import TensorModel

Progress = Callable[[int, int], None]


class Stopped(Exception):
    """Raised from a progress callback when the job is to stop (cancel / shutdown)."""


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, device: str, max_search_candidates: int) -> TensorModel:
    from model.checkpoint import load_model

    model = load_model(path, device=device)
    model.max_search_candidates = max_search_candidates
    return model


def load_cached(path: str, device: str, max_search_candidates: int) -> TensorModel:
    """Loading costs far more than a small prediction: keep the last few models. The
    neighbour-search budget (settings) bounds what one frame may cost (thin cells)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise CheckpointError(f"model file {Path(path).name} is missing on this worker (shared data dir?)") from None
    return _load(path, mtime, device, max_search_candidates)


def _groups(structures: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Runs of consecutive structures with the same atoms and periodicity: one batch each."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(structures) + 1):
        if i == len(structures) or (structures[i]["types"] != structures[start]["types"]
                                    or (structures[i]["cell"] is None) != (structures[start]["cell"] is None)):
            runs.append((start, i))
            start = i
    return runs


def predict_structures(model: TensorModel, structures: list[dict[str, Any]], progress: Progress | None = None
                       ) -> tuple[list[list[float]], list[list[list[float]]]]:
    glob: list[list[float]] = []
    atomic: list[list[list[float]]] = []
    for a, b in _groups(structures):
        chunk = structures[a:b]
        coord = np.asarray([s["positions"] for s in chunk], dtype=np.float64)
        atype = np.asarray(chunk[0]["types"], dtype=np.int64)
        box = None if chunk[0]["cell"] is None else np.asarray([s["cell"] for s in chunk], dtype=np.float64)
        pred = predict(model, coord, atype, box)
        glob.extend(pred.global_tensor.tolist())
        atomic.extend(pred.atomic_tensor.tolist())
        if progress is not None:
            progress(b, len(structures))
    return glob, atomic


def born_structures(model: TensorModel, structures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Born charges of each structure (model.dipole_derivatives), batched like the predictions."""
    from model.dipole_derivatives import born_charges

    out: list[dict[str, Any]] = []
    for a, b in _groups(structures):
        chunk = structures[a:b]
        coord = np.asarray([s["positions"] for s in chunk], dtype=np.float64)
        box = None if chunk[0]["cell"] is None else np.asarray([s["cell"] for s in chunk], dtype=np.float64)
        born = born_charges(model, coord, list(chunk[0]["types"]), box)
        out.extend({"z": z.tolist(), "sum_rule_violation": float(v)}
                   for z, v in zip(born.z, born.sum_rule_violation, strict=True))
    return out


def predict_system(model: TensorModel, path: Path, out: Path, progress: Progress) -> int:
    coord, atype, box = load_structures(str(path), model.type_map)
    save_predictions_npz(out, model, coord, atype, box, progress=progress)
    return int(coord.shape[0])


def inspect(root: Path, relative: str) -> dict[str, Any]:
    """Load an uploaded checkpoint (weights only) and describe it."""
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise CheckpointError("model path outside the data directory")
    try:
        ck = read_checkpoint(path)
        model = model_from_checkpoint(ck)
    except CheckpointError as exc:  # the user knows their file, not our staging path
        raise CheckpointError(shown(str(exc), {path: "the uploaded file"})) from None
    summary = {**model_summary(model), "format": "deepmd-kit" if is_deepmd_checkpoint(ck) else "dptensor"}
    metrics = {k: float(v) for k, v in (ck.get("metrics") or {}).items() if isinstance(v, int | float)}
    return {"summary": summary, "metrics": metrics}
