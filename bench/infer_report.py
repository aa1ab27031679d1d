"""Aggregation and tables of ``bench_infer.py``: per-mode spreads over the rounds, the
fastest DeePMD-kit mode per output kind, and per-round ratios against it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from timing import spread

# (model kind, DP_INFER_BATCH_SIZE, intra-op threads, output, frames per call; 0 = all)
ModeKey = tuple[str, int, int, str, int]


@dataclass
class Mode:
    key: ModeKey
    all_frames: bool = False
    fps: dict[int, float] = field(default_factory=dict)  # round → frames/s

    @property
    def output(self) -> str:
        return self.key[3]

    @property
    def label(self) -> str:
        kind, atoms, threads, output, batch = self.key
        size = f"all {batch}" if self.all_frames else str(batch)
        return (f"eval(atomic={output == 'atomic'}) batch {size:>6}, {kind} model, threads {threads}, "
                f"DP_INFER_BATCH_SIZE {atoms}")

    @property
    def median(self) -> float:
        return spread(list(self.fps.values()))["median"]


def collect(modes: dict[ModeKey, Mode], round_: int, results: list[dict[str, Any]]) -> None:
    for r in results:
        key = (r["kind"], int(r["batch_atoms"]), int(r["threads"]), r["output"], int(r["batch"]))
        mode = modes.setdefault(key, Mode(key, bool(r["all"])))
        mode.fps[round_] = float(r["fps"])


def fastest(modes: dict[ModeKey, Mode], output: str | None, k: int = 1) -> list[Mode]:
    """The ``k`` modes with the highest median frames/s (for one output kind, or any)."""
    pool = [m for m in modes.values() if output is None or m.output == output]
    return sorted(pool, key=lambda m: m.median, reverse=True)[:k]


def ratios(ours: dict[int, float], best: Mode | None) -> dict[str, float] | None:
    """ours / theirs in each round where both were measured (the tools alternate within a round)."""
    if best is None:
        return None
    pairs = [o / best.fps[r] for r, o in ours.items() if r in best.fps]
    return spread(pairs) if pairs else None


def fmt_spread(s: dict[str, float] | None, unit: str = "") -> str:
    if s is None:
        return "-"
    if s["n"] == 1:
        return f"{s['median']:.4g}{unit} (1 round)"
    return f"{s['min']:.4g} / {s['median']:.4g} / {s['max']:.4g}{unit}"


def render_task(title: str, modes: dict[ModeKey, Mode], ours_rows: list[tuple[str, dict[int, float]]],
                notes: list[str]) -> str:
    """The per-mode table of DeePMD-kit, then dptensor's rows with their ratios to the
    fastest global and the fastest atomic DeePMD-kit mode."""
    lines = [f"== {title} ==", "DeePMD-kit 3.2.0 modes, frames/s min / median / max over the rounds measured:"]
    ordered = sorted(modes.values(), key=lambda m: (m.output != "global", m.key))
    width = max((len(m.label) for m in ordered), default=10)
    best = {out: next(iter(fastest(modes, out)), None) for out in ("global", "atomic")}
    for m in ordered:
        mark = "  <- fastest " + m.output if best.get(m.output) is m else ""
        lines.append(f"  {m.label.ljust(width)}  {fmt_spread(spread(list(m.fps.values())))}{mark}")
    lines.append("dptensor, frames/s min / median / max; ratio vs DeePMD-kit's fastest global | atomic mode "
                 "(per round, min / median / max):")
    width = max((len(r[0]) for r in ours_rows), default=10)
    for label, fps in ours_rows:
        if not fps:
            lines.append(f"  {label.ljust(width)}  -")
            continue
        g, a = ratios(fps, best["global"]), ratios(fps, best["atomic"])
        lines.append(f"  {label.ljust(width)}  {fmt_spread(spread(list(fps.values())))}   "
                     f"x {fmt_spread(g)} | x {fmt_spread(a)}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)


def startup_line(label: str, runs: list[dict[str, Any]]) -> str:
    """Launch → ready seconds, with the import / read / load split (medians)."""
    if not runs:
        return f"  {label}: -"
    total = spread([r["total_s"] for r in runs])
    parts = {k: spread([float(r[k]) for r in runs])["median"] for k in ("import_s", "read_s", "load_s")}
    split = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in parts.items())
    return f"  {label}: {fmt_spread(total, ' s')} (median split: {split})"
