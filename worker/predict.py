"""Prediction glue: cached models, structures (as validated by the api) → arrays → tensors."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from jobs.layout import MODEL_FILE, shown
from model.checkpoint import (
    load_model,
    model_from_checkpoint,
    model_summary,
    read_checkpoint,
    save_checkpoint,
)
from model.committee import (
    Committee,
    Predictor,
    committee_members,
    deviation,
    is_committee_checkpoint,
)
from model.deepmd_compat import is_deepmd_checkpoint
from model.dpmodel_export import export_model
from model.dpmodel_file import is_dpmodel_file
from model.dpmodel_import import load_dpmodel
from model.errors import CheckpointError
from model.inference import predict

Progress = Callable[[int, int], None]


class Stopped(Exception):
    """Raised from a progress callback when the job is to stop (cancel / shutdown)."""


@lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int, device: str, max_search_candidates: int) -> Predictor:
    from model.committee import load_predictor

    return load_predictor(path, device=device, max_search_candidates=max_search_candidates)


def load_cached(path: str, device: str, max_search_candidates: int) -> Predictor:
    """Loading costs far more than a small prediction: keep the last few models (a
    registered committee loads as a Committee). The neighbour-search budget (settings)
    bounds what one frame may cost (thin cells)."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise CheckpointError(f"model file {Path(path).name} is missing on this worker (shared data dir?)") from None
    return _load(path, mtime, device, max_search_candidates)


def _groups(structures: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of the structures with the same atoms and periodicity, in order of first
    appearance: one forward pass each (coalesced requests of one molecule share one)."""
    groups: dict[tuple[tuple[int, ...], bool], list[int]] = {}
    for i, s in enumerate(structures):
        groups.setdefault((tuple(s["types"]), s["cell"] is None), []).append(i)
    return list(groups.values())


def _arrays(chunk: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray | None]:
    coord = np.asarray([s["positions"] for s in chunk], dtype=np.float64)
    box = None if chunk[0]["cell"] is None else np.asarray([s["cell"] for s in chunk], dtype=np.float64)
    return coord, box


# global [n_structures, dim], atomic [nat, dim] per structure, committee columns per structure
Prediction = tuple[np.ndarray, list[np.ndarray], list[dict[str, Any]]]


def predict_structures(model: Predictor, structures: list[dict[str, Any]], progress: Progress | None = None
                       ) -> Prediction:
    """(global, atomic, committee) per structure, as float64 arrays (a synchronous answer
    crosses the broker as their bytes: no detour through lists); global/atomic are a
    committee's mean and committee holds its global_std, atomic_std, devi_global,
    devi_atomic_max ({} for a single model)."""
    glob = np.zeros((len(structures), model.dim))
    atomic: list[np.ndarray] = [np.zeros((0, model.dim)) for _ in structures]
    extra: list[dict[str, Any]] = [{} for _ in structures]
    done = 0
    for index in _groups(structures):
        chunk = [structures[i] for i in index]
        coord, box = _arrays(chunk)
        pred = predict(model, coord, np.asarray(chunk[0]["types"], dtype=np.int64), box)
        glob[index] = pred.global_tensor
        for i, a in zip(index, pred.atomic_tensor, strict=True):
            atomic[i] = a
        if pred.member_global is not None and pred.member_atomic is not None:
            dev = deviation(pred.member_global, pred.member_atomic)
            for k, i in enumerate(index):
                extra[i] = {"global_std": dev.global_std[k].tolist(), "atomic_std": dev.atomic_std[k].tolist(),
                            "devi_global": float(dev.devi_global[k]),
                            "devi_atomic_max": float(dev.devi_atomic_max[k])}
        done += len(index)
        if progress is not None:
            progress(done, len(structures))
    return glob, atomic, extra


def predict_requests(model: Predictor, requests: list[list[dict[str, Any]]]) -> list[Prediction | Exception]:
    """Coalesced requests: all their frames in one forward pass per kind of structure, the
    results split back per request. A frame may fail the shared pass (e.g. a cell over the
    search budget): then each request runs alone, so only the bad one fails. A request's
    error is returned in its place, never raised (a batch of one included)."""
    try:
        glob, atomic, extra = predict_structures(model, [s for r in requests for s in r])
    except Exception as exc:
        if len(requests) == 1:
            return [exc]
        alone: list[Prediction | Exception] = []
        for r in requests:
            try:
                alone.append(predict_structures(model, r))
            except Exception as exc:  # reported to that request only
                alone.append(exc)
        return alone
    out: list[Prediction | Exception] = []
    start = 0
    for r in requests:
        out.append((glob[start:start + len(r)], atomic[start:start + len(r)], extra[start:start + len(r)]))
        start += len(r)
    return out


def born_structures(model: Predictor, structures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Born charges of each structure (model.dipole_derivatives), batched like the predictions;
    a committee's with their std over members (``z_std``)."""
    from model.dipole_derivatives import born_charges

    out: list[dict[str, Any]] = [{} for _ in structures]
    for index in _groups(structures):
        chunk = [structures[i] for i in index]
        coord, box = _arrays(chunk)
        born = born_charges(model, coord, list(chunk[0]["types"]), box)
        std = born.z_std  # a committee's spread over members (its z is their mean)
        for k, (i, z, v) in enumerate(zip(index, born.z, born.sum_rule_violation, strict=True)):
            out[i] = {"z": z.tolist(), "sum_rule_violation": float(v)}
            if std is not None:
                out[i]["z_std"] = std[k].tolist()
    return out


def _inside(root: Path, relative: str) -> Path:
    path = (root / relative).resolve()
    if root.resolve() not in path.parents:
        raise CheckpointError("model path outside the data directory")
    return path


def inspect(root: Path, relative: str) -> dict[str, Any]:
    """Load an uploaded checkpoint (weights only) and describe it. A DeePMD-kit .dp/.yaml
    upload is read (safely: model.dpmodel_file) and stored beside it as our model.pt."""
    path = _inside(root, relative)
    try:
        if is_dpmodel_file(path):
            model = load_dpmodel(path)
            save_checkpoint(path.with_name(MODEL_FILE), model)
            path.unlink()
            ck: dict[str, Any] = {"format": "deepmd-kit-dp"}
        else:
            ck = read_checkpoint(path)
            members = committee_members(ck) if is_committee_checkpoint(ck) else [ck]
            models = [model_from_checkpoint(m) for m in members]
            model = Committee(models).member(0) if len(models) > 1 else models[0]  # members must agree
    except CheckpointError as exc:  # the user knows their file, not our staging path
        raise CheckpointError(shown(str(exc), {path: "the uploaded file"})) from None
    deepmd = ck.get("format") == "deepmd-kit-dp" or is_deepmd_checkpoint(ck)
    summary = {**model_summary(model), "format": "deepmd-kit" if deepmd else "dptensor"}
    if is_committee_checkpoint(ck):
        summary.update(format="dptensor-committee", committee_size=len(ck["members"]))
    source = ck["members"][0] if is_committee_checkpoint(ck) else ck
    metrics = {k: float(v) for k, v in (ck.get("metrics") or source.get("metrics") or {}).items()
               if isinstance(v, int | float)}
    return {"summary": summary, "metrics": metrics}


def export(root: Path, relative_model: str, fmt: str) -> dict[str, Any]:
    """Write (once) the model as DeePMD-kit's serialized model next to it: export/model.<fmt>."""
    path = _inside(root, relative_model)
    out = path.parent / "export" / f"model.{fmt}"
    if not out.is_file() or out.stat().st_mtime < path.stat().st_mtime:
        export_model(load_model(path), out)
    return {"path": str(out.relative_to(root.resolve()))}
