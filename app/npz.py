"""The compact binary form of a synchronous prediction: numpy's .npz (no pickles) instead
of nested JSON lists — for frames of one system, the way trajectories are stored.

Request arrays: ``positions`` [n_frames, n_atoms, 3] (or [n_atoms, 3]) in Å; ``types``
[n_atoms] model type indices or ``symbols`` [n_atoms] element names; optional ``cell``
[n_frames, 3, 3] (or [3, 3], the same for every frame). Response arrays: ``global_tensor``
[n_frames, n_components] and ``atomic_tensor`` [n_frames, n_selected_atoms, n_components].
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np
from pydantic import ValidationError

from app.errors import Unprocessable
from app.schemas import PredictRequest

MEDIA_TYPE = "application/x-npz"


def _array(arrays: Any, key: str, ndims: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(arrays[key])
    if a.ndim not in ndims:
        raise Unprocessable(f"{key}: {a.ndim} dimensions, expected {' or '.join(map(str, ndims))}",
                            [(key, f"shape {list(a.shape)}")])
    return a


def read_request(body: bytes) -> PredictRequest:
    """An npz body as the same PredictRequest a JSON body gives (same checks)."""
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as arrays:
            keys = set(arrays.files)
            if "positions" not in keys or ("types" in keys) == ("symbols" in keys):
                msg = f"needs 'positions' and one of 'types' / 'symbols'; it has {sorted(keys)}"
                raise Unprocessable(f"npz body: {msg}", [("body", msg)])
            pos = _array(arrays, "positions", (2, 3)).astype(np.float64)
            atoms_key = "types" if "types" in keys else "symbols"
            atoms = _array(arrays, atoms_key, (1,))
            cell = _array(arrays, "cell", (2, 3)).astype(np.float64) if "cell" in keys else None
    except (ValueError, OSError, zipfile.BadZipFile, KeyError) as exc:
        raise Unprocessable(f"body: not a readable .npz archive without pickles ({exc})",
                            [("body", str(exc))]) from None
    frames = pos[None] if pos.ndim == 2 else pos
    if cell is not None and cell.ndim == 2:
        cell = np.broadcast_to(cell, (len(frames), *cell.shape))
    if cell is not None and len(cell) != len(frames):
        raise Unprocessable(f"cell: {len(cell)} cells for {len(frames)} frames", [("cell", "one per frame")])
    listed = atoms.tolist()
    structures = [{atoms_key: listed, "positions": f.tolist(), **({"cell": cell[i].tolist()} if cell is not None
                                                                  else {})} for i, f in enumerate(frames)]
    try:
        return PredictRequest.model_validate({"structures": structures})
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()[:5]]
        raise Unprocessable("invalid npz request: " + "; ".join(f"{loc}: {m}" for loc, m in problems),
                            problems) from None


def write_response(answer: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    np.savez(out, global_tensor=np.asarray(answer["global"], dtype=np.float64),
             atomic_tensor=np.asarray(answer["atomic"], dtype=np.float64))
    return out.getvalue()
