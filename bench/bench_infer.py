"""Inference speed, dptensor vs DeePMD-kit in every mode a user could choose.

Usage: ``.venv/bin/python bench/bench_infer.py [--quick] [--task dipole|polar|both]
[--frames N] [--repeats R] [--precision float64|float32]``

Both tools read the same frames from the same file: the task's validation frames (cycled)
written once as an npy system of --cli-frames frames under the workdir. Each repeat is
one round, in fresh processes, interleaving the tools:

- DeePMD-kit (``_deepmd_runner.py modes``), one process per setting (threads
  ``--deepmd-threads``, ``DP_INFER_BATCH_SIZE`` ``--deepmd-batch-atoms``): ``eval`` with
  atomic=False (global) and atomic=True, in calls of ``--batches`` frames (1, 4, 16, all)
  over the first --frames frames, each mode timed for at least --min-seconds;
- dptensor in-process (``_ours_runner.py``): ``model.predict`` on the same first --frames
  frames (one call) and on the first --lib-frames frames (one call);
- ``dptensor predict`` (the CLI: reading the system, writing the npz), on the first
  --cli-frames/4 and on all --cli-frames frames: steady state = Δframes / Δwall.

Start-up (launch → imports, frames read, model loaded) is reported apart from the
steady-state frames/s. Ratios are ours over DeePMD-kit's fastest mode for the same
outputs, per repeat, with min / median / max.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import deepmd_env
import numpy as np
from common import OURS, THEIRS, BenchError, attempt
from infer_report import Setting, collect_modes, fastest, parse_settings, render_task, startup_line
from inputs import Task, inference_frames, task_names, write_system

OURS_RUNNER = Path(__file__).resolve().parent / "_ours_runner.py"
QUICK = {"frames": 16, "repeats": 3, "min_seconds": 1.0, "lib_frames": 512, "cli_frames": 2000}
FULL = {"frames": 32, "repeats": 5, "min_seconds": 2.0, "lib_frames": 1024, "cli_frames": 4000}


def _theirs(task: str, ns: Any, setting: Setting, system: Path, r: int) -> dict[str, Any]:
    wdir = ns.workdir / "infer" / task / THEIRS
    args = ["modes", "--model", str(ns.model or Task(task).reference_model), "--task", task,
            "--system", str(system), "--frames", str(ns.frames), "--batches", ns.batches,
            "--outputs", ns.outputs, "--min-seconds", str(ns.min_seconds), "--rotate", str(r),
            "--precision", ns.precision, "--workdir", str(wdir), "--save", str(wdir / "check.npz")]
    env = deepmd_env.deepmd_run_env(None) | setting.env()
    cmd = [str(deepmd_env.venv_python()), str(common.RUNNER), *args]
    launch = time.time()
    res = common.run_json(cmd, env, wdir / f"modes_{setting.intra}_{setting.inter}_{setting.batch_atoms}.log")
    res["startup"]["total_s"] = res["startup"]["ready_epoch"] - launch
    res["check"] = dict(np.load(wdir / "check.npz"))
    return res


def _ours_lib(task: str, ns: Any, system: Path) -> dict[str, Any]:
    wdir = ns.workdir / "infer" / task / OURS
    cmd = [sys.executable, str(OURS_RUNNER), "infer", "--model", str(ns.model or Task(task).reference_model),
           "--system", str(system), "--frames", str(ns.frames), "--lib-frames", str(ns.lib_frames),
           "--min-seconds", str(ns.min_seconds), "--precision", ns.precision, "--save", str(wdir / "check.npz")]
    launch = time.time()
    res = common.run_json(cmd, common.subprocess_env(ns.threads), wdir / "lib.log")
    res["startup"]["total_s"] = res["startup"]["ready_epoch"] - launch
    res["check"] = dict(np.load(wdir / "check.npz"))
    return res


def _ours_cli(task: str, ns: Any, system: Path, nframes: int) -> dict[str, Any]:
    wdir = ns.workdir / "infer" / task / OURS
    out = wdir / f"cli_{nframes}.npz"
    cmd = [common.dptensor_exe(), "predict", "-m", str(ns.model or Task(task).reference_model), "-s", str(system),
           "-o", str(out), "--precision", ns.precision]
    wall = common.timed_run(cmd, wdir, common.subprocess_env(ns.threads), wdir / f"cli_{nframes}.log")
    with np.load(out) as z:
        check = {"global_": z["global"][:2], "atomic": z["atomic"][:2]}
    return {"frames": nframes, "wall_s": wall, "check": check}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], key: str) -> float:
    n = min(len(a[key]), len(b[key]))
    return float(np.abs(np.asarray(a[key][:n]) - np.asarray(b[key][:n]).reshape(a[key][:n].shape)).max())


def run_task(task: str, ns: Any, errors: list[str]) -> tuple[str, dict[str, Any]]:
    frames = inference_frames(task, ns.cli_frames)
    base = ns.workdir / "infer" / task
    small_n = max(ns.lib_frames, ns.cli_frames // 4)
    big = write_system(frames, base / f"system_{ns.cli_frames}", ["O", "H"])
    small = write_system(type(frames)(frames.coord[:small_n], frames.atype,
                                      None if frames.box is None else frames.box[:small_n]),
                         base / f"system_{small_n}", ["O", "H"])
    settings = parse_settings(ns.deepmd_threads, ns.deepmd_batch_atoms)
    theirs: dict[Setting, list[dict[str, Any]]] = {s: [] for s in settings}
    lib: list[dict[str, Any]] = []
    cli: list[tuple[dict[str, Any], dict[str, Any]]] = []
    do_theirs, do_ours = ns.side in (THEIRS, "both"), ns.side in (OURS, "both")
    for r in range(ns.repeats):
        mine: list[tuple[str, Any]] = []
        if do_ours:
            mine.append((f"{task}/{OURS} library", lambda: lib.append(_ours_lib(task, ns, big))))
            if not ns.no_cli:
                mine.append((f"{task}/{OURS} cli", lambda: cli.append(
                    (_ours_cli(task, ns, small, small_n), _ours_cli(task, ns, big, ns.cli_frames)))))
        other = [(f"{task}/{THEIRS} {s.label}", lambda s=s, r=r: theirs[s].append(_theirs(task, ns, s, big, r)))
                 for s in settings] if do_theirs else []
        # the tools alternate within a round: theirs, ours, theirs, ours, ...
        jobs = [j for pair in itertools.zip_longest(other, mine) for j in pair if j is not None]
        for label, job in jobs:
            print(f"[infer] round {r + 1}/{ns.repeats}: {label}", file=sys.stderr)
            attempt(errors, label, job)
    modes = collect_modes(theirs)
    cli_steady = [(b["frames"] - a["frames"]) / (b["wall_s"] - a["wall_s"]) for a, b in cli
                  if b["wall_s"] > a["wall_s"]]
    rows = [(f"predict() in-process, the same {ns.frames} frames, one call", [x["same_frames"]["fps"] for x in lib]),
            (f"predict() in-process, {ns.lib_frames} frames, one call", [x["lib"]["fps"] for x in lib]),
            (f"`dptensor predict` steady state ({small_n}→{ns.cli_frames} frames)", cli_steady),
            (f"`dptensor predict` end to end, {ns.cli_frames} frames incl. start-up",
             [b["frames"] / b["wall_s"] for _, b in cli])]
    notes = [f"frames: {big} (float64, {frames.atype.size} atoms, {'periodic' if frames.box is not None else 'nopbc'});"
             f" DeePMD-kit on its first {ns.frames}; {ns.precision}; {ns.repeats} rounds. Noisy on a shared machine: "
             "compare within one run.", "start-up, launch → frames read and model loaded, s (min / median / max):"]
    notes += [startup_line(f"DeePMD-kit, {s.label}", runs) for s, runs in theirs.items() if runs]
    notes.append(startup_line("dptensor in-process", lib))
    if cli_steady:
        est = [b["wall_s"] - b["frames"] / rate for (_, b), rate in zip(cli, cli_steady, strict=False)]
        notes.append(f"  `dptensor predict` (wall − frames / steady rate): {min(est):.2f} / "
                     f"{sorted(est)[len(est) // 2]:.2f} / {max(est):.2f} s")
    result: dict[str, Any] = {"modes": [m.__dict__ | {"setting": m.setting.__dict__} for m in modes],
                              "lib": [{k: v for k, v in x.items() if k != "check"} for x in lib],
                              "cli": [[{k: v for k, v in y.items() if k != "check"} for y in p] for p in cli],
                              "cli_steady_fps": cli_steady}
    checks = [runs[-1]["check"] for runs in theirs.values() if runs]
    if checks and lib:
        for key in ("global_", "atomic"):
            diff = _max_diff(lib[-1]["check"], checks[0], key)
            result[f"max_abs_diff_{key.strip('_')}"] = diff
            notes.append(f"max |ours − DeePMD-kit|, {key.strip('_')} outputs of the first frames: {diff:.3g}")
        if cli:
            notes.append(f"max |`dptensor predict` npz − DeePMD-kit|, global: {_max_diff(cli[-1][1]['check'], checks[0], 'global_'):.3g}")
    for out in ("global", "atomic"):
        best = fastest(modes, out)
        if best is not None:
            result[f"fastest_{out}"] = best.__dict__ | {"setting": best.setting.__dict__}
    title = f"inference, {task}{', ' + ns.model.parent.name if ns.model else ''} ({ns.precision}, {frames.atype.size} atoms)"
    return render_task(title, modes, rows, notes), result


def main(argv: list[str] | None = None) -> int:
    ap = common.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (both tasks in < 5 min on 2 cores): "
                    + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    ap.add_argument("--frames", type=int, help=f"frames DeePMD-kit evaluates per mode (default {FULL['frames']})")
    ap.add_argument("--repeats", type=int, help=f"rounds (default {FULL['repeats']})")
    ap.add_argument("--min-seconds", type=float, help=f"time each mode at least (default {FULL['min_seconds']})")
    ap.add_argument("--lib-frames", type=int, help=f"frames of the large in-process call (default {FULL['lib_frames']})")
    ap.add_argument("--cli-frames", type=int, help=f"frames of the system file (default {FULL['cli_frames']})")
    ap.add_argument("--batches", default="1,4,16,all", help="DeePMD-kit frames per eval call")
    ap.add_argument("--outputs", default="global,atomic", help="DeePMD-kit eval outputs")
    ap.add_argument("--deepmd-threads", default="1,2", help="DeePMD-kit intra[:inter] op threads, e.g. 1,2,2:2")
    ap.add_argument("--deepmd-batch-atoms", default="1024", help="DP_INFER_BATCH_SIZE values (atoms per batch)")
    ap.add_argument("--no-cli", action="store_true", help="skip `dptensor predict`")
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--model", type=Path, default=None,
                    help="a DeePMD-kit checkpoint of the task's kind instead of the reference one")
    ns = ap.parse_args(argv)
    if ns.model is not None and ns.task == "both":
        ap.error("--model needs --task dipole or --task polar")
    for key, value in (QUICK if ns.quick else FULL).items():
        if getattr(ns, key) is None:
            setattr(ns, key, value)
    ns.lib_frames = min(ns.lib_frames, ns.cli_frames)
    if ns.side != OURS:
        try:
            common._ENV_READY.update(deepmd_env.ensure_env())
        except deepmd_env.DeepmdEnvError as exc:
            raise SystemExit(f"DeePMD-kit venv: {exc}") from exc
    errors: list[str] = []
    texts, results = [], {}
    for task in task_names(ns.task):
        text, results[task] = run_task(task, ns, errors)
        texts.append(text)
    print("\n\n".join(texts))
    return common.report([], errors, results, ns.json)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, subprocess.SubprocessError) as exc:
        sys.exit(f"error: {exc}")
