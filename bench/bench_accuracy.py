"""Accuracy, dptensor vs DeePMD-kit: same input, same seeds, same number of steps.

Usage: ``.venv/bin/python bench/bench_accuracy.py [--task dipole|polar|both]
[--seeds 10 2 3] [--steps 2000]``

For every seed both tools train the example input.json (training.seed = the seed), then
their own ``test`` command (``dp --pt test`` on the frozen model / ``dptensor test --json``)
scores the validation systems: global RMSE and RMSE/N_sel on ``global_system``, atomic RMSE
on ``atomic_system``.  Reported per seed and as the mean over seeds.
"""

from __future__ import annotations

import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Any

import common
from common import OURS, THEIRS, Table, attempt
from inputs import Task, prepare_input, task_names

METRICS = (
    ("global", "rmse", "global RMSE"),
    ("global", "rmse_per_atom", "global RMSE/N"),
    ("atomic", "rmse", "atomic RMSE"),
)


def _train(side: str, task: str, seed: int, ns: Any, wdir: Path) -> str:
    """Train (or reuse with --reuse) and return the final model's path."""
    src = Task(task).input_json
    if side == THEIRS:
        model = wdir / "model.ckpt.pt"
        if not (ns.reuse and model.exists()):
            args = [
                "train",
                "--input",
                str(src),
                "--workdir",
                str(wdir),
                "--steps",
                str(ns.steps),
                "--seed",
                str(seed),
            ]
            common.deepmd_runner(args, ns.threads, wdir / "runner.log")
        return str(model.resolve())
    model = wdir / "model.pt"
    if not (ns.reuse and model.exists()):
        inp = prepare_input(src, wdir, ns.steps, seed=seed)
        common.ours_train(inp, wdir, ns.threads)
    return str(model)


def _score(side: str, task: str, seed: int, ns: Any) -> dict[str, Any]:
    wdir = ns.workdir / "accuracy" / task / f"seed{seed}" / side
    model = _train(side, task, seed, ns, wdir)
    scores: dict[str, Any] = {}
    for kind in ("global", "atomic"):
        system = Task(task).validation_system(kind)
        log = wdir / f"test_{kind}.log"
        if side == THEIRS:
            args = [
                "test",
                "--model",
                model,
                "--system",
                str(system),
                "-n",
                str(ns.numb_test),
                "--workdir",
                str(wdir / "test"),
            ]
            res = common.deepmd_runner(args, ns.threads, log)
        else:
            res = common.ours_test(Path(model), system, ns.numb_test, ns.threads, log)
        if not res.get(kind):
            raise common.BenchError(f"{side} test of {system} reported no {kind} RMSE: {res}")
        scores[kind] = res[kind]
    return scores


def _get(scores: dict[str, Any] | None, kind: str, key: str) -> float | None:
    val = ((scores or {}).get(kind) or {}).get(key)
    return None if val is None else float(val)


def main(argv: list[str] | None = None) -> int:
    ap = common.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[10, 2, 3])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument(
        "-n",
        "--numb-test",
        type=int,
        default=0,
        help="validation frames per system (default 0 = all)",
    )
    ap.add_argument("--reuse", action="store_true", help="reuse models already trained")
    ns = ap.parse_args(argv)
    tables, errors, results = [], [], {}
    for task in task_names(ns.task):
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in ns.seeds:
            per_seed[seed] = {}
            for side in common.sides(ns.side):
                print(
                    f"[accuracy] {task} / seed {seed} / {side}: {ns.steps} steps", file=sys.stderr
                )
                per_seed[seed][side] = attempt(
                    errors, f"{task}/seed{seed}/{side}", partial(_score, side, task, seed, ns)
                )
        table = Table(f"accuracy, {task} (validation, {ns.steps} steps, seeds {ns.seeds})")
        for kind, key, label in METRICS:
            cols: dict[str, list[float]] = {OURS: [], THEIRS: []}
            for seed in ns.seeds:
                o = _get(per_seed[seed].get(OURS), kind, key)
                t = _get(per_seed[seed].get(THEIRS), kind, key)
                table.add(f"{label}, seed {seed}", o, t)
                for side, v in ((OURS, o), (THEIRS, t)):
                    if v is not None:
                        cols[side].append(v)
            table.add(
                f"{label}, mean over seeds",
                *(
                    statistics.fmean(cols[s]) if len(cols[s]) == len(ns.seeds) else None
                    for s in (OURS, THEIRS)
                ),
            )
        tables.append(table)
        results[task] = {str(k): v for k, v in per_seed.items()}
    return common.report(tables, errors, results, ns.json)


if __name__ == "__main__":
    sys.exit(main())
