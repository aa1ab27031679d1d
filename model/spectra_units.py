"""Physical constants and the absolute units of spectra (numpy only; formulas: docs/spectra.md).

Everything is SI internally; inputs are in the library's units (dipole e·Å, time fs,
volume Å³, mass amu). The IR absorption of a sample is (SI, Napierian, McQuarrie §21)

    n(ω)α(ω) = β / (6 c V ε₀) · ∫ ⟨Ṁ(0)·Ṁ(t)⟩ e^{−iωt} dt        [m⁻¹ → reported in cm⁻¹]

and the molar (per molecule, N molecules in the frame) absorption per wavenumber is

    ε(ν̃) = n(ω)α(ω) · V N_A / N = β N_A / (6 c ε₀ N) · FT⟨Ṁ·Ṁ⟩     [km mol⁻¹ per cm⁻¹]

whose integral over a band, ∫ ε dν̃, is the band intensity in km/mol — the unit
quantum-chemistry codes print for harmonic intensities, A_k = N_A/(12 ε₀ c²)·|∂μ/∂Q_k|²
(Napierian, per molecule). For one classical harmonic mode both agree exactly (the
known-answer test). Gaussian-unit texts write the same prefactors with 4πε₀ → 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.errors import ConfigError

# SI 2019 exact values, except ε₀ and the atomic mass constant (CODATA 2018).
C_LIGHT = 299_792_458.0  # m/s, exact
H_PLANCK = 6.626_070_15e-34  # J s, exact
HBAR = H_PLANCK / (2.0 * math.pi)  # J s
K_B = 1.380_649e-23  # J/K, exact
E_CHARGE = 1.602_176_634e-19  # C, exact
N_AVOGADRO = 6.022_140_76e23  # 1/mol, exact
EPS0 = 8.854_187_8128e-12  # F/m, CODATA 2018
AMU = 1.660_539_066_60e-27  # kg, CODATA 2018
C_CM_PER_FS = C_LIGHT * 100.0 * 1e-15  # speed of light in cm/fs
C2_CM_K = H_PLANCK * C_LIGHT * 100.0 / K_B  # hc/k_B in cm·K (second radiation constant)
DEBYE_E_A = 1e-21 / C_LIGHT / (E_CHARGE * 1e-10)  # 1 D in e·Å (0.20819…)

# (e·Å)²/fs → (C·m)²/s: the unit of FT⟨Ṁ·Ṁ⟩ as the spectrum code computes it
FT_MDOT_SI = (E_CHARGE * 1e-10) ** 2 / 1e-15
# A = N_A/(12 ε₀ c²)·|∂μ/∂Q|² with ∂μ/∂Q in e·Å/(Å·√amu) = e/√amu, in km/mol (≈ 974.86)
KM_MOL_PER_E2_AMU = N_AVOGADRO / (12.0 * EPS0 * C_LIGHT**2) * E_CHARGE**2 / AMU / 1e3

IR_UNITS = ("auto", "absorption", "molar", "relative")
UNIT_LABELS = {
    "absorption": "cm^-1",
    "molar": "km mol^-1 (cm^-1)^-1",
    "relative": "(e·Å)^2/fs",
}
BAND_UNITS = {"absorption": "cm^-2", "molar": "km/mol", "relative": "(e·Å)^2/fs·cm^-1"}

FloatArray = NDArray[np.float64]


def absorption_scale(temperature_k: float, volume_a3: float) -> float:
    """FT⟨Ṁ·Ṁ⟩ in (e·Å)²/fs → n(ω)α(ω) in cm⁻¹: β/(6 c V ε₀), then m⁻¹ → cm⁻¹."""
    beta = 1.0 / (K_B * temperature_k)
    return FT_MDOT_SI * beta / (6.0 * C_LIGHT * volume_a3 * 1e-30 * EPS0) / 100.0


def molar_scale(temperature_k: float, molecules: float) -> float:
    """FT⟨Ṁ·Ṁ⟩ in (e·Å)²/fs → ε(ν̃) in km mol⁻¹ per cm⁻¹: β N_A/(6 c ε₀ N).

    SI gives ε in m²/mol; ∫ε dν̃ over ν̃ in m⁻¹ is m/mol. One cm⁻¹ is 100 m⁻¹ and one
    km/mol is 1000 m/mol, so m²/mol → km/mol per cm⁻¹ is × 100/1000 = 0.1."""
    beta = 1.0 / (K_B * temperature_k)
    return FT_MDOT_SI * beta * N_AVOGADRO / (6.0 * C_LIGHT * EPS0 * molecules) * 0.1


def number_density_mol_cm3(molecules: float, volume_a3: float) -> float:
    """Molar concentration N/(N_A V) in mol/cm³ (to scale molar ε to n·α: nα = ε·c·1e5)."""
    return molecules / (N_AVOGADRO * volume_a3 * 1e-24)


def resolve_ir_units(units: str, volume_a3: float | None, molecules: int | None) -> str:
    """'auto': molar when the molecules are counted or there is no volume, else absorption."""
    if units not in IR_UNITS:
        raise ConfigError(f"must be one of {IR_UNITS}, got {units!r}", path="units")
    if units == "absorption" and volume_a3 is None:
        raise ConfigError("absorption units (n·α in cm⁻¹) need a volume: a periodic cell or volume_a3",
                          path="volume_a3")
    if units == "auto":
        return "absorption" if volume_a3 is not None and molecules is None else "molar"
    return units


def parse_bands(text: str | Sequence[Any] | None) -> tuple[tuple[float, float], ...] | None:
    """'1000:2000,3000:4000' or [[1000, 2000], …] → ((1000.0, 2000.0), …); lo < hi, both ≥ 0."""
    if text is None:
        return None
    items: list[Any]
    if isinstance(text, str):
        items = [s.split(":") for s in filter(None, (p.strip() for p in text.split(",")))]
    else:
        items = [list(b) if isinstance(b, list | tuple) else [b] for b in text]
    out = []
    for item in items:
        try:
            if len(item) != 2:
                raise ValueError
            lo, hi = (float(v) for v in item)
        except (TypeError, ValueError):
            raise ConfigError(f"{item!r} is not a band LO:HI in cm⁻¹ (e.g. 1000:2000)", path="bands") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ConfigError(f"band {lo:g}:{hi:g}: need 0 ≤ LO < HI (cm⁻¹)", path="bands")
        out.append((lo, hi))
    if not out:
        raise ConfigError("no band given (e.g. 1000:2000,3000:4000)", path="bands")
    return tuple(out)


def integrate_band(nu: FloatArray, values: FloatArray, lo: float, hi: float) -> float:
    """∫_lo^hi values dν̃ by the trapezoid rule on the grid, the band edges interpolated."""
    inside = (nu > lo) & (nu < hi)
    x = np.concatenate([[lo], nu[inside], [hi]])
    y = np.concatenate([[np.interp(lo, nu, values)], values[inside], [np.interp(hi, nu, values)]])
    return float(np.trapezoid(y, x))


def band_table(nu: FloatArray, channels: dict[str, FloatArray], bands: Sequence[tuple[float, float]],
               unit: str, per_trajectory: Sequence[dict[str, FloatArray]] = ()) -> list[dict[str, Any]]:
    """One row per band: the integral of the first channel (``integral``), of every channel
    (``integrals``), and with ≥ 2 independent trajectories the standard error of the mean of
    the per-trajectory integrals (``error``; null otherwise). Raman rows add the
    depolarisation ratio ρ = ∫I_VH / ∫I_VV."""
    grid_max = float(nu[-1])
    first = next(iter(channels))
    rows = []
    for lo, hi in bands:
        if hi > grid_max:
            raise ConfigError(f"band {lo:g}:{hi:g} ends above the spectrum's grid ({grid_max:.0f} cm⁻¹)",
                              path="bands")
        ints = {k: integrate_band(nu, v, lo, hi) for k, v in channels.items()}
        row: dict[str, Any] = {"lo": lo, "hi": hi, "integral": ints[first], "unit": unit, "channel": first}
        if len(ints) > 1:
            row["integrals"] = ints
        if "vv" in ints and "vh" in ints:
            row["depolarization_ratio"] = ints["vh"] / ints["vv"] if ints["vv"] != 0 else None
        if len(per_trajectory) >= 2:
            each = np.array([integrate_band(nu, s[first], lo, hi) for s in per_trajectory])
            row["error"] = float(each.std(ddof=1) / math.sqrt(len(each)))
            row["error_kind"] = f"standard error over {len(each)} trajectories"
        else:
            row["error"] = None
        rows.append(row)
    return rows


def harmonic_intensity_km_mol(dmu_dq: ArrayLike) -> FloatArray:
    """A_k = N_A/(12 ε₀ c²)·|∂μ/∂Q_k|² in km/mol; dmu_dq [nmodes, 3] in e/√amu."""
    d = np.asarray(dmu_dq, dtype=np.float64).reshape(-1, 3)
    return KM_MOL_PER_E2_AMU * (d**2).sum(axis=1)
