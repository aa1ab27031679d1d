"""Inference speed, dptensor vs DeePMD-kit, on DeePMD-kit's reference checkpoints.

Usage: ``.venv/bin/python bench/bench_infer.py [--task dipole|polar|both] [--frames N]
[--precision float64|float32]``

Both tools load /work/shared/data/deepmd_reference/<task>/model_slim.pt (DeePMD-kit via
DeepDipole/DeepPolar on the checkpoint rebuilt from it, dptensor directly) and evaluate the
same --frames frames of the 192-atom validation data (dipole non-periodic, polar periodic)
in one call, after a warm-up call; frames/s is from the median of --repeats calls.  The
two tools' atomic predictions are compared as a sanity check.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import OURS, THEIRS, Table, attempt
from inputs import Task, inference_frames, task_names


def _theirs(task: str, ns: Any) -> tuple[dict[str, Any], np.ndarray]:
    wdir = ns.workdir / "infer" / task / THEIRS
    pred = wdir / f"pred_{ns.precision}.npy"
    args = [
        "infer",
        "--model",
        str(ns.model or Task(task).reference_model),
        "--task",
        task,
        "--frames",
        str(ns.frames),
        "--warmup-frames",
        str(ns.warmup_frames),
        "--repeats",
        str(ns.repeats),
        "--precision",
        ns.precision,
        "--workdir",
        str(wdir),
        "--save",
        str(pred),
    ]
    res = common.deepmd_runner(args, ns.threads, wdir / "runner.log")
    return res, np.load(pred)


def _ours(task: str, ns: Any) -> tuple[dict[str, Any], np.ndarray]:
    frames = inference_frames(task, ns.frames)
    try:
        return common.ours_infer(
            ns.model or Task(task).reference_model,
            frames,
            ns.precision,
            ns.warmup_frames,
            ns.repeats,
            ns.threads,
        )
    except common.BenchError:
        raise
    except Exception as exc:  # the library is under development: report, don't crash
        raise common.BenchError(f"{type(exc).__name__}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    ap = common.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50, help="frames per timed call (default 50)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls (default 3)")
    ap.add_argument("--warmup-frames", type=int, default=5)
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--model", type=Path, default=None,
                    help="a DeePMD-kit checkpoint of the task's kind instead of the reference one")
    ns = ap.parse_args(argv)
    if ns.model is not None and ns.task == "both":
        ap.error("--model needs --task dipole or --task polar")
    tables, errors, results = [], [], {}
    for task in task_names(ns.task):
        res: dict[str, Any] = {}
        preds: dict[str, np.ndarray] = {}
        for side in common.sides(ns.side):
            print(f"[infer] {task} / {side}: {ns.frames} frames", file=sys.stderr)
            fn = _theirs if side == THEIRS else _ours
            out = attempt(errors, f"{task}/{side}", partial(fn, task, ns))
            if out is not None:
                res[side], preds[side] = out
        ours, theirs = res.get(OURS) or {}, res.get(THEIRS) or {}
        name = f", {ns.model.parent.name}" if ns.model is not None else ""
        table = Table(f"inference, {task}{name} ({ns.frames} frames x 192 atoms, {ns.precision})")
        table.add(
            f"frames/s (median of {ns.repeats})",
            ours.get("frames_per_s"),
            theirs.get("frames_per_s"),
        )
        table.add("frames/s (best)", ours.get("best_frames_per_s"), theirs.get("best_frames_per_s"))
        if len(preds) == 2:
            a, b = preds[OURS], preds[THEIRS]
            diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
            res["max_abs_diff_atomic"] = diff
            table.notes.append(f"max |ours - theirs| over all atomic outputs: {diff:.3g}")
        tables.append(table)
        results[task] = res
    return common.report(tables, errors, results, ns.json)


if __name__ == "__main__":
    sys.exit(main())
