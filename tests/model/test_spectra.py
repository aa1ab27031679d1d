"""Spectra from synthetic time series whose answers follow from the formulas alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model.errors import ConfigError, DataError
from model.spectra import (
    SpectrumOptions,
    autocorrelation,
    ir_spectrum,
    nyquist_cm,
    quantum_correction,
    raman_spectrum,
    unwrap_positions,
    wannier_total_dipole,
)

C_CM_S = 2.99792458e10  # speed of light, cm/s (independent of the module's constant)
C2 = 6.62607015e-34 * 2.99792458e10 / 1.380649e-23  # hc/k_B in cm K, exact SI values


def cosines(n: int, dt_fs: float, nus: list[float], amps: list[float]) -> np.ndarray:
    """M(t) = Σ a_k cos(2π c ν̃_k t) spread over x, y, z, with per-line phases."""
    t = np.arange(n) * dt_fs * 1e-15
    m = np.zeros((n, 3))
    for k, (nu, a) in enumerate(zip(nus, amps, strict=True)):
        m[:, k % 3] += a * np.cos(2 * np.pi * C_CM_S * nu * t + 0.7 * k)
    return m


def peaks(x: np.ndarray, y: np.ndarray, rel: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    i = np.flatnonzero((y[1:-1] > y[:-2]) & (y[1:-1] >= y[2:]) & (y[1:-1] > rel * y.max())) + 1
    return x[i], y[i]


# ---- grid and units ------------------------------------------------------------------------


def test_nyquist_at_1fs_is_16678_per_cm() -> None:
    assert nyquist_cm(1.0) == pytest.approx(16678.2, abs=0.1)
    spec = ir_spectrum(cosines(400, 1.0, [1000.0], [1.0]), SpectrumOptions(dt_fs=1.0))
    assert spec.metadata["nyquist_cm"] == pytest.approx(1 / (2 * 1e-15 * C_CM_S))


@pytest.mark.parametrize("dt", [0.25, 1.0, 2.0])
def test_grid_spacing_resolution_and_default_range(dt: float) -> None:
    opts = SpectrumOptions(dt_fs=dt, max_corr_fs=500.0, zero_pad=2.0)
    spec = ir_spectrum(cosines(3000, dt, [1000.0], [1.0]), opts)
    meta, nu = spec.metadata, spec.wavenumber_cm
    n_fft = meta["n_fft"]
    assert n_fft >= 2 * 2.0 * meta["n_lags"]
    assert meta["n_lags"] == round(500.0 / dt) + 1
    assert meta["grid_spacing_cm"] == pytest.approx(1 / (n_fft * dt * 1e-15 * C_CM_S))
    assert np.allclose(np.diff(nu), meta["grid_spacing_cm"])
    assert meta["resolution_cm"] == pytest.approx(1 / (meta["n_lags"] * dt * 1e-15 * C_CM_S))
    top = min(5000.0, meta["nyquist_cm"])
    assert nu[0] == 0.0 and top - meta["grid_spacing_cm"] < nu[-1] <= top + 1e-9


def test_default_correlation_length_is_half_the_run_capped_at_2ps() -> None:
    short = ir_spectrum(cosines(801, 1.0, [1000.0], [1.0]), SpectrumOptions(dt_fs=1.0))
    assert short.metadata["max_corr_fs"] == math.floor(0.5 * 799)  # 800 differences, whole lags
    long = ir_spectrum(cosines(10000, 1.0, [1000.0], [1.0]), SpectrumOptions(dt_fs=1.0))
    assert long.metadata["max_corr_fs"] == 2000.0


def test_autocorrelation_is_unbiased_and_pooled() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(30, 3))
    got = autocorrelation([a, b], 10)
    want = [
        (np.sum(a[: 50 - k] * a[k:]) + np.sum(b[: 30 - k] * b[k:])) / (50 - k + 30 - k)
        for k in range(10)
    ]
    np.testing.assert_allclose(got, want, rtol=1e-10)


# ---- IR ------------------------------------------------------------------------------------


@pytest.mark.parametrize("derivative", [True, False])
@pytest.mark.parametrize("window", ["gaussian", "hann"])
def test_synthetic_dipole_peaks_and_heights(derivative: bool, window: str) -> None:
    # 2 fs: the finite-difference bias at 3400 cm⁻¹ would be 7 %, so heights test the
    # correction; lines far apart compared with the window width (≈ 19 cm⁻¹).
    nus, amps = [700.0, 1650.0, 3400.0], [1.0, 0.6, 0.25]
    opts = SpectrumOptions(
        dt_fs=2.0,
        correction="none",
        window=window,
        derivative=derivative,
        max_corr_fs=2000.0,
        zero_pad=8.0,
    )
    spec = ir_spectrum(cosines(20000, 2.0, nus, amps), opts)
    x, y = peaks(spec.wavenumber_cm, spec.intensities["ir"])
    assert len(x) == 3
    assert np.all(np.abs(x - nus) <= spec.metadata["grid_spacing_cm"])
    expected = (np.array(nus) * np.array(amps)) ** 2
    np.testing.assert_allclose(y / y[0], expected / expected[0], rtol=0.02)


@pytest.mark.parametrize("window", ["gaussian", "hann", "none"])
def test_reported_window_width_matches_a_single_line(window: str) -> None:
    opts = SpectrumOptions(dt_fs=1.0, window=window, max_corr_fs=1000.0, zero_pad=64.0)
    spec = ir_spectrum(cosines(12000, 1.0, [2000.0], [1.0]), opts)
    nu, y = spec.wavenumber_cm, spec.intensities["ir"]
    above = nu[y >= 0.5 * y.max()]
    assert above.max() - above.min() == pytest.approx(spec.metadata["window_fwhm_cm"], rel=0.02)


def test_rotating_dipole_peaks_at_rotation_frequency() -> None:
    nu_rot, dt = 1234.0, 0.5
    t = np.arange(8000) * dt * 1e-15
    phase = 2 * np.pi * C_CM_S * nu_rot * t
    m = 1.8 * np.stack([np.cos(phase), np.sin(phase), np.zeros_like(t)], axis=1)
    spec = ir_spectrum(m, SpectrumOptions(dt_fs=dt, max_corr_fs=1000.0))
    nu, y = spec.wavenumber_cm, spec.intensities["ir"]
    assert abs(nu[np.argmax(y)] - nu_rot) <= spec.metadata["grid_spacing_cm"]


def test_absolute_ir_obeys_the_oscillator_strength_sum_rule() -> None:
    # one 1-D harmonic oscillator (charge e, mass 1 u) in V: ∫₀^∞ nα dω = π e²/(6 ε₀ m c V)
    e, eps0, amu, kb, temp, vol = (
        1.602176634e-19,
        8.8541878128e-12,
        1.66053906660e-27,
        1.380649e-23,
        300.0,
        800.0,
    )
    w0 = 2 * np.pi * C_CM_S * 1800.0
    amp = math.sqrt(2 * kb * temp / (amu * w0**2))  # ⟨q²⟩ = kT/(m ω0²)
    t = np.arange(20000) * 0.5e-15
    m = np.outer(amp * 1e10 * np.cos(w0 * t), [0.6, 0.0, 0.8])  # e·Å
    opts = SpectrumOptions(dt_fs=0.5, temperature_k=temp, freq_max_cm=1e6)
    spec = ir_spectrum(m, opts, volume_a3=vol)
    integral = (
        spec.intensities["ir"].sum() * 100 * spec.metadata["grid_spacing_cm"] * 2 * np.pi * C_CM_S
    )
    expected = np.pi * e**2 / (6 * eps0 * amu * C_CM_S / 100 * vol * 1e-30)
    assert integral == pytest.approx(expected, rel=0.01)
    assert spec.metadata["units"].startswith("cm^-1")


def test_averaging_trajectories_pools_correlations() -> None:
    rng = np.random.default_rng(1)
    m1 = cosines(3000, 1.0, [900.0, 2000.0], [1.0, 0.5]) + 0.01 * rng.normal(size=(3000, 3))
    m2 = cosines(3000, 1.0, [1500.0], [0.8])
    opts = SpectrumOptions(dt_fs=1.0, max_corr_fs=600.0)
    one = ir_spectrum(m1, opts).intensities["ir"]
    np.testing.assert_allclose(
        ir_spectrum([m1, m1.copy()], opts).intensities["ir"],
        one,
        rtol=1e-12,
        atol=1e-12 * one.max(),
    )
    both = ir_spectrum([m1, m2], opts)
    two = ir_spectrum(m2, opts).intensities["ir"]
    np.testing.assert_allclose(both.intensities["ir"], 0.5 * (one + two), atol=1e-10 * one.max())
    assert both.metadata["n_trajectories"] == 2 and both.metadata["n_frames"] == 6000


# ---- quantum corrections -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["harmonic", "kubo", "schofield", "none"])
def test_quantum_corrections_tend_to_one_at_low_frequency(kind: str) -> None:
    q = quantum_correction(np.array([0.0, 1e-6, 1e-3]), 300.0, kind)
    np.testing.assert_allclose(q, 1.0, atol=1e-5)


def test_quantum_correction_formulas() -> None:
    nu = np.array([500.0, 1650.0, 3400.0])
    x = C2 * nu / 300.0
    np.testing.assert_allclose(
        quantum_correction(nu, 300.0, "harmonic"), x / (1 - np.exp(-x)), rtol=1e-8
    )
    np.testing.assert_allclose(
        quantum_correction(nu, 300.0, "kubo"), 2 / (1 + np.exp(-x)), rtol=1e-8
    )
    np.testing.assert_allclose(quantum_correction(nu, 300.0, "schofield"), np.exp(x / 2), rtol=1e-8)


def test_ir_corrections_relative_to_the_classical_line_shape() -> None:
    m = cosines(4000, 1.0, [800.0, 3000.0], [1.0, 0.3])

    def ir(corr: str) -> tuple[np.ndarray, np.ndarray]:
        s = ir_spectrum(m, SpectrumOptions(dt_fs=1.0, correction=corr, temperature_k=250.0))
        return s.wavenumber_cm, s.intensities["ir"]

    nu, harmonic = ir("harmonic")
    x = C2 * nu[1:] / 250.0
    np.testing.assert_allclose(ir("none")[1], harmonic)  # harmonic QCF = classical formula
    np.testing.assert_allclose(ir("kubo")[1][1:], harmonic[1:] * 2 * np.tanh(x / 2) / x, rtol=1e-9)
    np.testing.assert_allclose(
        ir("schofield")[1][1:], harmonic[1:] * 2 * np.sinh(x / 2) / x, rtol=1e-9
    )


# ---- Raman ---------------------------------------------------------------------------------


def _alpha(n: int, dt: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) * dt * 1e-15
    a = np.empty((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            a[:, i, j] = a[:, j, i] = rng.normal() * np.cos(
                2 * np.pi * C_CM_S * rng.uniform(300, 3500) * t
            )
    return a + np.diag([10.0, 11.0, 12.0])


def test_isotropic_polarizability_has_no_anisotropic_raman() -> None:
    t = np.arange(5000) * 1e-15
    trace = (
        9.0 + np.cos(2 * np.pi * C_CM_S * 1640 * t) + 0.5 * np.cos(2 * np.pi * C_CM_S * 3300 * t)
    )
    alpha = trace[:, None, None] * np.eye(3)
    for derivative in (True, False):
        spec = raman_spectrum(alpha, SpectrumOptions(dt_fs=1.0, derivative=derivative))
        i = spec.intensities
        assert np.abs(i["aniso"]).max() <= 1e-12 * np.abs(i["iso"]).max()
        x, _ = peaks(spec.wavenumber_cm, np.where(spec.wavenumber_cm > 200, i["iso"], 0), 0.3)
        assert abs(x[0] - 1640) <= spec.metadata["grid_spacing_cm"] and len(x) == 2


def test_raman_channels_vv_vh_and_symmetrisation() -> None:
    alpha = _alpha(3000, 1.0, np.random.default_rng(3))
    opts = SpectrumOptions(dt_fs=1.0, max_corr_fs=800.0)
    spec = raman_spectrum(alpha, opts)
    i = spec.intensities
    np.testing.assert_allclose(i["vv"], i["iso"] + i["aniso"])
    np.testing.assert_allclose(i["vh"], 0.75 * i["aniso"])
    skew = np.random.default_rng(4).normal(size=(3000, 3, 3))
    flat = (alpha + skew - skew.transpose(0, 2, 1)).reshape(-1, 9)  # antisymmetric part dropped
    again = raman_spectrum(flat, opts).intensities
    for key in i:
        np.testing.assert_allclose(again[key], i[key], atol=1e-9 * np.abs(i["vv"]).max())


@pytest.mark.parametrize("derivative", [True, False])
def test_raman_iso_aniso_normalisation(derivative: bool) -> None:
    # α = a cos(ω1 t)·I + b cos(ω2 t)·diag(1,-1,0): ⟨ᾱᾱ⟩ = a²/2 cos, ⟨Tr ββ⟩ = b² cos
    a, b, dt = 0.7, 1.3, 1.0
    t = np.arange(12000) * dt * 1e-15
    c1, c2 = (np.cos(2 * np.pi * C_CM_S * nu * t) for nu in (1100.0, 2500.0))
    alpha = a * c1[:, None, None] * np.eye(3) + b * c2[:, None, None] * np.diag([1.0, -1.0, 0.0])
    opts = SpectrumOptions(dt_fs=dt, correction="none", derivative=derivative, zero_pad=8.0)
    spec = raman_spectrum(alpha, opts)
    above = spec.wavenumber_cm > 200  # the derivative form divides by ω²: skip ω → 0
    iso, aniso = spec.intensities["iso"][above], spec.intensities["aniso"][above]
    assert aniso.max() / iso.max() == pytest.approx((2 / 15) * b**2 / (a**2 / 2), rel=0.02)
    nu = spec.wavenumber_cm[above]
    assert abs(nu[np.argmax(aniso)] - 2500) <= spec.metadata["grid_spacing_cm"]
    assert abs(nu[np.argmax(iso)] - 1100) <= spec.metadata["grid_spacing_cm"]
    assert spec.metadata["form"] == ("derivative" if derivative else "autocorrelation")


def test_default_forms_and_raman_derivative_agrees_with_direct_form() -> None:
    alpha = _alpha(6000, 1.0, np.random.default_rng(7))
    assert ir_spectrum(alpha[:, 0], SpectrumOptions(dt_fs=1.0)).metadata["form"] == "derivative"
    direct = raman_spectrum(alpha, SpectrumOptions(dt_fs=1.0))
    assert direct.metadata["form"] == "autocorrelation"
    deriv = raman_spectrum(alpha, SpectrumOptions(dt_fs=1.0, derivative=True))
    band = (direct.wavenumber_cm > 250) & (
        direct.intensities["vv"] > 0.05 * direct.intensities["vv"].max()
    )
    np.testing.assert_allclose(
        deriv.intensities["vv"][band], direct.intensities["vv"][band], rtol=0.05
    )


def test_raman_corrections_reduced_and_stokes() -> None:
    alpha = _alpha(3000, 1.0, np.random.default_rng(5))
    base = SpectrumOptions(dt_fs=1.0, max_corr_fs=800.0)
    plain = raman_spectrum(alpha, base)
    nu = plain.wavenumber_cm
    x = C2 * nu / 300.0
    classical = raman_spectrum(
        alpha, SpectrumOptions(dt_fs=1.0, max_corr_fs=800.0, correction="none")
    )
    np.testing.assert_allclose(
        plain.intensities["vv"],
        classical.intensities["vv"] * quantum_correction(nu, 300.0, "harmonic"),
    )
    reduced = raman_spectrum(
        alpha, SpectrumOptions(dt_fs=1.0, max_corr_fs=800.0, raman_reduced=True)
    )
    np.testing.assert_allclose(
        reduced.intensities["vh"], plain.intensities["vh"] * nu * (1 - np.exp(-x)), atol=1e-14
    )
    stokes = raman_spectrum(alpha, SpectrumOptions(dt_fs=1.0, max_corr_fs=800.0, laser_cm=18797.0))
    np.testing.assert_allclose(
        stokes.intensities["iso"], plain.intensities["iso"] * (18797.0 - nu) ** 4
    )


# ---- total dipole --------------------------------------------------------------------------


def _drifting_system(cell: np.ndarray, n: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    """Three atoms in a cell; atom 0 drifts through a face, others vibrate. Returns (true, wrapped)."""
    t = np.arange(n) * 1e-15
    frac = np.empty((n, 3, 3))
    frac[:, 0] = np.array([0.9, 0.5, 0.5]) + np.outer(np.arange(n) / n, [0.3, 0.05, 0.0])
    frac[:, 1] = [0.3, 0.3, 0.3]
    frac[:, 2] = [0.6, 0.7, 0.2]
    frac[:, 1:, 0] += 0.01 * np.cos(2 * np.pi * C_CM_S * 1500 * t)[:, None]
    true = frac @ cell
    wrapped = (frac % 1.0) @ cell
    return true, wrapped


@pytest.mark.parametrize(
    "cell",
    [np.diag([10.0, 11.0, 12.0]), np.array([[10.0, 0.0, 0.0], [3.0, 9.0, 0.0], [-2.0, 1.5, 8.0]])],
)
def test_wrapped_atom_gives_same_spectrum_after_unwrapping(cell: np.ndarray) -> None:
    true, wrapped = _drifting_system(cell)
    assert np.abs(np.diff(wrapped, axis=0)).max() > 5.0  # the wrap really jumps
    unwrapped = unwrap_positions(wrapped, np.broadcast_to(cell, (len(wrapped), 3, 3)), True)
    np.testing.assert_allclose(unwrapped, true, atol=1e-9)
    z = np.array([1.0, -0.5, -0.5])
    opts = SpectrumOptions(dt_fs=1.0, max_corr_fs=400.0)

    def ir(coords: np.ndarray) -> np.ndarray:
        return ir_spectrum(np.einsum("fai,a->fi", coords, z), opts).intensities["ir"]

    np.testing.assert_allclose(ir(unwrapped), ir(true), rtol=1e-8, atol=1e-10 * ir(true).max())
    assert not np.allclose(ir(wrapped), ir(true), rtol=0.1)


def test_unwrap_leaves_non_periodic_directions_alone() -> None:
    cell = np.diag([5.0, 5.0, 5.0])
    coords = np.zeros((3, 1, 3))
    coords[:, 0] = [[4.9, 4.9, 4.9], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]]
    out = unwrap_positions(coords, cell, [True, False, True])
    np.testing.assert_allclose(out[:, 0, 0], [4.9, 5.1, 5.2])
    np.testing.assert_allclose(out[:, 0, 1], [4.9, 0.1, 0.2])
    np.testing.assert_allclose(unwrap_positions(coords, None, True), coords)
    with pytest.raises(DataError, match="frame 0"):
        unwrap_positions(coords, np.zeros((3, 3)), True)


def test_wannier_total_dipole_for_water() -> None:
    o, h1, h2 = np.array([1.0, 2.0, 3.0]), np.array([1.9, 2.3, 3.0]), np.array([0.7, 2.9, 3.1])
    delta = np.array([0.1, -0.2, 0.05])
    coords = np.stack([o, h1, h2])[None].repeat(2, axis=0)
    coords[1] += 4.0  # a rigid translation must not change a neutral molecule's dipole
    deltas = np.stack([delta, delta])[:, None, :]
    atype, sel = np.array([0, 1, 1]), np.array([True, False, False])
    m = wannier_total_dipole(coords, deltas, atype, {0: 6.0, 1: 1.0}, -8.0, sel)
    expected = 6 * o + h1 + h2 - 8 * (o + delta)  # written out from the doc's formula
    np.testing.assert_allclose(m, [expected, expected], atol=1e-12)
    full = np.zeros((2, 3, 3))
    full[:, 0] = delta
    np.testing.assert_allclose(wannier_total_dipole(coords, full, atype, [6.0, 1.0], -8.0, sel), m)
    with pytest.raises(DataError, match=r"type\(s\) \[1\]"):
        wannier_total_dipole(coords, deltas, atype, {0: 6.0}, -8.0, sel)
    with pytest.raises(DataError, match="wannier_deltas"):
        wannier_total_dipole(coords, np.zeros((2, 2, 3)), atype, [6.0, 1.0], -8.0, sel)


# ---- validation and output -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"dt_fs": 0.0}, "dt_fs"),
        ({"dt_fs": -1.0}, "dt_fs"),
        ({"dt_fs": float("nan")}, "dt_fs"),
        ({"dt_fs": "1"}, "dt_fs"),
        ({"dt_fs": 1.0, "temperature_k": 0.0}, "temperature_k"),
        ({"dt_fs": 1.0, "window": "blackman"}, "window"),
        ({"dt_fs": 1.0, "correction": "quantum"}, "correction"),
        ({"dt_fs": 1.0, "zero_pad": 0.5}, "zero_pad"),
        ({"dt_fs": 1.0, "max_corr_fs": -5.0}, "max_corr_fs"),
        ({"dt_fs": 1.0, "freq_max_cm": 0.0}, "freq_max_cm"),
        ({"dt_fs": 1.0, "derivative": 1}, "derivative"),
        ({"dt_fs": 1.0, "raman_reduced": True, "laser_cm": 19000.0}, "laser_cm"),
    ],
)
def test_option_validation_names_the_option(kwargs: dict, path: str) -> None:
    with pytest.raises(ConfigError) as err:
        SpectrumOptions(**kwargs)
    assert err.value.path == path and path in str(err.value)


def test_validation_against_the_data() -> None:
    m = cosines(100, 1.0, [1000.0], [1.0])
    with pytest.raises(ConfigError, match="max_corr_fs"):
        ir_spectrum(m, SpectrumOptions(dt_fs=1.0, max_corr_fs=500.0))
    with pytest.raises(ConfigError, match="laser_cm"):
        raman_spectrum(np.ones((100, 9)), SpectrumOptions(dt_fs=1.0, laser_cm=3000.0))
    with pytest.raises(ConfigError, match="unknown spectrum option"):
        SpectrumOptions.from_mapping({"dt_fs": 1.0, "windw": "hann"})
    with pytest.raises(ConfigError, match="metadata"):
        ir_spectrum(m, SpectrumOptions(dt_fs=1.0), metadata={"dt_fs": 2})
    bad = m.copy()
    bad[57, 1] = np.nan
    with pytest.raises(DataError, match="frame 57"):
        ir_spectrum([m, bad], SpectrumOptions(dt_fs=1.0))
    with pytest.raises(DataError, match="trajectory 0: shape"):
        ir_spectrum(m[:, :2], SpectrumOptions(dt_fs=1.0))
    with pytest.raises(DataError, match="at least 4"):
        raman_spectrum(np.ones((3, 3, 3)), SpectrumOptions(dt_fs=1.0))


def test_to_dict_and_csv() -> None:
    m = cosines(500, 1.0, [1000.0], [1.0])
    opts = SpectrumOptions.from_mapping({"dt_fs": 1.0, "window": "hann"})
    spec = raman_spectrum(
        np.ones((500, 1, 1)) * np.eye(3) + m[:, 0, None, None],
        opts,
        metadata={"model_id": "m-1", "dipole_mode": "n/a"},
    )
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["metadata"]["model_id"] == "m-1" and d["metadata"]["window"] == "hann"
    for key in (
        "units",
        "grid_spacing_cm",
        "nyquist_cm",
        "resolution_cm",
        "correction",
        "temperature_k",
        "n_frames",
        "n_trajectories",
        "dt_fs",
        "max_corr_fs",
    ):
        assert key in d["metadata"]
    assert set(d["intensities"]) == {"iso", "aniso", "vv", "vh"}
    lines = spec.to_csv().splitlines()
    assert lines[0] == "wavenumber_cm,iso,aniso,vv,vh"
    table = np.loadtxt(lines[1:], delimiter=",")
    np.testing.assert_allclose(table[:, 0], spec.wavenumber_cm, rtol=1e-9)
    np.testing.assert_allclose(table[:, 3], spec.intensities["vv"], rtol=1e-9, atol=1e-300)
