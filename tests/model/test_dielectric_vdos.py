"""Dielectric response (Kramers–Kronig, static ε from fluctuations) and the VDOS: known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import find_peaks

from model.cli import main
from model.dielectric import (
    dielectric_spectrum,
    eps_inf_from_polarizability,
    fluctuation_eps,
    kramers_kronig_real,
    static_dielectric,
)
from model.spectra_units import E_CHARGE, EPS0, K_B
from model.spectrum_options import SpectrumOptions
from model.vdos import vdos_spectrum
from tests.model import harmonic

DT = 0.5


def test_kramers_kronig_of_a_lorentz_oscillator() -> None:
    nu = np.arange(0.0, 8000.0, 2.0)
    w0, gamma, strength = 1600.0, 40.0, 2e6
    den = (w0**2 - nu**2) ** 2 + (gamma * nu) ** 2
    imag, real = strength * gamma * nu / den, strength * (w0**2 - nu**2) / den
    got = kramers_kronig_real(nu, imag)
    assert np.abs(got - real).max() < 1e-3 * np.abs(real).max()
    assert got[0] == pytest.approx(strength / w0**2, rel=1e-3)  # the static limit


def _ar1(n: int, sigma: float, rho: float, seed: int) -> np.ndarray:
    """Gaussian AR(1) dipoles [n, 3] with stationary std sigma per component."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3))
    out[0] = rng.normal(size=3) * sigma
    kick = sigma * np.sqrt(1 - rho**2)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + kick * rng.normal(size=3)
    return out


def test_static_eps_of_a_synthetic_trajectory_with_known_fluctuation() -> None:
    sigma, volume, temp, eps_inf = 3.0, 2000.0, 300.0, 1.8
    expected = eps_inf + 3 * sigma**2 * (E_CHARGE * 1e-10) ** 2 / (3 * EPS0 * volume * 1e-30 * K_B * temp)
    assert fluctuation_eps(3 * sigma**2, volume, temp) == pytest.approx(expected - eps_inf, rel=1e-12)
    results = [static_dielectric(_ar1(20_000, sigma, 0.9, seed), volume, temp, eps_inf=eps_inf) for seed in range(12)]
    values = np.array([r["eps_static"] for r in results])
    errors = np.array([r["error"] for r in results])
    assert abs(values.mean() - expected) < 4 * values.std(ddof=1) / np.sqrt(len(values))
    # the block-averaging error describes the real spread of independent runs (within a factor 2)
    assert 0.5 < errors.mean() / values.std(ddof=1) < 2.0
    assert all(abs(v - expected) < 5 * e for v, e in zip(values, errors, strict=True))


def test_eps_inf_from_a_polarizability() -> None:
    alpha = np.tile((np.eye(3) * 40.0).ravel(), (5, 1))
    assert eps_inf_from_polarizability(alpha, 1000.0) == pytest.approx(1 + 4 * np.pi * 40.0 / 1000.0)


def test_dielectric_spectrum_is_consistent_with_the_static_constant() -> None:
    """ε'(0) by Kramers–Kronig of ε''(ω) from the IR line shape = the fluctuation formula."""
    m = harmonic.dipoles(harmonic.md(24, 2000, DT, 300.0, seed=5))
    volume = 40.0
    spec = dielectric_spectrum(list(m), SpectrumOptions(dt_fs=DT, freq_max_cm=8000.0), volume_a3=volume, eps_inf=2.0)
    static = spec.metadata["static"]
    assert set(spec.intensities) == {"eps_imag", "eps_real"}
    assert spec.metadata["eps_real_at_zero"] == pytest.approx(static["eps_static"], rel=0.02)
    assert (spec.intensities["eps_imag"] >= -0.01 * spec.intensities["eps_imag"].max()).all()  # noise only
    peaks = spec.wavenumber_cm[find_peaks(spec.intensities["eps_imag"], height=0.05 * spec.intensities["eps_imag"].max())[0]]
    np.testing.assert_allclose(peaks, harmonic.normal_modes().wavenumber_cm, atol=2 * spec.metadata["grid_spacing_cm"])
    assert spec.intensities["eps_real"][-1] == pytest.approx(2.0, abs=0.05 * (static["eps_static"] - 2.0))


def test_vdos_peaks_at_the_normal_modes_and_counts_3n() -> None:
    traj = harmonic.md(16, 2000, DT, 300.0, seed=6)
    spec = vdos_spectrum(list(traj), harmonic.MASSES, SpectrumOptions(dt_fs=DT), symbols=["O", "H", "D"])
    g = spec.intensities["vdos"]
    peaks = spec.wavenumber_cm[find_peaks(g, height=0.05 * g.max())[0]]
    np.testing.assert_allclose(peaks, harmonic.normal_modes().wavenumber_cm, atol=spec.metadata["grid_spacing_cm"])
    assert np.trapezoid(g, spec.wavenumber_cm) == pytest.approx(9.0, rel=1e-3)
    np.testing.assert_allclose(spec.intensities["vdos_O"] + spec.intensities["vdos_H"] + spec.intensities["vdos_D"], g)
    # the light atom moves most in the highest mode (O–H-like stretch)
    top = np.argmin(np.abs(spec.wavenumber_cm - harmonic.normal_modes().wavenumber_cm[2]))
    assert spec.intensities["vdos_H"][top] > spec.intensities["vdos_O"][top]


def test_cli_vdos_and_dielectric(tmp_path: Path) -> None:
    from ase import Atoms
    from ase.io import write

    traj = harmonic.md(1, 800, DT, 300.0, seed=7, equipartition=True)[0]
    cell = np.eye(3) * 12.0
    frames = [Atoms("OHH", positions=x, cell=cell, pbc=True) for x in traj]
    write(tmp_path / "md.xyz", frames)
    out = tmp_path / "vdos.json"
    assert main(["spectrum", "--kind", "vdos", "-t", str(tmp_path / "md.xyz"), "--dt", str(DT), "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["metadata"]["units"].startswith("states per cm^-1") and "vdos_H" in doc["intensities"]
    np.savez(tmp_path / "m.npz", dipole=harmonic.dipoles(traj), box=np.tile(cell.ravel(), (len(traj), 1)))
    out = tmp_path / "eps.json"
    assert main(["spectrum", "--kind", "dielectric", "--labels", "-t", str(tmp_path / "m.npz"), "--dt", str(DT),
                 "--eps-inf", "1.7", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["metadata"]["static"]["eps_inf"] == 1.7 and doc["metadata"]["volume_a3"] == pytest.approx(1728.0)
    assert doc["intensities"]["eps_real"][-1] == pytest.approx(1.7, abs=0.01)
