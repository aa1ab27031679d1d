"""IR and Raman spectra from time series of dipoles and polarizabilities (numpy only).

Conventions (formulas: docs/spectra.md):
- Autocorrelations are FFT-based, *unbiased* (lag k divided by the N-k pairs) and pooled
  over trajectories (sums and pair counts added before dividing). The non-derivative
  form subtracts each trajectory's mean first (removes the ω = 0 / Rayleigh line).
- Derivative form: forward differences x(t+Δt)-x(t) / Δt. Their spectrum equals
  ω_fd² S(ω) with ω_fd = 2 sin(ωΔt/2)/Δt, which is divided out exactly, so both forms
  estimate the same quantity (otherwise -7 % at 3400 cm⁻¹ for Δt = 2 fs). Default
  (derivative=None): derivative form for IR, direct form for Raman, because Raman needs
  S = FT⟨α̇α̇⟩/ω², which multiplies the noise floor by 1/ω² below ~the window width
  (the Raman derivative form is available and reports 0 at ω = 0, where it is 0/0).
- Lag window on lags 0..τ_max: "gaussian" exp(-t²/2σ²) with σ = τ_max/3 (w(τ_max) ≈ 0.011),
  "hann" 0.5(1+cos(πt/τ_max)), "none" (plain truncation).
- Transform S(ω) = ∫ C(t) e^{-iωt} dt over t ∈ (-∞, ∞), evaluated as a cosine sum with
  zero padding to ⌈2·n_lag·zero_pad⌉ (rounded up to a fast FFT length).
- Quantum corrections Q(ω) (x = βħω) turn the classical spectrum into the quantum one,
  S_q = Q·S_cl. IR uses the quantum fluctuation–dissipation relation
  nα ∝ ω(1-e^{-x})·S_q, i.e. ω²S_cl·Q·(1-e^{-x})/x: the harmonic Q gives exactly the
  classical ω²S_cl (Ramírez et al., JCP 121, 3973, 2004), Kubo 2·tanh(x/2)/x, Schofield
  2·sinh(x/2)/x. "none" is the classical limit ħ → 0 everywhere (so for IR it equals
  "harmonic"; for Raman Q = 1). Raman: I = Q·S_cl per channel; reduced spectra multiply by
  ν̃(1-e^{-x}); with a laser wavenumber ν̃_in, Stokes intensities multiply by (ν̃_in-ν̃)⁴
  (with the harmonic Q this is the doc's (ν̃_in-ν̃)⁴/ν̃/(1-e^{-x})·FT⟨α̇α̇⟩ up to a constant).
- Units: dipoles e·Å, polarizabilities Å³, time fs. IR is absolute by default
  (model.spectra_units): n(ω)α(ω) in cm⁻¹ with a volume, else the molar absorption per
  wavenumber (km mol⁻¹ per cm⁻¹, band integrals in km/mol); metadata["units"] is the unit,
  metadata["formula"] the formula. Raman spectra are relative (their unit stated).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft

from model.errors import ConfigError, DataError
from model.spectra_units import (
    BAND_UNITS,
    C2_CM_K,
    C_CM_PER_FS,
    C_LIGHT,
    UNIT_LABELS,
    absorption_scale,
    band_table,
    molar_scale,
    resolve_ir_units,
)
from model.spectrum_options import CORRECTIONS, WINDOWS, Spectrum, SpectrumOptions, require_positive
from model.trajectory import unwrap_positions, wannier_total_dipole

__all__ = [
    "CORRECTIONS",
    "WINDOWS",
    "Spectrum",
    "SpectrumOptions",
    "autocorrelation",
    "hz_to_wavenumber",
    "ir_spectrum",
    "lag_window",
    "nyquist_cm",
    "quantum_correction",
    "raman_spectrum",
    "unwrap_positions",  # total-dipole helpers live with the positions (trajectory.py)
    "wannier_total_dipole",
    "wavenumber_to_hz",
]

DEFAULT_MAX_CORR_FS = 2000.0
DEFAULT_FREQ_MAX_CM = 5000.0

FloatArray = NDArray[np.float64]


def hz_to_wavenumber(freq_hz: ArrayLike) -> FloatArray:
    """ν̃ [cm⁻¹] = f / (100 c)."""
    return np.asarray(freq_hz, dtype=np.float64) / (100.0 * C_LIGHT)


def wavenumber_to_hz(wavenumber_cm: ArrayLike) -> FloatArray:
    return np.asarray(wavenumber_cm, dtype=np.float64) * 100.0 * C_LIGHT


def nyquist_cm(dt_fs: float) -> float:
    """Nyquist limit 1/(2 Δt c) in cm⁻¹ (16 678 cm⁻¹ at 1 fs)."""
    return 1.0 / (2.0 * dt_fs * C_CM_PER_FS)


def quantum_correction(wavenumber_cm: ArrayLike, temperature_k: float, kind: str) -> FloatArray:
    """Q(ω) with S_quantum ≈ Q·S_classical; x = βħω = hcν̃/(k_B T). All → 1 as ω → 0."""
    x = C2_CM_K * np.asarray(wavenumber_cm, dtype=np.float64) / temperature_k
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "harmonic":
            return np.where(np.abs(x) > 1e-8, x / -np.expm1(-x), 1.0 + 0.5 * x)
        if kind == "kubo":
            return 2.0 / (1.0 + np.exp(-x))
        if kind == "schofield":
            return np.exp(0.5 * x)
    if kind == "none":
        return np.ones_like(x)
    raise ConfigError(f"must be one of {CORRECTIONS}, got {kind!r}", path="correction")


def _ir_factor(nu: FloatArray, options: SpectrumOptions) -> FloatArray:
    """Q·(1-e^{-x})/x: what multiplies the classical ω²S_cl in the quantum IR formula."""
    if options.correction == "none":
        return np.ones_like(nu)
    return quantum_correction(nu, options.temperature_k, options.correction) / quantum_correction(
        nu, options.temperature_k, "harmonic"
    )


# ---- time series → spectrum ----------------------------------------------------------------


def _as_series(data: Any, name: str, shapes: Sequence[tuple[int, ...]]) -> list[FloatArray]:
    """One array or a list of arrays (one per trajectory) → list of [nframes, ...]."""
    many = isinstance(data, list | tuple) and all(isinstance(a, np.ndarray) for a in data)
    items = list(data) if many else [data]
    if not items:
        raise DataError(f"{name}: no trajectories given")
    out = []
    for i, item in enumerate(items):
        arr = np.asarray(item, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[1:] not in shapes:
            want = " or ".join(str(["nframes", *s]) for s in shapes)
            raise DataError(f"{name} of trajectory {i}: shape {arr.shape}, expected {want}")
        if arr.shape[0] < 4:
            raise DataError(f"{name} of trajectory {i}: {arr.shape[0]} frames, need at least 4")
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            raise DataError(f"{name} of trajectory {i}: NaN/inf in frame {int(np.argmax(bad))}")
        out.append(arr.reshape(arr.shape[0], -1))
    return out


def autocorrelation(series: Sequence[FloatArray], n_lag: int) -> FloatArray:
    """Unbiased C[k] = ⟨x(t)·x(t+k)⟩ (dot over columns), pooled over the series; FFT-based."""
    total = np.zeros(n_lag)
    pairs = np.zeros(n_lag)
    for x in series:  # loop over trajectories only; frames are handled by the FFT
        n = x.shape[0]
        nfft = sfft.next_fast_len(2 * n - 1, real=True)
        spec = sfft.rfft(x, nfft, axis=0)
        acf = sfft.irfft(np.abs(spec) ** 2, nfft, axis=0)[:n_lag].sum(axis=1)
        total += acf
        pairs += n - np.arange(n_lag)
    return total / pairs


def lag_window(kind: str, n_lag: int) -> FloatArray:
    k = np.arange(n_lag, dtype=np.float64)
    kmax = max(n_lag - 1, 1)
    if kind == "gaussian":
        return np.exp(-0.5 * (3.0 * k / kmax) ** 2)
    if kind == "hann":
        return 0.5 * (1.0 + np.cos(np.pi * k / kmax))
    return np.ones(n_lag)


def _cosine_transform(
    acf: FloatArray, dt_fs: float, zero_pad: float
) -> tuple[FloatArray, FloatArray, int]:
    """∫ C(t) e^{-iωt} dt for an even C known on lags 0..L-1 → (ν̃ grid, spectrum, n_fft)."""
    n_lag = acf.shape[0]
    n_fft = sfft.next_fast_len(math.ceil(2 * n_lag * zero_pad), real=True)
    buf = np.zeros(n_fft)
    buf[:n_lag] = acf
    buf[n_fft - n_lag + 1 :] = acf[1:][::-1]  # negative lags: C(-t) = C(t)
    spec = sfft.rfft(buf).real * dt_fs
    nu = sfft.rfftfreq(n_fft, d=dt_fs) / C_CM_PER_FS  # 1/fs → cm⁻¹
    return nu, spec, n_fft


def plan_lags(series: list[FloatArray], options: SpectrumOptions) -> tuple[int, dict[str, Any]]:
    dt = options.dt_fs
    n_min = min(s.shape[0] for s in series)  # shortest series actually correlated
    max_corr = options.max_corr_fs
    if max_corr is None:
        max_corr = min(0.5 * (n_min - 1) * dt, DEFAULT_MAX_CORR_FS)
    n_lag = math.floor(max_corr / dt + 1e-9) + 1
    if n_lag > n_min:
        raise ConfigError(
            f"{max_corr:g} fs is longer than the shortest trajectory ({(n_min - 1) * dt:g} fs "
            f"of correlated data)",
            path="max_corr_fs",
        )
    if n_lag < 2:
        raise ConfigError(f"{max_corr:g} fs is shorter than dt_fs={dt:g}", path="max_corr_fs")
    return n_lag, {"max_corr_fs": (n_lag - 1) * dt, "n_lags": n_lag}


def windowed_transform(
    acf: FloatArray, options: SpectrumOptions
) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    """Window + cosine transform + truncation of the grid to freq_max; returns grid metadata."""
    n_lag = acf.shape[0]
    dt = options.dt_fs
    nu, spec, n_fft = _cosine_transform(
        acf * lag_window(options.window, n_lag), dt, options.zero_pad
    )
    nyq = nyquist_cm(dt)
    wanted = DEFAULT_FREQ_MAX_CM if options.freq_max_cm is None else options.freq_max_cm
    fmax = min(wanted, nyq)
    keep = nu <= fmax * (1 + 1e-12)
    tau = (n_lag - 1) * dt
    # FWHM (cm⁻¹) of the window's transform, i.e. the width it alone gives a sharp line
    gauss = 2.0 * math.sqrt(2.0 * math.log(2.0)) * 3.0 / (2.0 * math.pi)  # σ_t = τ/3
    fwhm = {"gaussian": gauss, "hann": 1.0, "none": 0.604}[options.window] / (tau * C_CM_PER_FS)
    meta = {
        "grid_spacing_cm": 1.0 / (n_fft * dt * C_CM_PER_FS),
        "nyquist_cm": nyq,
        "resolution_cm": 1.0 / (n_lag * dt * C_CM_PER_FS),
        "window_fwhm_cm": fwhm,
        "freq_max_cm": float(nu[keep][-1]),
        "n_fft": n_fft,
    }
    if options.window == "gaussian":
        meta["window_sigma_fs"] = tau / 3.0
    return nu[keep], spec[keep], meta


def omega_rad_fs(nu: FloatArray) -> FloatArray:
    return 2.0 * math.pi * C_CM_PER_FS * nu  # rad/fs


def omega_forward_difference(nu: FloatArray, dt: float) -> FloatArray:
    """Effective ω of the forward difference: |e^{iωΔt}-1|/Δt."""
    return 2.0 * np.sin(0.5 * omega_rad_fs(nu) * dt) / dt


def _prepare(
    series: list[FloatArray], options: SpectrumOptions, derivative: bool
) -> list[FloatArray]:
    if derivative:
        return [np.diff(s, axis=0) / options.dt_fs for s in series]
    return [s - s.mean(axis=0) for s in series]


def _base_meta(
    kind: str, options: SpectrumOptions, series: list[FloatArray], derivative: bool
) -> dict[str, Any]:
    frames = [int(s.shape[0]) for s in series]
    return {
        "kind": kind,
        "form": "derivative" if derivative else "autocorrelation",
        "estimator": "unbiased, pooled over trajectories",
        "window": options.window,
        "correction": options.correction,
        "temperature_k": options.temperature_k,
        "dt_fs": options.dt_fs,
        "zero_pad": options.zero_pad,
        "n_frames": sum(frames),
        "n_frames_per_trajectory": frames,
        "n_trajectories": len(series),
    }


def _finish(
    kind: str,
    nu: FloatArray,
    intensities: dict[str, FloatArray],
    meta: dict[str, Any],
    extra: Mapping[str, Any] | None,
) -> Spectrum:
    for key, arr in intensities.items():
        if not np.isfinite(arr).all():
            raise ConfigError(
                f"{kind} channel {key!r} overflows (quantum correction at this temperature?)",
                path="temperature_k",
            )
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ConfigError(f"metadata keys {clash} are reserved by the spectrum", path="metadata")
    return Spectrum(nu, intensities, {**dict(extra or {}), **meta})


IR_FORMULAS = {
    "absorption": "n(ω)α(ω) = β/(6 c V ε₀) · ∫⟨Ṁ(0)·Ṁ(t)⟩e^{-iωt}dt × Q(ω)(1-e^{-βħω})/(βħω)  [SI, Napierian]",
    "molar": "ε(ν̃) = n(ω)α(ω)·V·N_A/N = β N_A/(6 c ε₀ N) · ∫⟨Ṁ(0)·Ṁ(t)⟩e^{-iωt}dt × Q(ω)(1-e^{-βħω})/(βħω)"
             "  [SI, Napierian, per molecule; ∫ε dν̃ over a band = its intensity in km/mol]",
    "relative": "ω²·∫⟨M(0)·M(t)⟩e^{-iωt}dt × Q(ω)(1-e^{-βħω})/(βħω)",
}
CONSTANTS = {"c_m_s": C_LIGHT, "k_B_J_K": 1.380_649e-23, "eps0_F_m": 8.854_187_8128e-12,
             "N_A_mol": 6.022_140_76e23, "e_C": 1.602_176_634e-19}


def _ir_relative(series: list[FloatArray], options: SpectrumOptions, deriv: bool, n_lag: int
                 ) -> tuple[FloatArray, FloatArray, dict[str, Any]]:
    """ω²S_M(ω)·(correction) in (e·Å)²/fs of (pooled) derivative or plain series."""
    nu, spec, grid_meta = windowed_transform(autocorrelation(series, n_lag), options)
    if deriv:  # undo the forward-difference response, see module docstring
        w, wfd = omega_rad_fs(nu), omega_forward_difference(nu, options.dt_fs)
        spec = spec * np.divide(w**2, wfd**2, out=np.ones_like(w), where=wfd > 0)
    else:
        spec = spec * omega_rad_fs(nu) ** 2
    return nu, spec * _ir_factor(nu, options), grid_meta


def ir_spectrum(
    dipoles: ArrayLike | Sequence[ArrayLike],
    options: SpectrumOptions,
    *,
    volume_a3: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Spectrum:
    """IR from total dipoles [nframes, 3] (e·Å) or a list of such trajectories (pooled).

    Units (options.units, spectra_units): absorption n(ω)α(ω) in cm⁻¹ (needs volume_a3),
    molar ε(ν̃) in km mol⁻¹ per cm⁻¹ for options.molecules molecules per frame (default 1),
    relative ω²S_M in (e·Å)²/fs; "auto" is absorption with a volume and no molecule count,
    else molar. With options.bands, ``Spectrum.bands`` holds each band's integral (and its
    standard error over trajectories when there are several).
    """
    require_positive("volume_a3", volume_a3, allow_none=True)
    units = resolve_ir_units(options.units, volume_a3, options.molecules)
    raw = _as_series(dipoles, "dipoles", [(3,)])
    deriv = options.derivative is not False  # default: derivative form
    series = _prepare(raw, options, deriv)
    n_lag, lag_meta = plan_lags(series, options)
    nu, spec, grid_meta = _ir_relative(series, options, deriv, n_lag)
    molecules = options.molecules or 1
    scale = {"absorption": lambda: absorption_scale(options.temperature_k, float(volume_a3 or 0)),
             "molar": lambda: molar_scale(options.temperature_k, molecules),
             "relative": lambda: 1.0}[units]()
    meta: dict[str, Any] = {
        **_base_meta("ir", options, raw, deriv), **lag_meta, **grid_meta,
        "units": UNIT_LABELS[units], "units_kind": units, "formula": IR_FORMULAS[units],
        "conventions": "SI (Gaussian texts: 4πε₀ → 1); Napierian absorption (natural log); "
                       "M in e·Å, t in fs; ν̃ = ω/(2πc)",
    }
    if units != "relative":
        meta["constants"] = CONSTANTS
    if units == "absorption":
        meta["volume_a3"] = volume_a3
        meta["normalisation"] = "per volume (the whole periodic cell)"
    elif units == "molar":
        meta["molecules"] = molecules
        meta["normalisation"] = f"per molecule ({molecules} per frame)"
        if volume_a3 is not None:
            meta["volume_a3"] = volume_a3
    out = _finish("ir", nu, {"ir": spec * scale}, meta, metadata)
    if options.bands is not None:
        per = [{"ir": _ir_relative([s], options, deriv, n_lag)[1] * scale} for s in series] if len(series) > 1 else []
        out.bands = band_table(nu, out.intensities, options.bands, BAND_UNITS[units], per)
    return out


def raman_spectrum(
    polarizabilities: ArrayLike | Sequence[ArrayLike],
    options: SpectrumOptions,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Spectrum:
    """Raman iso/aniso/VV/VH from α [nframes, 9] (row-major) or [nframes, 3, 3] (Å³).

    With options.bands each band row holds every channel's integral and the depolarisation
    ratio ρ = ∫I_VH/∫I_VV (0 ≤ ρ ≤ 3/4)."""
    raw = _as_series(polarizabilities, "polarizabilities", [(9,), (3, 3)])
    alpha = [a.reshape(-1, 3, 3) for a in raw]
    alpha = [0.5 * (a + a.transpose(0, 2, 1)) for a in alpha]  # symmetrise first
    mean = [np.trace(a, axis1=1, axis2=2)[:, None] / 3.0 for a in alpha]
    aniso = [(a - m[:, :, None] * np.eye(3)).reshape(-1, 9) for a, m in zip(alpha, mean, strict=True)]
    deriv = options.derivative is True  # default: direct form, see module docstring
    iso_s, aniso_s = _prepare(mean, options, deriv), _prepare(aniso, options, deriv)
    n_lag, lag_meta = plan_lags(iso_s, options)
    nu, s_iso, grid_meta = windowed_transform(autocorrelation(iso_s, n_lag), options)
    _, s_aniso, _ = windowed_transform(autocorrelation(aniso_s, n_lag), options)
    s_aniso = s_aniso * (2.0 / 15.0)
    if deriv:  # S_cl = FT⟨ẋẋ⟩ / ω_fd²; undefined (reported 0) at ω = 0
        wfd2 = omega_forward_difference(nu, options.dt_fs) ** 2
        inv = np.divide(1.0, wfd2, out=np.zeros_like(wfd2), where=wfd2 > 0)
        s_iso, s_aniso = s_iso * inv, s_aniso * inv
    factor = quantum_correction(nu, options.temperature_k, options.correction)
    units = "arb.: Å⁶·fs, FT of ⟨α(0)α(t)⟩ × correction"
    if options.raman_reduced:
        factor = factor * nu * -np.expm1(-C2_CM_K * nu / options.temperature_k)
        units = "arb.: Å⁶·fs·cm⁻¹, reduced ν̃(1-e^{-βħω})·I"
    if options.laser_cm is not None:
        if options.laser_cm <= nu[-1]:
            raise ConfigError(f"laser wavenumber {options.laser_cm:g} cm⁻¹ must exceed the grid maximum "
                              f"{nu[-1]:g} cm⁻¹", path="laser_cm")
        factor = factor * (options.laser_cm - nu) ** 4
        units = "arb.: Å⁶·fs·cm⁻⁴, Stokes (ν̃_in-ν̃)⁴·I"
    iso, ani = s_iso * factor, s_aniso * factor
    out = {"iso": iso, "aniso": ani, "vv": iso + ani, "vh": 0.75 * ani}
    meta = {
        **_base_meta("raman", options, raw, deriv), **lag_meta, **grid_meta, "units": units,
        "reduced": options.raman_reduced, "laser_cm": options.laser_cm,
        "temperature_factor": RAMAN_TEMPERATURE_NOTE.get(options.correction, ""),
    }
    spectrum = _finish("raman", nu, out, meta, metadata)
    if options.bands is not None:
        spectrum.bands = band_table(nu, spectrum.intensities, options.bands, "arb. (band integral)")
    return spectrum


RAMAN_TEMPERATURE_NOTE = {
    "harmonic": "Bose–Einstein: Q_harm = βħω·(n(ω)+1), n = 1/(e^{βħω}-1); the Stokes spectrum carries "
                "the (n+1) population factor as measured; raman_reduced divides it out",
    "kubo": "Kubo correction 2/(1+e^{-βħω}) (detailed balance, not the harmonic (n+1)·βħω)",
    "schofield": "Schofield correction e^{βħω/2}",
    "none": "classical: no Bose–Einstein factor",
}
