"""Inference of two revisions of ``model/`` side by side in one process: a git revision
(``--base``, exported from this repository into a temporary package) against the working
tree's, on the reference models and frames, single-threaded, interleaved (base, new, new,
base, …; one call per timing) so a busy moment of a shared machine falls on both. Prints
ms per frame of each (min, lower quartile, median, max over the rounds), new/base, and the
largest relative difference of the outputs.

    .venv/bin/python bench/ab_revisions.py --base main [--task polar] [--part all|env|desc|fit|predict]
                                           [--frames 64] [--rounds 21] [--threads 1]

Parts: env = neighbour search + environment rows; desc = descriptor on a fixed environment
(its normalised rows are kept on the environment after the first call); fit = fitting on a
fixed descriptor; all = the whole forward (what a prediction chunk runs); predict = the
library's ``predict()`` on ``--frames`` frames (the validation frames repeated), chunks on
``--threads`` concurrent threads as ``dptensor predict`` runs them (e.g. --frames 512 --threads 2).
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from inputs import Task

import model
from model.runtime import tune_allocator
from model.structures import load_structures

REPO = Path(__file__).resolve().parents[1]
BASE_PACKAGE = "model_base"


def export_base(rev: str, into: Path) -> ModuleType:
    """``model/`` at ``rev`` as the package ``model_base`` (imports rewritten), imported."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "model"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    pkg = into / BASE_PACKAGE
    (into / "model").rename(pkg)
    for path in pkg.rglob("*.py"):
        text = re.sub(r"\b(from|import) model([. ])", rf"\1 {BASE_PACKAGE}\2", path.read_text())
        text = re.sub(r'"model\.(\w+)"', rf'"{BASE_PACKAGE}.\1"', text)  # the lazy exports of __init__
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(BASE_PACKAGE)


def part_call(pkg: ModuleType, task: Task, part: str, n: int) -> Callable[[], torch.Tensor]:
    """The timed call of ``part`` with ``pkg``'s model on the first ``n`` frames; returns an
    output to compare."""
    m = pkg.load_model(str(task.reference_model), device="cpu", precision="float64")
    coord, atype, box = load_structures(str(task.validation_system("global")), m.type_map)
    if part == "predict":
        reps = -(-n // len(coord))
        frames = np.concatenate([coord] * reps)[:n]
        cells = None if box is None else np.concatenate([box] * reps)[:n]
        return lambda: torch.from_numpy(pkg.predict(m, frames, atype, cells).global_tensor)
    c = torch.tensor(coord[:n])
    b = None if box is None else torch.tensor(box[:n])
    at = torch.as_tensor(atype, dtype=torch.long)
    with torch.inference_mode():
        cen = m.centres(at)
        env = m.environment(c, at, b, cen)
        d, gr = m.descriptor(env, differentiable=False)
        nc = cen.index.shape[0]
        d, gr = d.view(n, nc, -1).clone(), gr.reshape(n, nc, -1, 3).clone()
    calls = {
        "env": lambda: m.environment(c, at, b, cen).rij,
        "desc": lambda: m.descriptor(env, differentiable=False)[0],
        "fit": lambda: m.fitting(d, gr, cen.slices, differentiable=False),
        "all": lambda: m(c, at, b, differentiable=False).atomic,
    }
    return calls[part]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision of the base model/ (e.g. main, HEAD~3)")
    ap.add_argument("--task", choices=["dipole", "polar"], default="polar")
    ap.add_argument("--part", choices=["env", "desc", "fit", "all", "predict"], default="all")
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (predict: its concurrent chunks)")
    args = ap.parse_args()
    tune_allocator()  # as `dptensor predict` and the workers do
    torch.set_num_threads(args.threads)
    task = Task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        calls = {"base": part_call(export_base(args.base, Path(tmp)), task, args.part, args.frames),
                 "new": part_call(model, task, args.part, args.frames)}
        times: dict[str, list[float]] = {k: [] for k in calls}
        with torch.inference_mode():
            outs = {k: f().clone() for k, f in calls.items()}  # and a warm-up
            for r in range(args.rounds):
                for k in ("base", "new") if r % 2 == 0 else ("new", "base"):
                    t0 = time.perf_counter()
                    calls[k]()
                    times[k].append(1e3 * (time.perf_counter() - t0) / args.frames)
    scale = float(outs["base"].abs().max()) or 1.0
    print(f"{args.task} {args.part}, {args.frames} frames per call, {args.threads} thread(s), base = {args.base}: "
          f"max |new - base| / max |base| = {float((outs['new'] - outs['base']).abs().max()) / scale:.2e}")
    for k, v in times.items():
        q = statistics.quantiles(v, n=4)
        print(f"  {k:4s} ms/frame: min {min(v):.3f}  p25 {q[0]:.3f}  median {statistics.median(v):.3f}  "
              f"max {max(v):.3f}  ({len(v)} rounds)")
    ratios = sorted(n / b for n, b in zip(times["new"], times["base"], strict=True))
    print(f"  new/base: median of medians {statistics.median(times['new']) / statistics.median(times['base']):.3f}, "
          f"per-round pairs {ratios[0]:.2f}–{ratios[-1]:.2f} (median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
