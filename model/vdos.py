"""Vibrational density of states from a trajectory's positions (formulas: docs/spectra.md).

Velocities are forward differences of the *unwrapped* positions (their response is divided
out exactly, as for the IR); the spectrum is mass weighted,

    g(ν̃) ∝ Σᵢ mᵢ ∫⟨vᵢ(0)·vᵢ(t)⟩e^{−iωt}dt                               [states per cm⁻¹]

normalised so that ∫ g dν̃ over the grid (0…freq_max) = 3N (N atoms): classically each degree of freedom holds the
same kinetic energy, so g counts modes wherever the motion is harmonic. Channels: the total
and one per element (partial VDOS, which add up to the total). No quantum correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.errors import DataError
from model.spectra import (
    autocorrelation,
    omega_forward_difference,
    omega_rad_fs,
    plan_lags,
    windowed_transform,
)
from model.spectra_units import AMU, K_B, band_table
from model.spectrum_options import Spectrum, SpectrumOptions
from model.trajectory import unwrap_positions

F64 = NDArray[np.float64]


def atomic_masses(symbols: Sequence[str]) -> F64:
    from ase.data import atomic_masses as table
    from ase.data import atomic_numbers

    unknown = sorted({s for s in symbols if s not in atomic_numbers})
    if unknown:
        raise DataError(f"no atomic mass for element(s) {unknown}")
    return np.array([table[atomic_numbers[s]] for s in symbols])


def vdos_spectrum(positions: F64 | Sequence[F64], masses: Sequence[float] | F64, options: SpectrumOptions, *,
                  symbols: Sequence[str] | None = None, cells: Sequence[F64 | None] | None = None,
                  pbc: tuple[bool, bool, bool] = (False, False, False),
                  metadata: dict[str, Any] | None = None) -> Spectrum:
    """VDOS of trajectories [nf, nat, 3] (Å) pooled; ``cells`` per trajectory to unwrap."""
    runs = list(positions) if isinstance(positions, list | tuple) else [positions]
    m = np.asarray(masses, dtype=np.float64)
    names = list(symbols) if symbols is not None else ["all"] * m.shape[0]
    boxes = list(cells) if cells is not None else [None] * len(runs)
    velocities = []
    for r, box in zip(runs, boxes, strict=True):
        r = np.asarray(r, dtype=np.float64)
        if r.ndim != 3 or r.shape[1:] != (m.shape[0], 3):
            raise DataError(f"positions of shape {r.shape}, expected [nframes, {m.shape[0]}, 3]")
        if r.shape[0] < 5:
            raise DataError(f"{r.shape[0]} frames: the VDOS needs at least 5")
        unwrapped = unwrap_positions(r, box, pbc) if box is not None and any(pbc) else r
        velocities.append(np.diff(unwrapped, axis=0) / options.dt_fs)  # Å/fs
    n_lag, lag_meta = plan_lags([v.reshape(len(v), -1) for v in velocities], options)
    channels: dict[str, F64] = {}
    total_c0 = 0.0
    elements = list(dict.fromkeys(names))
    for element in elements:
        idx = [i for i, s in enumerate(names) if s == element]
        weighted = [(v[:, idx] * np.sqrt(m[idx])[None, :, None]).reshape(len(v), -1) for v in velocities]
        acf = autocorrelation(weighted, n_lag)  # amu·Å²/fs²
        total_c0 += float(acf[0])
        nu, spec, grid_meta = windowed_transform(acf, options)
        w, wfd = omega_rad_fs(nu), omega_forward_difference(nu, options.dt_fs)
        channels[element] = spec * np.divide(w**2, wfd**2, out=np.ones_like(w), where=wfd > 0)
    dof = 3 * m.shape[0]
    total = np.sum(list(channels.values()), axis=0)
    area = float(np.trapezoid(total, nu))  # = C(0)/(2c) of the velocities the FD correction restores
    scale = dof / area if area > 0 else 0.0
    out: dict[str, F64] = {"vdos": total * scale}
    if len(elements) > 1 or elements != ["all"]:
        out.update({f"vdos_{e}": c * scale for e, c in channels.items()})
    meta = {
        "kind": "vdos", "units": "states per cm^-1 (∫g dν̃ = 3N)", "window": options.window, "dt_fs": options.dt_fs,
        "formula": "g(ν̃) ∝ Σ_i m_i FT⟨v_i(0)·v_i(t)⟩, ∫g dν̃ = 3N over the grid; v from unwrapped positions",
        "n_atoms": int(m.shape[0]), "n_trajectories": len(runs), "n_frames": sum(len(r) for r in runs),
        "kinetic_temperature_k": total_c0 / dof * AMU * 1e10 / K_B,
        **lag_meta, **grid_meta, **(metadata or {}),
    }
    spectrum = Spectrum(nu, out, meta)
    if options.bands is not None:
        spectrum.bands = band_table(nu, spectrum.intensities, options.bands, "states")
    return spectrum


def normalise_check(spectrum: Spectrum) -> float:
    """∫ g dν̃ over the grid (3N when the grid holds every mode)."""
    return float(np.trapezoid(spectrum.intensities["vdos"], spectrum.wavenumber_cm))



def run_vdos(sources: Sequence[str], request: Any) -> Spectrum:
    """``dptensor spectrum --kind vdos -t …``: no model, the trajectories' positions only."""
    from model.spectrum_pipeline import load_frames

    trajectories = [load_frames(s, request) for s in sources]
    first = trajectories[0]
    for t in trajectories[1:]:
        if t.symbols != first.symbols:
            raise DataError("the trajectories hold different atoms", path=str(t.path))
    return vdos_spectrum([t.coord for t in trajectories], atomic_masses(first.symbols), request.spectrum,
                         symbols=first.symbols, cells=[t.box for t in trajectories], pbc=first.pbc,
                         metadata={"sources": [str(t.path).rsplit("/", 1)[-1] for t in trajectories]})
