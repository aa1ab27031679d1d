"""Dielectric response of a periodic system from its total dipole (formulas: docs/spectra.md).

Static (tin-foil / conducting boundary conditions, as Ewald-summed MD and periodic DFT):
    ε₀_static = ε∞ + (⟨M²⟩ − ⟨M⟩²) / (3 ε₀ V k_B T)                              [SI]
with its statistical error from block averaging. ε∞ is the electronic part, given by the
user or from a polarizability model: ε∞ = 1 + 4π⟨ᾱ_cell⟩/V with ᾱ_cell the cell's mean
polarizability volume (Å³, α_SI/4πε₀).

Frequency dependent: ε''(ω) = n(ω)α(ω)·c/ω (the IR line shape, classical / harmonic
correction: ε''(ω) = βω/(6Vε₀)·∫⟨M(0)·M(t)⟩e^{−iωt}dt) and ε'(ω) by Kramers–Kronig,
    ε'(ω) = ε∞ + (2/π) P∫₀^∞ ω' ε''(ω') / (ω'² − ω²) dω',
so that ε'(0) equals the static constant (exactly, when the grid holds the whole band).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import fft as sfft

from model.errors import ConfigError, DataError
from model.spectra import ir_spectrum
from model.spectra_units import E_CHARGE, EPS0, K_B
from model.spectrum_options import Spectrum, SpectrumOptions

F64 = NDArray[np.float64]
DEFAULT_BLOCKS = 5


def _series(dipoles: ArrayLike | Sequence[ArrayLike]) -> list[F64]:
    items = list(dipoles) if isinstance(dipoles, list | tuple) else [dipoles]
    out = [np.asarray(m, dtype=np.float64).reshape(-1, 3) for m in items]
    if not out or any(len(m) < 2 for m in out):
        raise DataError("the static dielectric constant needs at least 2 frames per trajectory")
    return out


def fluctuation_eps(variance_e2a2: float, volume_a3: float, temperature_k: float) -> float:
    """(⟨M²⟩ − ⟨M⟩²)/(3 ε₀ V k_B T) for the variance Σ_a var(M_a) in (e·Å)²."""
    return variance_e2a2 * (E_CHARGE * 1e-10) ** 2 / (3.0 * EPS0 * volume_a3 * 1e-30 * K_B * temperature_k)


def static_dielectric(dipoles: ArrayLike | Sequence[ArrayLike], volume_a3: float, temperature_k: float, *,
                      eps_inf: float = 1.0, n_blocks: int = DEFAULT_BLOCKS) -> dict[str, Any]:
    """ε from total-dipole fluctuations of one or more trajectories [nf, 3] (e·Å), with the
    standard error from n_blocks contiguous blocks per trajectory (the block estimates are
    nearly independent when a block is much longer than the dipole's correlation time)."""
    if not (volume_a3 > 0 and temperature_k > 0 and eps_inf > 0):
        raise ConfigError("volume, temperature and ε∞ must be > 0", path="volume_a3")
    series = _series(dipoles)
    # pooled variance around each trajectory's own mean
    dev = np.concatenate([m - m.mean(axis=0) for m in series])
    eps = eps_inf + fluctuation_eps(float((dev**2).sum(axis=1).mean()), volume_a3, temperature_k)
    blocks = []
    for m in series:
        size = len(m) // n_blocks
        if size < 2:
            continue
        for b in range(n_blocks):
            block = m[b * size:(b + 1) * size]
            var = float(((block - block.mean(axis=0)) ** 2).sum(axis=1).mean())
            blocks.append(eps_inf + fluctuation_eps(var, volume_a3, temperature_k))
    error = float(np.std(blocks, ddof=1) / math.sqrt(len(blocks))) if len(blocks) >= 2 else None
    return {"eps_static": eps, "error": error, "error_kind": f"block average ({len(blocks)} blocks)",
            "eps_inf": eps_inf, "volume_a3": volume_a3, "temperature_k": temperature_k,
            "formula": "ε = ε∞ + (⟨M²⟩-⟨M⟩²)/(3ε₀Vk_BT), tin-foil boundary conditions (SI)"}


def eps_inf_from_polarizability(polarizabilities: ArrayLike, volume_a3: float) -> float:
    """ε∞ = 1 + 4π⟨Tr α/3⟩/V for the cell's polarizability [nf, 9] (polarizability volume, Å³)."""
    a = np.asarray(polarizabilities, dtype=np.float64).reshape(-1, 3, 3)
    return 1.0 + 4.0 * math.pi * float(np.trace(a, axis1=1, axis2=2).mean() / 3.0) / volume_a3


def kramers_kronig_real(nu: F64, imag: F64) -> F64:
    """(2/π) P∫₀^∞ ν' ε''(ν')/(ν'² − ν²) dν' on a uniform grid starting at 0: the odd extension
    of ε'' and a Hilbert transform by FFT (zero-padded against wrap-around)."""
    n = nu.shape[0]
    odd = np.concatenate([-imag[:0:-1], imag])  # ε''(−ν) = −ε''(ν); grid −ν_max … ν_max
    size = sfft.next_fast_len(8 * odd.shape[0])
    spec = sfft.fft(odd, size)
    k = sfft.fftfreq(size)
    # Re χ(ν) = (1/π) P∫ χ''(ν')/(ν' − ν) dν' = −H[χ''](ν), H[f]: ifft(−i·sign(k)·fft(f))
    hilbert = sfft.ifft(-1j * np.sign(k) * spec).real[: odd.shape[0]]
    return np.asarray(-hilbert[n - 1:], dtype=np.float64)


def dielectric_spectrum(dipoles: ArrayLike | Sequence[ArrayLike], options: SpectrumOptions, *, volume_a3: float,
                        eps_inf: float | None = None, metadata: dict[str, Any] | None = None) -> Spectrum:
    """ε''(ν̃) from the IR line shape and ε'(ν̃) by Kramers–Kronig; the static ε from the
    fluctuations in metadata["static"]."""
    eps_inf = eps_inf if eps_inf is not None else (options.eps_inf or 1.0)
    # default: the direct form ε'' ∝ ω·FT⟨δM·δM⟩, whose Kramers–Kronig static limit is the
    # fluctuation formula on the same data (the derivative form's noise would be weighted by 1/ω²)
    derivative = options.derivative if options.derivative is not None else False
    ir = ir_spectrum(dipoles, dataclasses.replace(options, units="absorption", bands=None, derivative=derivative),
                     volume_a3=volume_a3)
    nu = ir.wavenumber_cm
    nalpha = ir.intensities["ir"]  # cm⁻¹
    imag = np.divide(nalpha, 2.0 * math.pi * nu, out=np.zeros_like(nalpha), where=nu > 0)  # c/ω = 1/(2πν̃)
    real = eps_inf + kramers_kronig_real(nu, imag)
    static = static_dielectric(dipoles, volume_a3, options.temperature_k, eps_inf=eps_inf)
    meta = {k: v for k, v in ir.metadata.items() if k not in ("units", "units_kind", "formula", "normalisation")}
    meta.update(kind="dielectric", units="dimensionless (relative permittivity)", eps_inf=eps_inf,
                formula="ε''(ω) = n(ω)α(ω)·c/ω; ε'(ω) = ε∞ + (2/π)P∫ω'ε''(ω')/(ω'²-ω²)dω' (Kramers–Kronig)",
                static=static, eps_real_at_zero=float(real[0]), **(metadata or {}))
    return Spectrum(nu, {"eps_imag": imag, "eps_real": real}, meta)
