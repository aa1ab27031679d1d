"""Throughput timing shared by both tools' runners (stdlib only, imported in both venvs),
so that DeePMD-kit and dptensor are timed by the same loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def throughput(call: Callable[[int, int], object], nframes: int, batch: int, min_seconds: float) -> dict[str, float]:
    """Evaluate frames [f0, f1) with ``call`` ``batch`` frames at a time, cycling through
    ``nframes`` frames, until ``min_seconds`` have passed (whole calls, at least one).
    ``batch`` ≥ ``nframes`` is one call on all frames per round."""
    batch = max(1, min(batch, nframes))
    done = f0 = 0
    start = time.perf_counter()
    while True:
        f1 = min(f0 + batch, nframes)
        call(f0, f1)
        done += f1 - f0
        f0 = 0 if f1 >= nframes else f1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return {"frames": done, "seconds": elapsed, "fps": done / elapsed}


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def parse_batches(text: str) -> list[int]:
    """``1,4,16,all`` → [1, 4, 16, 0] (0: all frames in one call)."""
    return [0 if b.strip() == "all" else int(b) for b in text.split(",") if b.strip()]
