"""Active learning: the frames a committee disagrees on, as DP-GEN picks them for energies.

Frames whose deviation d falls in [lo, hi) are candidates for labelling; d < lo is
"accurate" (the members agree: nothing to learn), d ≥ hi "failed" (too far from the
training data to be trusted even as a candidate — usually unphysical configurations).
Candidates are written as an unlabelled DeePMD-kit system (type.raw, type_map.raw,
set.000/coord.npy, box.npy or nopbc), with every frame's deviation and a histogram.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.committee import Committee, deviation
from model.errors import ConfigError
from model.inference import iter_predict

Criterion = Literal["atomic", "global"]
HISTOGRAM_BINS = 20


@dataclass
class Selection:
    criterion: Criterion
    lo: float
    hi: float
    deviation: np.ndarray  # [nf] the criterion's per-frame deviation
    candidates: np.ndarray  # frame indices in [lo, hi), after the --max cut, sorted
    n_candidates: int  # before the --max cut
    n_accurate: int  # d < lo
    n_failed: int  # d ≥ hi
    histogram: tuple[np.ndarray, np.ndarray]  # counts [bins], edges [bins + 1]

    def summary(self) -> dict[str, Any]:
        counts, edges = self.histogram
        return {"criterion": self.criterion, "lo": self.lo, "hi": self.hi, "frames": int(self.deviation.size),
                "accurate": self.n_accurate, "candidates": self.n_candidates, "selected": int(self.candidates.size),
                "failed": self.n_failed, "selected_frames": self.candidates.tolist(),
                "deviation_mean": float(self.deviation.mean()) if self.deviation.size else 0.0,
                "deviation_max": float(self.deviation.max()) if self.deviation.size else 0.0,
                "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}}


def check_bounds(lo: float, hi: float, max_frames: int | None) -> None:
    if not (np.isfinite(lo) and lo >= 0):
        raise ConfigError(f"must be a finite number >= 0, got {lo}", path="lo")
    if not (np.isfinite(hi) and hi > lo):
        raise ConfigError(f"must be a finite number > lo ({lo}), got {hi}", path="hi")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"must be >= 1, got {max_frames}", path="max")


def frame_deviation(committee: Committee, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None, *,
                    criterion: Criterion = "atomic", batch_size: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Per-frame devi_atomic_max ("atomic") or devi_global ("global"), streamed by chunks."""
    nf = coord.shape[0]
    out = np.zeros(nf)
    for f0, chunk in iter_predict(committee, coord, atype, box, batch_size=batch_size):
        assert chunk.member_global is not None and chunk.member_atomic is not None
        dev = deviation(chunk.member_global, chunk.member_atomic)
        n = chunk.global_tensor.shape[0]
        out[f0:f0 + n] = dev.devi_atomic_max if criterion == "atomic" else dev.devi_global
        if progress is not None:
            progress(f0 + n, nf)
    return out


def select(devi: np.ndarray, lo: float, hi: float, *, max_frames: int | None = None, criterion: Criterion = "atomic",
           seed: int = 0) -> Selection:
    """Split frames by deviation; with more than ``max_frames`` candidates keep a random
    (seeded, so reproducible) subset, as DP-GEN does, not the worst ones: those cluster."""
    check_bounds(lo, hi, max_frames)
    in_range = np.flatnonzero((devi >= lo) & (devi < hi))
    chosen = in_range
    if max_frames is not None and in_range.size > max_frames:
        chosen = np.sort(np.random.default_rng(seed).choice(in_range, size=max_frames, replace=False))
    top = max(float(devi.max()) if devi.size else 0.0, hi)
    edges = np.linspace(0.0, top * (1 + 1e-9), HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(devi, bins=edges)
    return Selection(criterion=criterion, lo=lo, hi=hi, deviation=devi, candidates=chosen,
                     n_candidates=int(in_range.size), n_accurate=int((devi < lo).sum()),
                     n_failed=int((devi >= hi).sum()), histogram=(counts, edges))


def write_candidates(out: str | Path, selection: Selection, coord: np.ndarray, atype: np.ndarray,
                     box: np.ndarray | None, type_map: list[str]) -> Path:
    """The selected frames as an unlabelled DeePMD-kit system, plus deviation.txt (every
    frame), histogram.csv and selection.json (counts and chosen frame indices)."""
    out = Path(out)
    (out / "set.000").mkdir(parents=True, exist_ok=True)
    idx = selection.candidates
    nat = coord.shape[1]
    np.savetxt(out / "type.raw", np.asarray(atype, dtype=np.int64), fmt="%d")
    (out / "type_map.raw").write_text("\n".join(type_map) + "\n")
    np.save(out / "set.000" / "coord.npy", np.asarray(coord[idx], dtype=np.float64).reshape(idx.size, nat * 3))
    if box is not None:
        np.save(out / "set.000" / "box.npy", np.asarray(box[idx], dtype=np.float64).reshape(idx.size, 9))
    else:
        (out / "nopbc").touch()
    header = f"frame  deviation ({selection.criterion}); selected: [{selection.lo}, {selection.hi})"
    np.savetxt(out / "deviation.txt", np.column_stack([np.arange(selection.deviation.size), selection.deviation]),
               fmt=["%d", "%.6e"], header=header)
    counts, edges = selection.histogram
    rows = [f"{edges[i]:.6e},{edges[i + 1]:.6e},{counts[i]}" for i in range(counts.size)]
    (out / "histogram.csv").write_text("bin_lo,bin_hi,frames\n" + "\n".join(rows) + "\n")
    (out / "selection.json").write_text(json.dumps(selection.summary(), indent=1))
    return out


def histogram_text(selection: Selection, width: int = 40) -> str:
    """The histogram for a terminal, with the [lo, hi) window marked."""
    counts, edges = selection.histogram
    peak = max(int(counts.max()) if counts.size else 0, 1)
    lines = []
    for i, n in enumerate(counts):
        mark = "*" if edges[i + 1] > selection.lo and edges[i] < selection.hi else " "
        lines.append(f"{edges[i]:10.3e} – {edges[i + 1]:10.3e} {mark} {'#' * round(width * int(n) / peak)} {n}")
    return "\n".join(lines)
