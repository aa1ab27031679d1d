"""Batched inference: frames in chunks under inference_mode, results as float64 numpy."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.keys import PRED_ATOMIC, PRED_ATYPE, PRED_GLOBAL, PRED_KIND, PRED_TYPE_MAP
from model.tensor_model import TensorModel

# Atoms per chunk (frames × atoms); large enough to amortise per-call overhead, small
# enough to bound memory (≈ 64 frames of 192 atoms).
DEFAULT_CHUNK_ATOMS = 12_288


@dataclass
class Prediction:
    global_tensor: np.ndarray  # [nf, 3|9] float64
    atomic_tensor: np.ndarray  # [nf, nat, 3|9] float64, zeros outside sel_type


def chunk_frames(natoms: int, batch_size: int | None) -> int:
    return batch_size if batch_size else max(1, DEFAULT_CHUNK_ATOMS // max(natoms, 1))


def iter_predict(model: TensorModel, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None = None, *,
                 batch_size: int | None = None) -> Iterator[tuple[int, Prediction]]:
    """Yield (first frame index, Prediction) chunk by chunk, so callers can stream results
    to disk without holding every frame's tensors."""
    device = next(model.parameters()).device
    nf, nat = coord.shape[0], coord.shape[1]
    step = chunk_frames(nat, batch_size)
    atype_t = torch.as_tensor(np.asarray(atype), dtype=torch.long, device=device)
    with torch.inference_mode():
        for f0 in range(0, nf, step):
            c = torch.as_tensor(coord[f0:f0 + step], device=device).to(model.dtype)
            b = None if box is None else torch.as_tensor(box[f0:f0 + step], device=device).to(model.dtype)
            out = model(c, atype_t, b)
            yield f0, Prediction(global_tensor=out.global_.double().cpu().numpy(),
                                 atomic_tensor=out.atomic.double().cpu().numpy())


def predict(model: TensorModel, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None = None, *,
            batch_size: int | None = None, progress: Callable[[int, int], None] | None = None) -> Prediction:
    """coord [nf, nat, 3] Å, atype [nat] model type indices, box [nf, 3, 3] or None."""
    coord = np.asarray(coord, dtype=np.float64).reshape(len(coord), -1, 3)
    nf, nat = coord.shape[:2]
    out_g = np.zeros((nf, model.dim))
    out_a = np.zeros((nf, nat, model.dim))
    for f0, chunk in iter_predict(model, coord, atype, box, batch_size=batch_size):
        n = chunk.global_tensor.shape[0]
        out_g[f0:f0 + n] = chunk.global_tensor
        out_a[f0:f0 + n] = chunk.atomic_tensor
        if progress is not None:
            progress(f0 + n, nf)
    return Prediction(global_tensor=out_g, atomic_tensor=out_a)


def save_predictions_npz(path: str | Path, model: TensorModel, coord: np.ndarray, atype: np.ndarray,
                         box: np.ndarray | None = None, *, batch_size: int | None = None,
                         progress: Callable[[int, int], None] | None = None) -> Path:
    """Predict chunk by chunk straight into ``path`` (.npz: global [nf, dim], atomic
    [nf, nat, dim], atype, type_map, kind). The arrays are written to memory-mapped .npy
    files first, so memory stays bounded however many frames there are."""
    path = Path(path)
    nf, nat = coord.shape[0], coord.shape[1]
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".predict-") as tmp:
        g = np.lib.format.open_memmap(Path(tmp) / f"{PRED_GLOBAL}.npy", mode="w+", dtype=np.float64,
                                      shape=(nf, model.dim))
        a = np.lib.format.open_memmap(Path(tmp) / f"{PRED_ATOMIC}.npy", mode="w+", dtype=np.float64,
                                      shape=(nf, nat, model.dim))
        for f0, chunk in iter_predict(model, coord, atype, box, batch_size=batch_size):
            n = chunk.global_tensor.shape[0]
            g[f0:f0 + n] = chunk.global_tensor
            a[f0:f0 + n] = chunk.atomic_tensor
            if progress is not None:
                progress(f0 + n, nf)
        g.flush()
        a.flush()
        del g, a
        extras = {PRED_ATYPE: np.asarray(atype, dtype=np.int64), PRED_TYPE_MAP: np.array(model.type_map),
                  PRED_KIND: np.array(model.kind)}
        for key, value in extras.items():
            np.save(Path(tmp) / f"{key}.npy", value, allow_pickle=False)
        partial = path.with_name(f".{path.name}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in (PRED_GLOBAL, PRED_ATOMIC, *extras):
                zf.write(Path(tmp) / f"{key}.npy", arcname=f"{key}.npy")
        os.replace(partial, path)
    return path
