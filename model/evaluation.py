"""``dp test``-style evaluation of a model on labelled systems."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.data import System, find_systems, load_system
from model.errors import DataError
from model.inference import predict
from model.tensor_model import TensorModel


@dataclass
class SystemScore:
    system: str
    nframes: int
    n_sel: int
    global_rmse: float | None  # √ mean over frames and components
    atomic_rmse: float | None  # √ mean over selected atoms and components
    global_pred: np.ndarray | None = None  # [nf, dim]
    global_label: np.ndarray | None = None
    atomic_pred: np.ndarray | None = None  # [nf, nsel, dim]
    atomic_label: np.ndarray | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "system": self.system,
            "nframes": self.nframes,
            "n_sel": self.n_sel,
            "global": None if self.global_rmse is None else {
                "rmse": self.global_rmse, "rmse_sqrt_n": self.global_rmse / math.sqrt(self.n_sel),
                "rmse_per_atom": self.global_rmse / self.n_sel},
            "atomic": None if self.atomic_rmse is None else {"rmse": self.atomic_rmse},
        }


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def score_system(model: TensorModel, system: System, nframes: int | None = None,
                 batch_size: int | None = None) -> SystemScore:
    n = system.nframes if nframes is None else min(nframes, system.nframes)
    box = None if system.box is None else system.box[:n]
    pred = predict(model, system.coord[:n], system.atype, box, batch_size=batch_size)
    mask = np.isin(system.atype, model.sel_type)
    n_sel = int(mask.sum())
    if n_sel == 0:
        raise DataError(f"has no atom of the model's sel_type {model.sel_type}", path=system.path)
    score = SystemScore(system=system.path, nframes=n, n_sel=n_sel, global_rmse=None, atomic_rmse=None)
    if system.global_label is not None:
        score.global_pred, score.global_label = pred.global_tensor, system.global_label[:n]
        score.global_rmse = _rmse(score.global_pred, score.global_label)
    if system.atomic_label is not None:
        score.atomic_pred = pred.atomic_tensor[:, mask]
        score.atomic_label = system.atomic_label[:n][:, mask]
        score.atomic_rmse = _rmse(score.atomic_pred, score.atomic_label)
    return score


def load_test_systems(model: TensorModel, path: str | Path) -> list[System]:
    root = str(path)
    found = find_systems(root) if Path(root.partition("#")[0]).exists() else []
    if not found:
        raise DataError("no DeePMD system (type.raw with set.*, a folder or an HDF5 group) found", path=root)
    systems = [load_system(f, kind=model.kind, type_map=model.type_map, sel_type=model.sel_type) for f in found]
    if all(s.global_label is None and s.atomic_label is None for s in systems):
        raise DataError(f"no {model.kind} labels to test against", path=str(root))
    return systems


def write_detail(prefix: str | Path, kind: str, scores: list[SystemScore]) -> list[Path]:
    """Data-vs-prediction text files like ``dp test -d``: <prefix>.<kind>.out (global, one
    row per frame) and <prefix>.<kind>.atomic.out (one row per selected atom)."""
    comps = ["x", "y", "z"] if kind == "dipole" else ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]
    header = " ".join([f"data_{c}" for c in comps] + [f"pred_{c}" for c in comps])
    written = []
    glob = [s for s in scores if s.global_pred is not None]
    if glob:
        path = Path(f"{prefix}.{kind}.out")
        rows = np.concatenate([np.hstack([s.global_label, s.global_pred]) for s in glob])  # type: ignore[list-item]
        np.savetxt(path, rows, header=header)
        written.append(path)
    atom = [s for s in scores if s.atomic_pred is not None]
    if atom:
        path = Path(f"{prefix}.{kind}.atomic.out")
        rows = np.concatenate([np.hstack([s.atomic_label.reshape(-1, len(comps)),  # type: ignore[union-attr]
                                          s.atomic_pred.reshape(-1, len(comps))]) for s in atom])  # type: ignore[union-attr]
        np.savetxt(path, rows, header=header)
        written.append(path)
    return written
