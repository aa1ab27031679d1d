"""Spectra from reference tensors: a trajectory's own dipole / polarizability labels (DFT-MD),
no model — so the reference spectrum and the model's get identical processing.

Sources: a DeePMD system folder (read by model.data.load_system: ``dipole.npy`` /
``polarizability.npy``, or the atomic labels summed), or an ``.npz`` time series with
``dipole`` [nf, 3] (e·Å) or ``polarizability`` [nf, 9] (Å³) and optionally ``box`` [nf, 9]
or [nf, 3, 3] (Å) or ``volume_a3`` (a number).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from model.errors import ConfigError, DataError

if TYPE_CHECKING:
    from model.spectrum_options import Spectrum
    from model.spectrum_pipeline import SpectrumRequest

LABEL_KIND = {"ir": "dipole", "raman": "polar", "dielectric": "dipole"}
NPZ_KEYS = {"dipole": ("dipole",), "polar": ("polarizability", "polar")}


@dataclass
class LabelSeries:
    source: str
    values: NDArray[np.float64]  # [nf, 3 | 9]
    volume_a3: float | None  # mean cell volume, when the source has a periodic cell
    natoms: int | None


def _frames(index: str, n: int) -> slice:
    """ASE-style 'start:stop:step' (or '' / ':' for all)."""
    parts = index.split(":") if index.strip() not in ("", ":") else []
    try:
        nums = [int(p) if p.strip() else None for p in parts]
        if len(nums) > 3 or (len(nums) == 1 and nums[0] is not None):
            raise ValueError
    except ValueError:
        raise ConfigError(f"{index!r} is not a frame slice start:stop:step", path="index") from None
    return slice(*nums) if nums else slice(None)


def _from_npz(path: Path, label: str) -> LabelSeries:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"not a readable .npz ({exc.__class__.__name__})", path=str(path)) from None
    with data:
        key = next((k for k in NPZ_KEYS[label] if k in data.files), None)
        if key is None:
            raise DataError(f"has no {' or '.join(NPZ_KEYS[label])} array (it has {data.files})", path=str(path))
        dim = 3 if label == "dipole" else 9
        values = np.asarray(data[key], dtype=np.float64)
        if values.ndim < 2 or values.reshape(values.shape[0], -1).shape[1] != dim:
            raise DataError(f"{key}: shape {values.shape}, expected [nframes, {dim}]", path=str(path))
        values = values.reshape(values.shape[0], dim)
        volume = None
        if "box" in data.files:
            box = np.asarray(data["box"], dtype=np.float64).reshape(-1, 3, 3)
            volume = float(np.abs(np.linalg.det(box)).mean())
        elif "volume_a3" in data.files:
            volume = float(data["volume_a3"])
    if not np.isfinite(values).all():
        raise DataError(f"{key}: NaN/inf in frame {int(np.argmax(~np.isfinite(values).all(axis=1)))}", path=str(path))
    return LabelSeries(str(path), values, volume, None)


def _from_system(path: Path, label: str) -> LabelSeries:
    from model.data import load_system

    system = load_system(path, kind=label)
    values = system.global_label
    if values is None and system.atomic_label is not None:
        values = system.atomic_label.sum(axis=1)  # atomic labels: their sum is the frame's tensor
    if values is None:
        name = "dipole.npy" if label == "dipole" else "polarizability.npy"
        raise DataError(f"has no {name} (nor atomic labels) in its set.* folders", path=str(path))
    volume = None if system.box is None else float(np.abs(np.linalg.det(system.box)).mean())
    return LabelSeries(str(path), values, volume, system.natoms)


def read_labels(path: str | Path, kind: str, index: str = ":") -> LabelSeries:
    """The label time series a spectrum of ``kind`` needs, from a system folder or an .npz."""
    if kind not in LABEL_KIND:
        raise ConfigError(f"spectra from labels are {sorted(LABEL_KIND)}, not {kind!r}", path="kind")
    p = Path(path)
    label = LABEL_KIND[kind]
    if p.is_dir():
        out = _from_system(p, label)
    elif p.suffix == ".npz" and p.is_file():
        out = _from_npz(p, label)
    else:
        raise DataError("labels come from a DeePMD system folder or an .npz time series", path=str(p))
    out.values = out.values[_frames(index, out.values.shape[0])]
    return out


def run_labels_spectrum(sources: Sequence[str | Path], request: SpectrumRequest) -> Spectrum:
    """The spectrum of the sources' own tensor labels (model.spectrum_labels), no model: the
    same transform and metadata as a model's spectrum, so the two compare like for like."""
    from model.spectrum_pipeline import check_plan, transform

    labels = [read_labels(s, request.kind, request.index) for s in sources]
    for item in labels:
        check_plan(request, item.values.shape[0])
    volumes = [item.volume_a3 for item in labels]
    volume: float | None = None
    if isinstance(request.volume_a3, int | float):
        volume = float(request.volume_a3)
    elif all(v is not None for v in volumes):
        volume = float(np.mean([v for v in volumes if v is not None]))
    elif request.volume_a3 == "cell":
        raise ConfigError("'cell' needs labels with a periodic cell (box.npy or an npz 'box')",
                          path="volume_a3")
    meta = {"source": "reference labels (no model)", "sources": [Path(s.source).name for s in labels],
            "label": "dipole" if request.kind != "raman" else "polarizability", "frame_index": request.index}
    return transform(request, [item.values for item in labels], meta, volume)
