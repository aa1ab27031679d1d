"""The spectrum options: one schema for the library, ``dptensor spectrum``, the REST api and
the page (formulas and conventions: docs/spectra.md).

``SpectrumOptions`` holds what the transform needs; the request options that say how to
read frames and form M(t) are in model.spectrum_pipeline (``REQUEST_OPTIONS``). Both are
described in ``OPTION_HELP`` (name → one line), which the CLI help, the REST form's
description, its "unknown option" error and the page (GET /v1/spectra/options) share.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.errors import ConfigError
from model.spectra_units import IR_UNITS, parse_bands

WINDOWS = ("gaussian", "hann", "none")
CORRECTIONS = ("harmonic", "kubo", "schofield", "none")
KINDS = ("ir", "raman", "dielectric", "vdos")

FloatArray = NDArray[np.float64]

OPTION_HELP: dict[str, str] = {
    # SpectrumOptions
    "temperature_k": "temperature in K for the quantum correction and the absolute units (default 300)",
    "window": "lag window on the autocorrelation: gaussian (default), hann, none",
    "max_corr_fs": "correlation length in fs (default min(half the shortest run, 2000))",
    "zero_pad": "zero-padding factor of the transform (default 4)",
    "correction": "quantum correction: harmonic (default), kubo, schofield, none",
    "freq_max_cm": "top of the grid in cm⁻¹ (default min(Nyquist, 5000))",
    "derivative": "derivative form ⟨ẋẋ⟩ (default: yes for IR/dielectric/VDOS, no for Raman)",
    "raman_reduced": "Raman: reduced spectrum ν̃(1-e^{-βħω})·I",
    "laser_cm": "Raman: laser wavenumber (cm⁻¹) for Stokes intensities (ν̃_in-ν̃)⁴",
    "units": "IR: auto (default), absorption (n·α in cm⁻¹, needs a volume), molar (km mol⁻¹ per cm⁻¹ "
             "per molecule), relative",
    "molecules": "IR: molecules per frame for molar units (default 1: the frame is one molecule)",
    "bands": "band integrals: [[lo, hi], …] in cm⁻¹ (CLI: 1000:2000,3000:4000)",
    "eps_inf": "dielectric: ε∞, the electronic (high-frequency) dielectric constant (default 1)",
    # request options (model.spectrum_pipeline)
    "dipole_mode": "IR: global (the model's dipole, default) or wannier (Σ Z r + q_W Σ_sel (r + Δ))",
    "ionic_charges": 'wannier: ionic charge per element, {"O": 6, "H": 1} (CLI: O=6,H=1)',
    "q_w": "wannier: charge of one Wannier centroid (water: -8)",
    "volume_a3": "IR/dielectric: volume in Å³ or 'cell' (default: the mean cell volume of a periodic run)",
    "format": "trajectory format: extxyz, lammps-dump-text, traj, deepmd/npy (default: from the name)",
    "index": "frames to use, ASE slice syntax (e.g. '1000:' skips 1000)",
    "lammps_type_symbols": 'elements of LAMMPS atom types, {"1": "O", "2": "H"} (CLI: 1=O,2=H)',
    "max_frames": "read at most this many frames",
}


def parse_pairs(text: str, what: str, value: type) -> dict[str, Any]:
    """'O=6,H=1' -> {'O': 6.0, 'H': 1.0} (the CLI's spelling of a map, accepted everywhere)."""
    out: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, raw = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = value(raw.strip())
        except ValueError:
            example = "O=6,H=1" if value is float else "1=O,2=H"
            raise ConfigError(f"{item!r} is not NAME=VALUE (e.g. {example})", path=what) from None
    return out


def normalise_spellings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The text spellings of the CLI (``O=6,H=1``, ``1=O,2=H``, ``1000:2000,3000:4000``) as the
    JSON values, so that the CLI, the REST api and the page accept the same input; unknown
    option names are an error that lists the known ones (``OPTION_HELP``)."""
    unknown = sorted(set(options) - set(OPTION_HELP))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; known: {sorted(OPTION_HELP)} (docs/spectra.md)",
                          path=unknown[0])
    out = dict(options)
    if isinstance(out.get("ionic_charges"), str):
        out["ionic_charges"] = parse_pairs(out["ionic_charges"], "ionic_charges", float)
    if isinstance(out.get("lammps_type_symbols"), str):
        out["lammps_type_symbols"] = parse_pairs(out["lammps_type_symbols"], "lammps_type_symbols", str)
    if isinstance(out.get("bands"), str):
        out["bands"] = [list(b) for b in parse_bands(out["bands"]) or ()]
    return out


def option_schema() -> dict[str, Any]:
    """Every option with its help line and default (what the page and GET …/spectrum/options show)."""
    defaults = {f.name: f.default for f in dataclasses.fields(SpectrumOptions) if f.name != "dt_fs"}
    return {"kinds": list(KINDS), "docs": "docs/spectra.md",
            "options": {name: {"help": text, "default": plain(defaults.get(name))} for name, text in OPTION_HELP.items()}}


def require_positive(name: str, value: Any, *, allow_none: bool = False, minimum: float = 0.0) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= minimum:
        raise ConfigError(f"must be a finite number > {minimum:g}, got {value!r}", path=name)


@dataclass(frozen=True)
class SpectrumOptions:
    """Options of the transforms. Only dt_fs is required.

    max_corr_fs=None means min(half the shortest trajectory, 2000 fs); freq_max_cm=None
    means min(Nyquist, 5000 cm⁻¹) and values above Nyquist are clipped to it.
    """

    dt_fs: float
    temperature_k: float = 300.0
    window: str = "gaussian"
    max_corr_fs: float | None = None
    zero_pad: float = 4.0
    correction: str = "harmonic"
    freq_max_cm: float | None = None
    derivative: bool | None = None
    raman_reduced: bool = False
    laser_cm: float | None = None
    units: str = "auto"
    molecules: int | None = None
    bands: tuple[tuple[float, float], ...] | None = None
    eps_inf: float | None = None

    def __post_init__(self) -> None:
        require_positive("dt_fs", self.dt_fs)
        require_positive("temperature_k", self.temperature_k)
        require_positive("max_corr_fs", self.max_corr_fs, allow_none=True)
        require_positive("freq_max_cm", self.freq_max_cm, allow_none=True)
        require_positive("laser_cm", self.laser_cm, allow_none=True)
        require_positive("eps_inf", self.eps_inf, allow_none=True)
        require_positive("zero_pad", self.zero_pad, minimum=1.0 - 1e-12)
        if self.window not in WINDOWS:
            raise ConfigError(f"must be one of {WINDOWS}, got {self.window!r}", path="window")
        if self.correction not in CORRECTIONS:
            raise ConfigError(f"must be one of {CORRECTIONS}, got {self.correction!r}", path="correction")
        if self.units not in IR_UNITS:
            raise ConfigError(f"must be one of {IR_UNITS}, got {self.units!r}", path="units")
        m = self.molecules
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ConfigError(f"must be a positive integer, got {m!r}", path="molecules")
        if self.bands is not None:  # normalise lists from JSON to a tuple of (lo, hi)
            object.__setattr__(self, "bands", parse_bands(self.bands))
        for flag in ("derivative", "raman_reduced"):
            value = getattr(self, flag)
            if not isinstance(value, bool) and not (flag == "derivative" and value is None):
                raise ConfigError(f"must be true or false, got {value!r}", path=flag)
        if self.raman_reduced and self.laser_cm is not None:
            raise ConfigError("reduced spectra remove the laser/thermal factors; set raman_reduced or "
                              "laser_cm, not both", path="laser_cm")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> SpectrumOptions:
        """Build from a JSON object; unknown keys are a ConfigError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown spectrum option(s) {unknown}; known: {sorted(known)}")
        if "dt_fs" not in values:
            raise ConfigError("is required (time between frames in fs)", path="dt_fs")
        return cls(**dict(values))

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if self.bands is not None:
            out["bands"] = [list(b) for b in self.bands]
        return out


@dataclass
class Spectrum:
    wavenumber_cm: FloatArray
    intensities: dict[str, FloatArray]
    metadata: dict[str, Any] = field(default_factory=dict)
    bands: list[dict[str, Any]] | None = None  # band integrals (spectra_units.band_table)
    # a committee's spectrum (model.committee_spectra): std over members per channel and
    # grid point, and the main peaks with their positions per member
    std: dict[str, FloatArray] | None = None
    peaks: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "wavenumber_cm": [float(v) for v in self.wavenumber_cm],
            "intensities": {k: [float(v) for v in a] for k, a in self.intensities.items()},
            "metadata": {k: plain(v) for k, v in self.metadata.items()},
        }
        if self.bands is not None:
            out["bands"] = plain(self.bands)
        if self.std is not None:
            out["intensities_std"] = {k: [float(v) for v in a] for k, a in self.std.items()}
        if self.peaks is not None:
            out["peaks"] = plain(self.peaks)
        return out

    def to_csv(self) -> str:
        names = ["wavenumber_cm", *self.intensities]
        columns = [self.wavenumber_cm, *self.intensities.values()]
        if self.std is not None:
            names += [f"{k}_std" for k in self.std]
            columns += list(self.std.values())
        table = np.column_stack(columns)
        buf = io.StringIO()
        np.savetxt(buf, table, delimiter=",", fmt="%.10g", header=",".join(names), comments="")
        return buf.getvalue()


def plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays become Python floats/ints/lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
