"""Aggregation and tables of ``bench_infer.py``: per-mode spreads over the repeats, the
fastest DeePMD-kit mode per output kind, and per-repeat ratios against it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from timing import spread

Runs = list[dict[str, Any]]


@dataclass(frozen=True)
class Setting:
    """One DeePMD-kit process environment (threads and inference batch)."""

    intra: int
    inter: int
    batch_atoms: int

    @property
    def label(self) -> str:
        return f"threads {self.intra}/{self.inter}, DP_INFER_BATCH_SIZE {self.batch_atoms}"

    def env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.intra), "DP_INTRA_OP_PARALLELISM_THREADS": str(self.intra),
                "DP_INTER_OP_PARALLELISM_THREADS": str(self.inter), "DP_INFER_BATCH_SIZE": str(self.batch_atoms)}


def parse_settings(threads: str, batch_atoms: str) -> list[Setting]:
    """``1,2,2:2`` (intra[:inter] threads) × ``1024,4096`` (atoms per inference batch)."""
    out = []
    for t in threads.split(","):
        intra, _, inter = t.strip().partition(":")
        for a in batch_atoms.split(","):
            out.append(Setting(int(intra), int(inter or 1), int(a)))
    return out


@dataclass
class Mode:
    output: str  # global | atomic
    batch: int
    all_frames: bool
    setting: Setting
    fps: list[float] = field(default_factory=list)  # one per repeat

    @property
    def label(self) -> str:
        batch = f"all {self.batch}" if self.all_frames else str(self.batch)
        return f"eval(atomic={self.output == 'atomic'}) batch {batch:>6}, {self.setting.label}"


def collect_modes(theirs: dict[Setting, Runs]) -> list[Mode]:
    """Per (setting, output, batch) the frames/s of every repeat."""
    modes: dict[tuple[Setting, str, int], Mode] = {}
    for setting, runs in theirs.items():
        for run in runs:
            for m in run["modes"]:
                key = (setting, m["output"], m["batch"])
                modes.setdefault(key, Mode(m["output"], m["batch"], m["all"], setting)).fps.append(m["fps"])
    return sorted(modes.values(), key=lambda m: (m.output != "global", m.setting.intra, m.batch, m.setting.batch_atoms))


def fastest(modes: list[Mode], output: str | None) -> Mode | None:
    """The mode with the highest median frames/s (for one output kind, or any)."""
    pool = [m for m in modes if output is None or m.output == output]
    return max(pool, key=lambda m: spread(m.fps)["median"]) if pool else None


def ratios(ours: list[float], best: Mode | None) -> dict[str, float] | None:
    """ours / theirs per repeat (repeat r of both were measured in the same round)."""
    if best is None or not ours:
        return None
    return spread([o / t for o, t in zip(ours, best.fps, strict=False)])


def fmt_spread(s: dict[str, float] | None, unit: str = "") -> str:
    if s is None:
        return "-"
    return f"{s['min']:.4g} / {s['median']:.4g} / {s['max']:.4g}{unit}"


def startup_line(label: str, runs: Runs) -> str:
    """Launch → ready seconds, with the import / read / load split (medians)."""
    if not runs:
        return f"  {label}: -"
    total = spread([r["startup"]["total_s"] for r in runs])
    parts = {k: spread([r["startup"][k] for r in runs])["median"] for k in ("import_s", "read_s", "load_s")}
    split = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in parts.items())
    return f"  {label}: {fmt_spread(total, ' s')} (median split: {split})"


def render_task(title: str, modes: list[Mode], ours_rows: list[tuple[str, list[float]]], notes: list[str]) -> str:
    """The per-mode table of DeePMD-kit, then dptensor's rows with their ratios to the
    fastest global and the fastest atomic DeePMD-kit mode."""
    lines = [f"== {title} ==", "DeePMD-kit 3.2.0 modes, frames/s min / median / max over the repeats:"]
    width = max((len(m.label) for m in modes), default=10)
    best = {out: fastest(modes, out) for out in ("global", "atomic")}
    for m in modes:
        mark = "  <- fastest " + m.output if best.get(m.output) is m else ""
        lines.append(f"  {m.label.ljust(width)}  {fmt_spread(spread(m.fps))}{mark}")
    lines.append("dptensor, frames/s min / median / max; ratio vs DeePMD-kit's fastest global | atomic mode "
                 "(per repeat, min / median / max):")
    width = max((len(r[0]) for r in ours_rows), default=10)
    for label, fps in ours_rows:
        if not fps:
            lines.append(f"  {label.ljust(width)}  -")
            continue
        g, a = ratios(fps, best["global"]), ratios(fps, best["atomic"])
        lines.append(f"  {label.ljust(width)}  {fmt_spread(spread(fps))}   "
                     f"x {fmt_spread(g)} | x {fmt_spread(a)}")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
