"""Harmonic IR sticks from user-supplied normal modes and Born charges (formulas: docs/spectra.md).

∂μ/∂Q_k = Σᵢ Z*ᵢ · e_{k,i} / √mᵢ with e_k the orthonormal mass-weighted eigenvector of mode
k; the intensity A_k = N_A/(12 ε₀ c²)·|∂μ/∂Q_k|² in km/mol (Napierian, per molecule), as
quantum-chemistry codes print it. Modes are accepted as

- an ``.npz`` with ``frequencies_cm`` [n] and ``modes`` [n, nat, 3] (Cartesian displacement
  patterns, any normalisation) or ``eigenvectors`` [n, nat, 3] (mass-weighted);
- an ASE ``VibrationsData`` JSON (``vib.get_vibrations().write('vib.json')``): energies and
  Cartesian modes (ASE's are eigenvector/√m);
- a phonopy ``qpoints.yaml`` / ``band.yaml`` / ``mesh.yaml`` with eigenvectors (mass-weighted)
  at Γ; frequencies in THz.

Cartesian patterns d are turned into e = √m·d / |√m·d|, which is exact when d ∝ e/√m.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from model.errors import ConfigError, DataError
from model.spectra_units import C_LIGHT, KM_MOL_PER_E2_AMU

F64 = NDArray[np.float64]
THZ_TO_CM = 1e12 / (100.0 * C_LIGHT)  # 33.356 cm⁻¹ per THz


@dataclass
class NormalModes:
    wavenumber_cm: F64  # [n]; negative for imaginary modes
    eigvec: F64  # [n, nat, 3] mass-weighted, each normalised to 1
    source: str


def _normalise(vectors: F64, masses: F64, cartesian: bool) -> F64:
    e = vectors * np.sqrt(masses)[None, :, None] if cartesian else vectors
    norm = np.sqrt((e**2).sum(axis=(1, 2)))
    if (norm == 0).any():
        raise DataError(f"mode(s) {np.flatnonzero(norm == 0).tolist()} are all zeros", path="modes")
    return e / norm[:, None, None]


def _from_npz(path: Path, masses: F64) -> NormalModes:
    with np.load(path, allow_pickle=False) as data:
        if "frequencies_cm" not in data.files or not ({"modes", "eigenvectors"} & set(data.files)):
            raise DataError("needs frequencies_cm and modes (Cartesian) or eigenvectors (mass-weighted), "
                            f"it has {data.files}", path=str(path))
        cart = "modes" in data.files
        vec = np.asarray(data["modes" if cart else "eigenvectors"], dtype=np.float64)
        nu = np.asarray(data["frequencies_cm"], dtype=np.float64).reshape(-1)
    vec = vec.reshape(vec.shape[0], -1, 3)
    return NormalModes(nu, _normalise(vec, masses, cart), str(path))


def _from_ase(path: Path, masses: F64) -> NormalModes:
    from ase import units
    from ase.io.jsonio import read_json

    data = read_json(str(path))
    if not hasattr(data, "get_energies_and_modes"):
        raise DataError("not an ASE VibrationsData JSON (vib.get_vibrations().write(...))", path=str(path))
    energies, modes = data.get_energies_and_modes(all_atoms=True)
    energies = np.asarray(energies)
    nu = np.where(np.abs(energies.imag) > np.abs(energies.real), -np.abs(energies.imag), energies.real)
    return NormalModes(nu / units.invcm, _normalise(np.asarray(modes, dtype=np.float64), masses, True), str(path))


def _from_phonopy(path: Path, masses: F64) -> NormalModes:
    import yaml

    doc: Any = yaml.safe_load(path.read_text())
    points = doc.get("phonon") if isinstance(doc, dict) else None
    if not points:
        raise DataError("not a phonopy yaml with a 'phonon' list", path=str(path))
    gamma = next((p for p in points if np.allclose(p.get("q-position", [1, 1, 1]), 0)), None)
    if gamma is None or "eigenvector" not in gamma["band"][0]:
        raise DataError("no Γ point with eigenvectors (run phonopy with EIGENVECTORS = .TRUE.)", path=str(path))
    nu = np.array([b["frequency"] for b in gamma["band"]], dtype=np.float64) * THZ_TO_CM
    vec = np.array([[[c[0] for c in atom] for atom in b["eigenvector"]] for b in gamma["band"]], dtype=np.float64)
    return NormalModes(nu, _normalise(vec, masses, False), str(path))


def read_modes(path: str | Path, masses: F64) -> NormalModes:
    p = Path(path)
    if not p.is_file():
        raise DataError("no such file", path=str(p))
    masses = np.asarray(masses, dtype=np.float64)
    reader = {".npz": _from_npz, ".json": _from_ase, ".yaml": _from_phonopy, ".yml": _from_phonopy}.get(p.suffix)
    if reader is None:
        raise ConfigError("normal modes: .npz (frequencies_cm + modes/eigenvectors), ASE VibrationsData .json, "
                          "or phonopy .yaml", path="modes")
    modes = reader(p, masses)
    if modes.eigvec.shape[1] != masses.shape[0]:
        raise DataError(f"modes of {modes.eigvec.shape[1]} atoms for a structure of {masses.shape[0]}", path=str(p))
    if modes.wavenumber_cm.shape[0] != modes.eigvec.shape[0]:
        raise DataError(f"{modes.wavenumber_cm.shape[0]} frequencies for {modes.eigvec.shape[0]} modes", path=str(p))
    return modes


def harmonic_ir(z: F64, masses: F64, modes: NormalModes) -> dict[str, Any]:
    """Stick spectrum of one frame: Born charges z [nat, 3, 3] (∂M_a/∂r_{i,b}), masses [nat] amu."""
    dmu_dq = np.einsum("iab,kib->ka", z, modes.eigvec / np.sqrt(masses)[None, :, None])  # [n, 3] e/√amu
    intensity = KM_MOL_PER_E2_AMU * (dmu_dq**2).sum(axis=1)
    return {
        "wavenumber_cm": modes.wavenumber_cm.tolist(), "intensity_km_mol": intensity.tolist(),
        "dmu_dq_e_per_sqrt_amu": dmu_dq.tolist(), "unit": "km/mol", "source": modes.source,
        "formula": "A_k = N_A/(12 ε₀ c²)·|Σ_i Z*_i e_ki/√m_i|² (SI, Napierian, per molecule)",
        "note": "negative wavenumbers are imaginary modes",
    }
