"""Spectra with error bars: every committee member's spectrum of the same trajectory, then
mean ± std per grid point and the main peaks with their spread over members.

The spectrum is quadratic in the predicted series, so the committee spectrum is the mean
of the members' spectra (not the spectrum of the mean series); its std per grid point is
the band the page draws. Std over members is the population std (ddof = 0), like the
per-frame deviations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.signal import find_peaks

from model.spectra_units import band_table, integrate_band
from model.spectrum_options import Spectrum

MAX_PEAKS = 8
PEAK_PROMINENCE = 0.05  # of the channel's maximum
PEAK_WINDOW_CM = 60.0  # a member's peak is its maximum within ± this (or half the gap to a neighbour)


def peak_spread(nu: NDArray[np.float64], mean: NDArray[np.float64], members: NDArray[np.float64],
                channel: str) -> list[dict[str, Any]]:
    """Peaks of the mean spectrum (prominence ≥ PEAK_PROMINENCE of its maximum, the
    MAX_PEAKS strongest, in wavenumber order); for each, every member's position (its
    maximum in the window around the peak) and their mean and std."""
    top = float(mean.max()) if mean.size else 0.0
    if top <= 0:
        return []
    found, props = find_peaks(mean, prominence=PEAK_PROMINENCE * top)
    order = np.argsort(props["prominences"])[::-1][:MAX_PEAKS]
    idx = np.sort(found[order])
    spacing = float(nu[1] - nu[0]) if nu.size > 1 else 1.0
    out = []
    for j, i in enumerate(idx):
        left = nu[i] - PEAK_WINDOW_CM if j == 0 else max(nu[i] - PEAK_WINDOW_CM, 0.5 * (nu[idx[j - 1]] + nu[i]))
        right = (nu[i] + PEAK_WINDOW_CM if j == idx.size - 1
                 else min(nu[i] + PEAK_WINDOW_CM, 0.5 * (nu[i] + nu[idx[j + 1]])))
        window = np.flatnonzero((nu >= left - 0.5 * spacing) & (nu <= right + 0.5 * spacing))
        at = window[np.argmax(members[:, window], axis=1)]  # [K] grid index of each member's maximum
        positions = nu[at]
        heights = members[np.arange(members.shape[0]), at]
        out.append({"channel": channel, "wavenumber_cm": float(nu[i]), "member_cm": positions.tolist(),
                    "mean_cm": float(positions.mean()), "std_cm": float(positions.std()),
                    "height": float(mean[i]), "height_std": float(heights.std())})
    return out


def _bands(nu: NDArray[np.float64], mean: dict[str, NDArray[np.float64]], spectra: Sequence[Spectrum]
           ) -> list[dict[str, Any]] | None:
    """The mean's band table, each row with the members' spread of its integral."""
    first = spectra[0].bands
    if not first:
        return first
    ranges = [(float(r["lo"]), float(r["hi"])) for r in first]
    rows = band_table(nu, mean, ranges, str(first[0]["unit"]))
    channel = next(iter(mean))
    for row, (lo, hi) in zip(rows, ranges, strict=True):
        each = np.array([integrate_band(nu, s.intensities[channel], lo, hi) for s in spectra])
        row["committee_std"] = float(each.std())
        row["committee_members"] = each.tolist()
    return rows


def committee_spectrum(spectra: Sequence[Spectrum]) -> Spectrum:
    """K member spectra on one grid → their mean, with ``std`` per channel and ``peaks``."""
    first = spectra[0]
    nu = first.wavenumber_cm
    for s in spectra[1:]:
        if s.wavenumber_cm.shape != nu.shape or not np.array_equal(s.wavenumber_cm, nu):
            raise ValueError("member spectra on different grids")
    mean, std, peaks = {}, {}, []
    for channel in first.intensities:
        stack = np.stack([s.intensities[channel] for s in spectra])  # [K, n_grid]
        mean[channel] = stack.mean(axis=0)
        std[channel] = stack.std(axis=0)
        peaks += peak_spread(nu, mean[channel], stack, channel)
    metadata = {**first.metadata, "committee_size": len(spectra),
                "committee": "intensities are the mean of the members' spectra; intensities_std their "
                             "std per grid point (population, ddof = 0); peaks: positions per member"}
    return Spectrum(wavenumber_cm=nu, intensities=mean, metadata=metadata, bands=_bands(nu, mean, spectra),
                    std=std, peaks=peaks)
