"""A spectrum over several trajectories in two steps: each trajectory's predicted time
series on its own (``predict_part``, one per trajectory — the unit a service job fans out
over its workers), then one spectrum of all of them (``combine``). ``run_spectrum`` is the
two in a row (``dptensor spectrum -t a -t b …``), so a fanned-out job and the command line
run the same functions on the same series.

Several trajectories are pooled as model.spectra does (autocorrelation sums and pair
counts added, docs/spectra.md): for trajectories of equal length that is exactly the mean
over trajectories of each one's spectrum. A part keeps what the spectrum needs besides the
series (atoms, elements, periodicity, cell volumes), so ``combine`` never reads a
trajectory again; parts go to disk as .npz (``save`` / ``load``, no pickle).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from model.errors import ConfigError, DataError
from model.spectra import Spectrum
from model.spectrum_pipeline import (
    IR_HARMONIC_NOTE,
    Progress,
    SpectrumRequest,
    check_elements,
    check_plan,
    device_batch_size,
    load_frames,
    predict_member_series,
    predict_series,
    transform,
)
from model.system import System

if TYPE_CHECKING:
    from model.committee import Predictor as TensorModel


@dataclass
class TrajectoryPart:
    """One trajectory's predicted series and what the spectrum needs to know about it."""

    name: str  # as the user knows it (the metadata's ``sources``)
    natoms: int
    symbols: list[str]
    pbc: tuple[bool, bool, bool]
    volumes: NDArray[np.float64] | None  # [nf] Å³, None without a periodic cell
    series: NDArray[np.float64]  # [nf, 3] dipoles or [nf, 9] polarizabilities (a committee: the members' mean)
    member_series: NDArray[np.float64] | None  # [K, nf, dim] each committee member's series
    predict_s: float  # wall time of the predictions
    batch_size: int | None  # frames per chunk asked for (None: the library's atom budget)

    @property
    def nframes(self) -> int:
        return int(self.series.shape[0])

    def save(self, path: Path) -> None:
        """Atomically (a reader never sees half a part): an .npz of arrays plus a JSON header."""
        head = {"name": self.name, "natoms": self.natoms, "symbols": self.symbols, "pbc": list(self.pbc),
                "predict_s": self.predict_s, "batch_size": self.batch_size}
        arrays: dict[str, Any] = {"head": np.array(json.dumps(head)), "series": self.series}
        if self.volumes is not None:
            arrays["volumes"] = self.volumes
        if self.member_series is not None:
            arrays["member_series"] = self.member_series
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> TrajectoryPart:
        with np.load(path, allow_pickle=False) as z:
            head = json.loads(str(z["head"]))
            return cls(name=head["name"], natoms=int(head["natoms"]), symbols=list(head["symbols"]),
                       pbc=(bool(head["pbc"][0]), bool(head["pbc"][1]), bool(head["pbc"][2])),
                       volumes=z["volumes"] if "volumes" in z.files else None, series=z["series"],
                       member_series=z["member_series"] if "member_series" in z.files else None,
                       predict_s=float(head["predict_s"]), batch_size=head["batch_size"])


@dataclass
class SpectrumResult:
    spectrum: Spectrum
    series: list[NDArray[np.float64]]  # per trajectory: the M(t) / α(t) that was transformed
    frames: int
    atoms: int
    predict_s: float  # wall time of the predictions (reading excluded), summed over trajectories
    batch_size: int  # frames per chunk
    member_spectra: list[Spectrum] | None = None  # a committee's: each member's spectrum

    @property
    def frames_per_s(self) -> float:
        return self.frames / max(self.predict_s, 1e-9)


def _is_committee(model: TensorModel) -> bool:
    from model.committee import Committee

    return isinstance(model, Committee)


def predict_part(model: TensorModel, source: str | Path, request: SpectrumRequest, *, name: str | None = None,
                 predictions: str | Path | None = None, batch_size: int | None = None,
                 progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
                 on_loaded: Callable[[System], None] | None = None, natoms: int | None = None) -> TrajectoryPart:
    """Read one trajectory and predict its series in chunks (``batch_size`` None: sized for
    the model's device); with ``predictions`` the per-frame tensors go to that .npz too.
    ``natoms``: the atom count the other trajectories have (checked before predicting)."""
    traj = load_frames(source, request)
    if natoms is not None and traj.natoms != natoms:
        raise DataError(f"{traj.natoms} atoms, the first trajectory has {natoms}", path=str(source))
    check_plan(request, traj.nframes)
    if on_loaded is not None:
        on_loaded(traj)
    if batch_size is None:
        batch_size = device_batch_size(model, traj, check_elements(request, traj.symbols, model.type_map))
    t0 = time.monotonic()
    members = None
    if _is_committee(model):
        members = np.stack(predict_member_series(model, traj, request, predictions=predictions,
                                                 batch_size=batch_size, progress=progress,
                                                 should_stop=should_stop))
        series = np.mean(members, axis=0)
    else:
        series = predict_series(model, traj, request, predictions=predictions, batch_size=batch_size,
                                progress=progress, should_stop=should_stop)
    seconds = time.monotonic() - t0
    volumes = traj.volumes_a3() if any(traj.pbc) else None
    return TrajectoryPart(name=name or Path(traj.path).name, natoms=traj.natoms, symbols=list(traj.symbols),
                          pbc=(bool(traj.pbc[0]), bool(traj.pbc[1]), bool(traj.pbc[2])), volumes=volumes,
                          series=series, member_series=members, predict_s=seconds, batch_size=batch_size)


def spectrum_metadata(request: SpectrumRequest, model: TensorModel, parts: Sequence[TrajectoryPart],
                      model_id: str | None = None) -> dict[str, Any]:
    """What the spectrum module does not know: the model, the source and how M(t) was formed."""
    first = parts[0]
    elements = {s: first.symbols.count(s) for s in dict.fromkeys(first.symbols)}
    meta: dict[str, Any] = {
        "model_id": model_id, "model_kind": model.kind, "type_map": list(model.type_map),
        "sel_type": list(model.sel_type), "sources": [p.name for p in parts],
        "n_atoms": first.natoms, "elements": elements, "pbc": list(first.pbc),
        "frame_index": request.index,
    }
    if request.kind == "ir":
        meta["dipole_mode"] = request.dipole_mode
        meta["dipole"] = ("the model's global dipole (sum of atomic dipoles)" if request.dipole_mode == "global"
                          else "M = Σ_a Z_a r_a + q_W Σ_sel (r_i + Δ_i), unwrapped positions, Δ_i predicted")
        if request.dipole_mode == "wannier":
            meta["ionic_charges"], meta["q_w"] = request.ionic_charges, request.q_w
        if request.spectrum.correction in ("harmonic", "none"):
            meta["correction_note"] = IR_HARMONIC_NOTE
    return meta


def _volume(request: SpectrumRequest, parts: Sequence[TrajectoryPart]) -> float | None:
    """The volume for absolute units: given, or the mean cell volume ('cell', or by default
    when every trajectory is periodic with a cell)."""
    if request.volume_a3 not in (None, "cell"):
        return float(request.volume_a3)
    volumes = [p.volumes for p in parts]
    if any(v is None for v in volumes):
        return None  # 'cell' was checked by load_frames
    return float(np.mean(np.concatenate([v for v in volumes if v is not None])))


def check_same_atoms(parts: Sequence[TrajectoryPart]) -> None:
    for part in parts[1:]:
        if part.natoms != parts[0].natoms:
            raise DataError(f"{part.natoms} atoms, the first trajectory ({parts[0].name}) has {parts[0].natoms}",
                            path=part.name)


def combine(request: SpectrumRequest, model: TensorModel, parts: Sequence[TrajectoryPart],
            model_id: str | None = None) -> SpectrumResult:
    """One spectrum of the parts' series (in the order given), pooled over trajectories; a
    committee's is the mean of its members' spectra with their spread."""
    from model.inference import chunk_frames

    if not parts:
        raise ConfigError("no trajectories to average", path="trajectories")
    check_same_atoms(parts)
    meta = spectrum_metadata(request, model, parts, model_id)
    volume = _volume(request, parts)
    frames, atoms = sum(p.nframes for p in parts), parts[0].natoms
    seconds = sum(p.predict_s for p in parts)
    series = [p.series for p in parts]
    members = [p.member_series for p in parts]
    if not any(m is not None for m in members):
        spectrum = transform(request, series, meta, volume)
        return SpectrumResult(spectrum, series, frames, atoms, seconds, chunk_frames(atoms, parts[0].batch_size))
    from model.committee_spectra import committee_spectrum

    stacked = [m for m in members if m is not None]
    if len(stacked) != len(parts):
        raise ConfigError("every part of a committee spectrum needs its members' series", path="trajectories")
    size = stacked[0].shape[0]
    spectra = [transform(request, [m[k] for m in stacked], meta, volume) for k in range(size)]
    return SpectrumResult(committee_spectrum(spectra), series, frames, atoms, seconds,
                          chunk_frames(atoms, parts[0].batch_size, size), member_spectra=spectra)


def run_spectrum(model: TensorModel, sources: Sequence[str | Path], request: SpectrumRequest, *,
                 model_id: str | None = None, predictions: Sequence[str | Path | None] | None = None,
                 batch_size: int | None = None, progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_loaded: Callable[[System], None] | None = None) -> SpectrumResult:
    """Read each trajectory, predict its series in chunks, pool them into one spectrum.
    ``batch_size`` None: sized for the model's device on the first trajectory."""
    outputs = list(predictions) if predictions is not None else [None] * len(sources)
    if len(outputs) != len(sources):
        raise ConfigError(f"{len(outputs)} predictions files for {len(sources)} trajectories")
    parts: list[TrajectoryPart] = []
    for source, out in zip(sources, outputs, strict=True):
        part = predict_part(model, source, request, predictions=out, batch_size=batch_size, progress=progress,
                            should_stop=should_stop, on_loaded=on_loaded,
                            natoms=parts[0].natoms if parts else None)
        batch_size = part.batch_size
        parts.append(part)
    return combine(request, model, parts, model_id)
