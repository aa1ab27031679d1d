"""Predictions files of consecutive frame ranges → one predictions file, in frame order.

A fanned-out prediction job writes one ``save_predictions_npz`` file per chunk of frames;
this joins them into the file one unsplit run writes (same keys, shapes and dtypes). The
per-atom arrays — the big ones — are copied member to member in blocks, never loaded
whole, so memory stays bounded however many frames there are.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from model.errors import DataError
from model.inference import npy_bytes, npy_header
from model.keys import (
    PRED_ATOMIC,
    PRED_ATOMIC_STD,
    PRED_DEVI_ATOMIC_MAX,
    PRED_DEVI_GLOBAL,
    PRED_GLOBAL,
    PRED_GLOBAL_STD,
    PRED_MEMBER_GLOBAL,
)

STREAMED = (PRED_ATOMIC, PRED_ATOMIC_STD)  # [nf, nat, dim]: copied in blocks
BY_FRAME = (PRED_GLOBAL, PRED_GLOBAL_STD, PRED_DEVI_GLOBAL, PRED_DEVI_ATOMIC_MAX)  # frames on axis 0
BY_MEMBER = (PRED_MEMBER_GLOBAL,)  # [K, nf, dim]: frames on axis 1
BLOCK = 1 << 24  # bytes per copy


def _read_header(fh: IO[bytes], key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a C-ordered .npy member; ``fh`` is left at the data."""
    version = np.lib.format.read_magic(fh)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(f".npy format version {version} is not supported", path=key)
    shape, fortran, dtype = readers[version](fh)
    if fortran:
        raise DataError("Fortran-ordered array", path=key)
    return tuple(shape), np.dtype(dtype)


def _header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(f"{key}.npy") as fh:
        return _read_header(fh, key)


def _copy_data(zf: zipfile.ZipFile, key: str, out: IO[bytes]) -> None:
    with zf.open(f"{key}.npy") as fh:
        _read_header(fh, key)
        while block := fh.read(BLOCK):
            out.write(block)


def merge_predictions_npz(parts: Sequence[Path], out: Path) -> int:
    """Join the parts (frame ranges in order) into ``out``, atomically; returns the frames."""
    if not parts:
        raise DataError("no predictions to merge")
    zips = [zipfile.ZipFile(p) for p in parts]
    partial = out.with_name(f".{out.name}.partial")
    try:
        keys = [n[:-4] for n in zips[0].namelist() if n.endswith(".npy")]
        for p, z in zip(parts, zips, strict=True):
            if sorted(n[:-4] for n in z.namelist() if n.endswith(".npy")) != sorted(keys):
                raise DataError(f"holds {sorted(z.namelist())}, the first part {sorted(keys)}", path=str(p))
        frames = [_header(z, PRED_GLOBAL)[0][0] for z in zips]
        nf = sum(frames)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as dest:
            for key in keys:
                if key in STREAMED:
                    shape, dtype = _header(zips[0], key)
                    with dest.open(f"{key}.npy", "w", force_zip64=True) as member:
                        member.write(npy_header((nf, *shape[1:]), dtype))
                        for z in zips:
                            _copy_data(z, key, member)
                    continue
                arrays = [np.load(z.open(f"{key}.npy"), allow_pickle=False) for z in zips]
                if key in BY_FRAME:
                    value = np.concatenate(arrays, axis=0)
                elif key in BY_MEMBER:
                    value = np.concatenate(arrays, axis=1)
                else:  # the same in every part: atype, type_map, kind, committee_size
                    value = arrays[0]
                    if any(not np.array_equal(a, value) for a in arrays[1:]):
                        raise DataError(f"'{key}' differs between the parts")
                dest.writestr(f"{key}.npy", npy_bytes(value))
        os.replace(partial, out)
    finally:
        for z in zips:
            z.close()
        partial.unlink(missing_ok=True)
    return nf
