"""Batched inference: frames in chunks under inference_mode, results as float64 numpy."""

from __future__ import annotations

import io
import os
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.committee import Committee, CommitteeOutput, Predictor, deviation
from model.keys import (
    PRED_ATOMIC,
    PRED_ATOMIC_STD,
    PRED_ATYPE,
    PRED_COMMITTEE_SIZE,
    PRED_DEVI_ATOMIC_MAX,
    PRED_DEVI_GLOBAL,
    PRED_GLOBAL,
    PRED_GLOBAL_STD,
    PRED_KIND,
    PRED_MEMBER_GLOBAL,
    PRED_TYPE_MAP,
)

# Atoms per chunk (frames × atoms); large enough to amortise per-call overhead, small
# enough to bound memory (≈ 64 frames of 192 atoms).
DEFAULT_CHUNK_ATOMS = 12_288


@dataclass
class Prediction:
    """For a committee, ``global_tensor`` / ``atomic_tensor`` are the members' mean."""

    global_tensor: np.ndarray  # [nf, 3|9] float64
    atomic_tensor: np.ndarray  # [nf, nat, 3|9] float64, zeros outside sel_type
    member_global: np.ndarray | None = None  # [K, nf, 3|9] committee members' own tensors
    member_atomic: np.ndarray | None = None  # [K, nf, nat, 3|9]

    def member(self, k: int) -> Prediction:
        """Committee member ``k``'s own prediction."""
        assert self.member_global is not None and self.member_atomic is not None
        return Prediction(global_tensor=self.member_global[k], atomic_tensor=self.member_atomic[k])


def committee_size(model: Predictor) -> int:
    return model.size if isinstance(model, Committee) else 1


def chunk_frames(natoms: int, batch_size: int | None, members: int = 1) -> int:
    """Frames per chunk; a committee's batched forward holds K members' activations."""
    return batch_size if batch_size else max(1, DEFAULT_CHUNK_ATOMS // max(natoms * members, 1))


def _predict_chunk(model: Predictor, coord: np.ndarray, atype: Tensor, box: np.ndarray | None) -> Prediction:
    device = atype.device
    with torch.inference_mode():
        # a copy per chunk: the inputs may be read-only memory maps of huge trajectories
        c = torch.tensor(np.asarray(coord), dtype=model.dtype, device=device)
        b = None if box is None else torch.tensor(np.asarray(box), dtype=model.dtype, device=device)
        out = model(c, atype, b, differentiable=False)
        pred = Prediction(global_tensor=out.global_.double().cpu().numpy(),
                          atomic_tensor=out.atomic.double().cpu().numpy())
        if isinstance(out, CommitteeOutput):
            pred.member_global = out.member_global.double().cpu().numpy()
            pred.member_atomic = out.member_atomic.double().cpu().numpy()
        return pred


def iter_predict(model: Predictor, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None = None, *,
                 batch_size: int | None = None, workers: int | None = None) -> Iterator[tuple[int, Prediction]]:
    """Yield (first frame index, Prediction) chunk by chunk, in order, so callers can
    stream results to disk without holding every frame's tensors.

    On CPU, chunks run concurrently on ``workers`` threads (default: torch's intra-op
    thread count), each single-threaded: the descriptor is many small, memory-bound ops
    that parallelise far better across chunks than inside one. At most workers + 1
    chunks are in flight."""
    device = next(model.parameters()).device
    nf, nat = coord.shape[0], coord.shape[1]
    threads = (workers if workers is not None else torch.get_num_threads()) if device.type == "cpu" else 1
    step = chunk_frames(nat, batch_size, committee_size(model))
    if batch_size is None and threads > 1 and nf > step:
        # as many chunks as a multiple of the threads, so that none idles at the end
        rounds = -(-nf // (step * threads))
        step = -(-nf // (rounds * threads))
    atype_t = torch.as_tensor(np.asarray(atype), dtype=torch.long, device=device)
    starts = list(range(0, nf, step))
    threads = min(threads, len(starts))

    def run(f0: int) -> Prediction:
        return _predict_chunk(model, coord[f0:f0 + step], atype_t, None if box is None else box[f0:f0 + step])

    if threads <= 1:
        for f0 in starts:
            yield f0, run(f0)
        return
    intra = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(threads, thread_name_prefix="dptensor-predict") as pool:
            pending: deque[tuple[int, Future[Prediction]]] = deque()
            for f0 in starts:
                pending.append((f0, pool.submit(run, f0)))
                if len(pending) > threads:
                    first, future = pending.popleft()
                    yield first, future.result()
            while pending:
                first, future = pending.popleft()
                yield first, future.result()
    finally:
        torch.set_num_threads(intra)


def predict(model: Predictor, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None = None, *,
            batch_size: int | None = None, progress: Callable[[int, int], None] | None = None) -> Prediction:
    """coord [nf, nat, 3] Å, atype [nat] model type indices, box [nf, 3, 3] or None.
    A committee also fills ``member_global`` / ``member_atomic``."""
    coord = np.asarray(coord, dtype=np.float64).reshape(len(coord), -1, 3)
    nf, nat = coord.shape[:2]
    k = committee_size(model) if isinstance(model, Committee) else 0
    out = Prediction(global_tensor=np.zeros((nf, model.dim)), atomic_tensor=np.zeros((nf, nat, model.dim)),
                     member_global=np.zeros((k, nf, model.dim)) if k else None,
                     member_atomic=np.zeros((k, nf, nat, model.dim)) if k else None)
    for f0, chunk in iter_predict(model, coord, atype, box, batch_size=batch_size):
        n = chunk.global_tensor.shape[0]
        out.global_tensor[f0:f0 + n] = chunk.global_tensor
        out.atomic_tensor[f0:f0 + n] = chunk.atomic_tensor
        if out.member_global is not None and out.member_atomic is not None:
            assert chunk.member_global is not None and chunk.member_atomic is not None
            out.member_global[:, f0:f0 + n] = chunk.member_global
            out.member_atomic[:, f0:f0 + n] = chunk.member_atomic
        if progress is not None:
            progress(f0 + n, nf)
    return out


def npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The .npy header for a C-ordered array, so the data can follow in chunks."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class _CommitteeColumns:
    """The committee's extra arrays, gathered chunk by chunk: the small per-frame ones in
    memory, the per-atom std streamed to a side file (a zip takes one member at a time)."""

    def __init__(self, size: int, nf: int, nat: int, dim: int, side: Path) -> None:
        self.size = size
        self.global_std = np.zeros((nf, dim))
        self.devi_global = np.zeros(nf)
        self.devi_atomic_max = np.zeros(nf)
        self.member_global = np.zeros((size, nf, dim))
        self.side = side
        self.file = open(side, "wb")  # noqa: SIM115 - closed in finish()
        self.file.write(npy_header((nf, nat, dim), np.dtype(np.float64)))

    def add(self, f0: int, chunk: Prediction) -> None:
        assert chunk.member_global is not None and chunk.member_atomic is not None
        n = chunk.global_tensor.shape[0]
        dev = deviation(chunk.member_global, chunk.member_atomic)
        self.global_std[f0:f0 + n] = dev.global_std
        self.devi_global[f0:f0 + n] = dev.devi_global
        self.devi_atomic_max[f0:f0 + n] = dev.devi_atomic_max
        self.member_global[:, f0:f0 + n] = chunk.member_global
        self.file.write(np.ascontiguousarray(dev.atomic_std, dtype=np.float64).tobytes())

    def finish(self, zf: zipfile.ZipFile) -> None:
        self.file.close()
        zf.write(self.side, f"{PRED_ATOMIC_STD}.npy")
        extras = {PRED_GLOBAL_STD: self.global_std, PRED_DEVI_GLOBAL: self.devi_global,
                  PRED_DEVI_ATOMIC_MAX: self.devi_atomic_max, PRED_MEMBER_GLOBAL: self.member_global,
                  PRED_COMMITTEE_SIZE: np.array(self.size)}
        for key, value in extras.items():
            zf.writestr(f"{key}.npy", npy_bytes(value))

    def close(self) -> None:
        self.file.close()
        self.side.unlink(missing_ok=True)


def save_predictions_npz(path: str | Path, model: Predictor, coord: np.ndarray, atype: np.ndarray,
                         box: np.ndarray | None = None, *, batch_size: int | None = None,
                         progress: Callable[[int, int], None] | None = None,
                         should_stop: Callable[[], bool] | None = None,
                         on_chunk: Callable[[int, Prediction], None] | None = None) -> Path:
    """Predict chunk by chunk straight into ``path`` (.npz: global [nf, dim], atomic
    [nf, nat, dim], atype, type_map, kind). The atomic array — the big one — streams
    into its zip member as chunks arrive (``coord`` may be a memory-mapped array), so
    memory stays bounded however many frames there are; only the global tensors (nf ×
    dim) are held. The file appears atomically, complete or not at all. ``should_stop``
    is polled between chunks; a stop raises InterruptedError and leaves no file.
    ``on_chunk(first_frame, chunk)`` sees every chunk as it is written (e.g. to derive a
    time series from the atomic tensors without reading them back).

    A committee writes its mean under ``global`` / ``atomic`` (existing readers keep
    working) and adds the std per component, the per-frame deviations and each member's
    global tensor beside them (keys in ``model.keys``)."""
    path = Path(path)
    nf, nat = coord.shape[0], coord.shape[1]
    glob = np.zeros((nf, model.dim))
    partial = path.with_name(f".{path.name}.partial")
    extra = (_CommitteeColumns(model.size, nf, nat, model.dim, path.with_name(f".{path.name}.std.partial"))
             if isinstance(model, Committee) else None)
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open(f"{PRED_ATOMIC}.npy", "w", force_zip64=True) as member:
                member.write(npy_header((nf, nat, model.dim), np.dtype(np.float64)))
                for f0, chunk in iter_predict(model, coord, atype, box, batch_size=batch_size):
                    n = chunk.global_tensor.shape[0]
                    glob[f0:f0 + n] = chunk.global_tensor
                    if extra is not None:
                        extra.add(f0, chunk)
                    if on_chunk is not None:
                        on_chunk(f0, chunk)
                    member.write(np.ascontiguousarray(chunk.atomic_tensor, dtype=np.float64).tobytes())
                    if progress is not None:
                        progress(f0 + n, nf)
                    if should_stop is not None and f0 + n < nf and should_stop():
                        raise InterruptedError("prediction stopped")
            extras = {PRED_GLOBAL: glob, PRED_ATYPE: np.asarray(atype, dtype=np.int64),
                      PRED_TYPE_MAP: np.array(model.type_map), PRED_KIND: np.array(model.kind)}
            for key, value in extras.items():
                zf.writestr(f"{key}.npy", npy_bytes(value))
            if extra is not None:
                extra.finish(zf)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
        if extra is not None:
            extra.close()
    return path
