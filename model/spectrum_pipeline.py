"""System → streamed predictions → IR / Raman spectrum: the one code path behind
``dptensor spectrum`` and the service's ``dptensor.spectrum`` jobs.

Importing this module does not import torch (the web api validates requests with
``parse_request`` / ``load_frames``); the prediction functions import it when called.

Memory: the trajectory's coordinates are held on the host (nf × nat × 3 float64), frames
go to the device in chunks (``device_batch_size``), every chunk's atomic tensors are
written to the predictions file as they arrive (``save_predictions_npz``) or dropped, and
only the time series that is transformed (nf × 3 or nf × 9) is kept.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
from numpy.typing import NDArray

from model.errors import ConfigError, DataError
from model.keys import TENSOR_DIM
from model.spectra import Spectrum, SpectrumOptions, ir_spectrum, raman_spectrum
from model.spectrum_options import normalise_spellings
from model.system import System
from model.trajectory import (
    map_symbols_to_types,
    read_trajectory,
    unwrap_positions,
    wannier_total_dipole,
)

if TYPE_CHECKING:
    from model.committee import Predictor as TensorModel  # a model or a committee
    from model.inference import Prediction

KINDS = {"ir": "dipole", "raman": "polar", "dielectric": "dipole", "vdos": ""}  # kind -> model kind it needs
DIPOLE_MODES = ("global", "wannier")
# request options that are not SpectrumOptions fields
EXTRA_OPTIONS = ("dipole_mode", "ionic_charges", "q_w", "volume_a3", "format", "index",
                 "lammps_type_symbols", "max_frames")
IR_ONLY = ("ionic_charges", "q_w", "volume_a3")
IR_HARMONIC_NOTE = ("with the harmonic correction the quantum IR absorption equals the classical "
                    "ω²·FT⟨M(0)·M(t)⟩ exactly: Q_harm cancels the quantum absorption factor "
                    "(1-e^{-βħω})/(βħω)")
# CUDA chunks: this share of the free memory, at most this many frames, and at most this
# many bytes of atomic results per chunk on the host
GPU_MEMORY_SHARE = 0.5
MAX_CHUNK_FRAMES = 4096
MAX_CHUNK_HOST_BYTES = 256 << 20

Progress = Callable[[int, int], None]


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SpectrumRequest:
    """What to compute: the spectrum options plus how to read frames and form M(t)."""

    kind: str  # ir | raman
    spectrum: SpectrumOptions
    dipole_mode: str = "global"  # global: the model's global tensor; wannier: Σ Z r + q_W Σ_sel (r + Δ)
    ionic_charges: dict[str, float] | None = None  # wannier: Z per element symbol
    q_w: float | None = None  # wannier: charge of one selected atom's Wannier centroid
    volume_a3: float | str | None = None  # IR absolute units: Å³, or "cell" (mean cell volume)
    format: str | None = None
    index: str = ":"
    lammps_type_symbols: dict[int, str] | None = None
    max_frames: int | None = None

    @property
    def model_kind(self) -> str:
        return KINDS[self.kind]

    def options_json(self) -> dict[str, Any]:
        """Every option but dt_fs, as JSON (what a job stores; parse_request reads it back)."""
        out = {k: v for k, v in self.spectrum.to_json().items() if k != "dt_fs"}
        for key in EXTRA_OPTIONS:
            value = getattr(self, key)
            if key == "lammps_type_symbols" and value is not None:
                value = {str(k): v for k, v in value.items()}
            if value is not None and not (key == "index" and value == ":"):
                out[key] = value
        return out


def parse_request(kind: str, dt_fs: Any, options: Mapping[str, Any] | None = None, *,
                  prefix: str = "options.") -> SpectrumRequest:
    """Validate a request; ConfigError paths are ``kind``, ``dt_fs`` or ``<prefix><option>``."""
    if kind not in KINDS:
        raise ConfigError(f"must be one of {sorted(KINDS)}, got {kind!r}", path="kind")
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError("must be a JSON object of options", path=prefix.rstrip("."))
    opts = dict(options or {})
    if "dt_fs" in opts:
        raise ConfigError("give the time step once, as dt_fs itself", path=f"{prefix}dt_fs")
    try:
        opts = normalise_spellings(opts)
    except ConfigError as exc:
        raise ConfigError.from_problems([(f"{prefix}{p}", m) for p, m in exc.problems]) from None
    extra = {k: opts.pop(k) for k in EXTRA_OPTIONS if k in opts}
    try:
        spectrum = SpectrumOptions.from_mapping({**opts, "dt_fs": dt_fs})
    except ConfigError as exc:
        problems = [(p if p == "dt_fs" else f"{prefix}{p}" if p else prefix.rstrip("."), m)
                    for p, m in exc.problems]
        raise ConfigError.from_problems(problems) from None
    except TypeError as exc:  # a value of the wrong type that the dataclass chokes on
        raise ConfigError(str(exc), path=prefix.rstrip(".")) from None
    return SpectrumRequest(kind=kind, spectrum=spectrum, **_extras(kind, extra, prefix))


def _extras(kind: str, extra: dict[str, Any], prefix: str) -> dict[str, Any]:
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(msg, path=prefix + key)

    out: dict[str, Any] = {}
    mode = extra.get("dipole_mode", "global")
    if mode not in DIPOLE_MODES:
        raise bad("dipole_mode", f"must be one of {DIPOLE_MODES}, got {mode!r}")
    if kind == "raman":
        for key in (*IR_ONLY, *(["dipole_mode"] if mode != "global" else [])):
            if extra.get(key) is not None:
                raise bad(key, "is an IR option (a Raman spectrum uses the polarizability as predicted)")
    out["dipole_mode"] = mode
    charges, q_w = extra.get("ionic_charges"), extra.get("q_w")
    if mode == "wannier":
        if not isinstance(charges, Mapping) or not charges:
            raise bad("ionic_charges", "dipole_mode 'wannier' needs the ionic charge of each element, "
                                       'e.g. {"O": 6, "H": 1}')
        wrong = [k for k, v in charges.items() if not isinstance(k, str) or not _number(v)]
        if wrong:
            raise bad("ionic_charges", f"charges must be finite numbers by element symbol; check {wrong}")
        if not _number(q_w):
            raise bad("q_w", f"dipole_mode 'wannier' needs q_w, the charge of a Wannier centroid "
                             f"(water: -8), got {q_w!r}")
        out["ionic_charges"] = {k: float(v) for k, v in charges.items()}
        out["q_w"] = float(q_w)
    else:
        for key, value in (("ionic_charges", charges), ("q_w", q_w)):
            if value is not None:
                raise bad(key, "is used only with dipole_mode 'wannier'")
    volume = extra.get("volume_a3")
    if volume is not None and volume != "cell" and not (_number(volume) and volume > 0):
        raise bad("volume_a3", f"must be a volume in Å³ > 0 or 'cell', got {volume!r}")
    out["volume_a3"] = float(volume) if _number(volume) else volume
    for key in ("format", "index"):
        value = extra.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise bad(key, f"must be a non-empty string, got {value!r}")
        if value is not None:
            out[key] = value.strip()
    frames = extra.get("max_frames")
    if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool) or frames < 1):
        raise bad("max_frames", f"must be a positive integer, got {frames!r}")
    out["max_frames"] = frames
    symbols = extra.get("lammps_type_symbols")
    if symbols is not None:
        try:
            if not isinstance(symbols, Mapping) or not all(isinstance(v, str) for v in symbols.values()):
                raise ValueError
            out["lammps_type_symbols"] = {int(k): v for k, v in symbols.items()}
        except (TypeError, ValueError):
            raise bad("lammps_type_symbols", 'must map LAMMPS atom types to elements, e.g. {"1": "O", "2": "H"}'
                      ) from None
    return out


def check_model_kind(request: SpectrumRequest, model_kind: str, model_name: str = "the model") -> None:
    if model_kind != request.model_kind:
        what = {"dipole": "dipoles", "polar": "polarizabilities"}.get(model_kind, model_kind)
        raise ConfigError(f"{request.kind.upper()} needs a {request.model_kind} model; {model_name} "
                          f"predicts {what}", path="kind")


def check_elements(request: SpectrumRequest, symbols: Sequence[str], type_map: Sequence[str],
                   prefix: str = "options.") -> NDArray[np.int64]:
    """Model types of the atoms (DataError for unknown elements); wannier charges for all."""
    atype = map_symbols_to_types(symbols, type_map)
    if request.dipole_mode == "wannier":
        assert request.ionic_charges is not None
        missing = sorted(set(symbols) - set(request.ionic_charges))
        if missing:
            raise ConfigError(f"no charge for element(s) {missing} of the trajectory",
                              path=f"{prefix}ionic_charges")
    return atype


def load_frames(path: str | Path, request: SpectrumRequest, *, max_frames: int | None = None) -> System:
    """Read the frames the request selects (``max_frames`` caps them further)."""
    caps = [n for n in (max_frames, request.max_frames) if n is not None]
    traj = read_trajectory(path, request.format, index=request.index, max_frames=min(caps) if caps else None,
                           lammps_type_symbols=request.lammps_type_symbols)
    if request.volume_a3 == "cell" and (traj.box is None or not any(traj.pbc)):
        raise ConfigError("'cell' needs a periodic trajectory with a cell", path="options.volume_a3")
    return traj


def model_box(traj: System) -> NDArray[np.float64] | None:
    """Cells for the model when periodic in all three directions (as ``dptensor predict``)."""
    return traj.model_box


def check_plan(request: SpectrumRequest, nframes: int) -> None:
    """Run the transform on a stand-in series of ``nframes``: options that do not fit the
    trajectory (max_corr_fs too long, laser_cm inside the grid, too few frames) fail now."""
    if nframes < 4:
        raise DataError(f"{nframes} frame(s): a spectrum needs at least 4")
    series = np.random.default_rng(0).normal(size=(nframes, TENSOR_DIM.get(request.model_kind, 3)))
    if request.kind != "raman":  # the units need the volume, which is checked with the frames
        ir_spectrum(series, dataclasses.replace(request.spectrum, units="relative"))
    else:
        raman_spectrum(series, request.spectrum)


# ---- prediction --------------------------------------------------------------------------------


def chunk_frames_for_memory(free_bytes: float, bytes_per_frame: float, natoms: int, dim: int) -> int:
    """Frames per chunk: GPU_MEMORY_SHARE of the free device memory, capped by
    MAX_CHUNK_FRAMES and by MAX_CHUNK_HOST_BYTES of atomic results on the host."""
    by_device = GPU_MEMORY_SHARE * free_bytes / max(bytes_per_frame, 1.0)
    by_host = MAX_CHUNK_HOST_BYTES / (natoms * dim * 8)
    return int(max(1, min(by_device, by_host, MAX_CHUNK_FRAMES)))


def device_batch_size(model: TensorModel, traj: System, atype: NDArray[np.int64]) -> int | None:
    """CUDA: measure the peak memory of a few frames, size chunks from the free memory.
    CPU: None, i.e. the library's atom budget per chunk (memory bounded, cache friendly)."""
    import torch

    from model.inference import iter_predict

    device = next(model.parameters()).device
    if device.type != "cuda":
        return None
    n = min(traj.nframes, 4)
    box = model_box(traj)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    for _ in iter_predict(model, traj.coord[:n], atype, None if box is None else box[:n], batch_size=n):
        pass
    per_frame = (torch.cuda.max_memory_allocated(device) - base) / n
    free, _ = torch.cuda.mem_get_info(device)
    return chunk_frames_for_memory(free, per_frame, traj.natoms, model.dim)


class _Series:
    """Turns each predicted chunk into rows of the time series (global or Wannier dipole).
    The Wannier dipole needs unwrapped positions; the last unwrapped frame of a chunk is
    carried into the next, so chunking gives exactly the unwrapping of the whole run."""

    def __init__(self, request: SpectrumRequest, model: TensorModel, traj: System,
                 atype: NDArray[np.int64], member: int | None = None) -> None:
        self.request, self.traj, self.atype = request, traj, atype
        self.member = member  # a committee member's own series (None: the predicted mean)
        self.values = np.zeros((traj.nframes, model.dim))
        self.sel = np.isin(atype, model.sel_type)
        if request.dipole_mode == "wannier":
            assert request.ionic_charges is not None
            charges = request.ionic_charges
            self.charges = {int(t): charges[s] for s, t in zip(traj.symbols, atype.tolist(), strict=True)}
        self.last: tuple[NDArray[np.float64], NDArray[np.float64] | None] | None = None

    def __call__(self, f0: int, chunk: Prediction) -> None:
        if self.member is not None:
            chunk = chunk.member(self.member)
        n = chunk.global_tensor.shape[0]
        if self.request.dipole_mode == "global":
            self.values[f0:f0 + n] = chunk.global_tensor
            return
        r, cells = self.traj.coord[f0:f0 + n], self.traj.box
        h = None if cells is None else cells[f0:f0 + n]
        if self.last is not None:  # prepend the previous chunk's last (unwrapped) frame
            r = np.concatenate([self.last[0], r])
            h = None if h is None or self.last[1] is None else np.concatenate([self.last[1], h])
        unwrapped = unwrap_positions(r, h, self.traj.pbc)[-n:]
        self.last = (unwrapped[-1:], None if h is None else h[-1:])
        q_w = self.request.q_w
        assert q_w is not None
        self.values[f0:f0 + n] = wannier_total_dipole(
            unwrapped, chunk.atomic_tensor, self.atype, self.charges, q_w, self.sel, pbc=False)


def predict_series(model: TensorModel, traj: System, request: SpectrumRequest, *,
                   predictions: str | Path | None = None, batch_size: int | None = None,
                   progress: Progress | None = None,
                   should_stop: Callable[[], bool] | None = None) -> NDArray[np.float64]:
    """The time series of the request ([nf, 3] dipoles or [nf, 9] polarizabilities), predicted
    chunk by chunk; with ``predictions`` the per-frame tensors also go to that .npz.
    ``should_stop`` is polled between chunks: a stop raises InterruptedError."""
    check_model_kind(request, model.kind)
    atype = check_elements(request, traj.symbols, model.type_map)
    series = _Series(request, model, traj, atype)
    _predict_into(model, traj, request, [series], predictions=predictions, batch_size=batch_size,
                  progress=progress, should_stop=should_stop)
    return series.values


def predict_member_series(model: TensorModel, traj: System, request: SpectrumRequest, *,
                          predictions: str | Path | None = None, batch_size: int | None = None,
                          progress: Progress | None = None,
                          should_stop: Callable[[], bool] | None = None) -> list[NDArray[np.float64]]:
    """``predict_series`` of every committee member, from one batched pass over the frames."""
    from model.inference import committee_size

    check_model_kind(request, model.kind)
    atype = check_elements(request, traj.symbols, model.type_map)
    series = [_Series(request, model, traj, atype, member=k) for k in range(committee_size(model))]
    _predict_into(model, traj, request, series, predictions=predictions, batch_size=batch_size,
                  progress=progress, should_stop=should_stop)
    return [s.values for s in series]


def _predict_into(model: TensorModel, traj: System, request: SpectrumRequest, sinks: Sequence[_Series], *,
                  predictions: str | Path | None, batch_size: int | None, progress: Progress | None,
                  should_stop: Callable[[], bool] | None) -> None:
    from model.inference import iter_predict, save_predictions_npz

    atype = sinks[0].atype
    box = model_box(traj)

    def feed(f0: int, chunk: Prediction) -> None:
        for sink in sinks:
            sink(f0, chunk)

    if progress is not None:
        progress(0, traj.nframes)
    if predictions is not None:
        save_predictions_npz(predictions, model, traj.coord, atype, box, batch_size=batch_size,
                             progress=progress, should_stop=should_stop, on_chunk=feed)
        return
    for f0, chunk in iter_predict(model, traj.coord, atype, box, batch_size=batch_size):
        feed(f0, chunk)
        done = f0 + chunk.global_tensor.shape[0]
        if progress is not None:
            progress(done, traj.nframes)
        if should_stop is not None and done < traj.nframes and should_stop():
            raise InterruptedError("prediction stopped")


# ---- spectrum ----------------------------------------------------------------------------------


def transform(request: SpectrumRequest, series: Sequence[NDArray[np.float64]],
              metadata: Mapping[str, Any], volume_a3: float | None = None) -> Spectrum:
    """The spectrum of the series (a pure function of them: committees call it per member)."""
    data = list(series) if len(series) > 1 else series[0]
    if request.kind == "dielectric":
        from model.dielectric import dielectric_spectrum

        if volume_a3 is None:
            raise ConfigError("the dielectric response needs a volume: a periodic cell or volume_a3",
                              path="volume_a3")
        return dielectric_spectrum(data, request.spectrum, volume_a3=volume_a3, metadata=dict(metadata))
    if request.kind == "ir":
        return ir_spectrum(data, request.spectrum, volume_a3=volume_a3, metadata=metadata)
    return raman_spectrum(data, request.spectrum, metadata=metadata)
