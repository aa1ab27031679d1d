"""Training speed, dptensor vs DeePMD-kit, on the water_tensor example inputs.

Usage: ``.venv/bin/python bench/bench_train.py [--task dipole|polar|both] [--steps N]``

Both tools train the same input.json (numb_steps, disp_freq, save_freq rewritten, system
paths made absolute) twice, for --base-steps and --steps steps, each in a fresh process;
steps/s = (N2 − N1) / (t2 − t1), so start-up is excluded identically for both.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import common
from common import OURS, THEIRS, Table, attempt
from floor import training_floor
from inputs import Task, prepare_input, task_names


def _train_once(side: str, task: str, ns: Any, steps: int, workdir: Path) -> float:
    """One training run of ``steps`` steps; returns its wall time."""
    src = Task(task).input_json
    if side == THEIRS:
        args = ["train", "--input", str(src), "--workdir", str(workdir), "--steps", str(steps)]
        if ns.disp_freq:
            args += ["--disp-freq", str(ns.disp_freq)]
        res = common.deepmd_runner(args, ns.threads, workdir / "runner.log")
        ns.log_s_per_step[task] = res.get("log_s_per_step")
        return float(res["wall_s"])
    inp = prepare_input(src, workdir, steps, disp_freq=ns.disp_freq)
    return float(common.ours_train(inp, workdir, ns.threads)["wall_s"])


def main(argv: list[str] | None = None) -> int:
    ap = common.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="long run (default 400)")
    ap.add_argument("--base-steps", type=int, default=None, help="short run (default: steps // 4)")
    ap.add_argument(
        "--disp-freq",
        type=int,
        default=None,
        help="disp_freq for both runs (default: the input's, at most the steps)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run each step count this often, keep the fastest (default 1)",
    )
    ap.add_argument("--no-floor", action="store_true",
                    help="skip the compute-floor row (bench/floor.py)")
    ns = ap.parse_args(argv)
    ns.log_s_per_step = {}
    short = ns.base_steps or max(1, ns.steps // 4)
    tables, errors, results = [], [], {}
    for task in task_names(ns.task):
        res: dict[str, Any] = {}
        for side in common.sides(ns.side):
            print(f"[train] {task} / {side}: {short} and {ns.steps} steps", file=sys.stderr)
            wdir = ns.workdir / "train" / task / side
            fn = partial(_train_once, side, task, ns)
            res[side] = attempt(
                errors,
                f"{task}/{side}",
                partial(common.steps_per_second, fn, short, ns.steps, wdir, ns.repeats),
            )
        ours, theirs = res.get(OURS) or {}, res.get(THEIRS) or {}
        table = Table(f"training, {task} ({short} vs {ns.steps} steps, fresh process each)")
        table.add(
            "steps/s (two-run difference)", ours.get("steps_per_s"), theirs.get("steps_per_s")
        )
        table.add(f"wall s, {short} steps", ours.get("wall_short_s"), theirs.get("wall_short_s"))
        table.add(f"wall s, {ns.steps} steps", ours.get("wall_long_s"), theirs.get("wall_long_s"))
        log_spp = ns.log_s_per_step.get(task) if theirs else None
        table.add("steps/s from DeePMD-kit's own log", None, 1 / log_spp if log_spp else None)
        floor = None
        if not ns.no_floor:
            floor = training_floor(Task(task).input_json, ns.threads)
            table.add("compute floor, steps/s (ratio = best reachable)", floor.steps_per_s,
                      theirs.get("steps_per_s"))
            table.notes.append(f"compute floor (bench/floor.py): {floor.describe()}")
            if ours.get("steps_per_s"):
                table.notes.append(f"dptensor runs at {ours['steps_per_s'] / floor.steps_per_s:.0%} of the floor")
        tables.append(table)
        results[task] = {**res, "deepmd_log_s_per_step": log_spp,
                         "floor_ms": floor.ms if floor is not None else None}
    return common.report(tables, errors, results, ns.json)


if __name__ == "__main__":
    sys.exit(main())
