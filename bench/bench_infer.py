"""Inference speed, dptensor vs DeePMD-kit in every mode a user could choose.

Usage: ``.venv/bin/python bench/bench_infer.py [--quick] [--task dipole|polar|both]
[--frames N] [--repeats R] [--precision float64|float32]``

Both tools read the same frames from the same file: the task's validation frames (cycled)
written once as an npy system of --cli-frames frames under the workdir. Per task:

- DeePMD-kit: one long-lived process (``_deepmd_infer.py``, its start-up measured) times
  ``eval(..., atomic=False|True)`` in calls of ``--batches`` frames (1, 4, 16, all) over the
  first --frames frames, for each model file (the checkpoint and the frozen ``.pth``), each
  ``--deepmd-threads`` value and each ``--deepmd-batch-atoms`` (``DP_INFER_BATCH_SIZE``),
  every mode for at least --min-seconds;
- dptensor in-process (``_ours_runner.py``, a fresh process per round): ``model.predict``
  on the same first --frames frames (one call) and on the first --lib-frames frames;
- ``dptensor predict`` (the CLI: reading the system, writing the npz), on the first
  --cli-frames/4 and on all --cli-frames frames: steady state = Δframes / Δwall;
- the compute floor of the same --frames frames (``bench/floor.py``, in that process): the
  forward kernels any exact implementation runs, each alone, one thread ÷ the threads.

Rounds alternate the tools (half of DeePMD-kit's modes, ours in-process, the other half,
our CLI). The first --full-rounds rounds time every DeePMD-kit mode, later ones the
--remeasure fastest per output kind. Ratios: ours over DeePMD-kit's fastest mode for the
same outputs (highest median), per round, min / median / max.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import deepmd_env
import numpy as np
from common import OURS, THEIRS, BenchError, attempt
from infer_report import Mode, ModeKey, collect, fastest, fmt_spread, render_task, startup_line
from inputs import Frames, Task, inference_frames, task_names, write_system
from timing import parse_batches, spread

OURS_RUNNER = Path(__file__).resolve().parent / "_ours_runner.py"
THEIRS_RUNNER = Path(__file__).resolve().parent / "_deepmd_infer.py"
QUICK = {"frames": 16, "repeats": 3, "min_seconds": 1.0, "lib_frames": 512, "cli_frames": 2000, "full_rounds": 1}
FULL = {"frames": 32, "repeats": 5, "min_seconds": 2.0, "lib_frames": 1024, "cli_frames": 4000, "full_rounds": 5}


class Theirs:
    """The DeePMD-kit process of one task, answering one request of modes per line."""

    def __init__(self, task: str, ns: Any, system: Path) -> None:
        wdir = ns.workdir / "infer" / task / THEIRS
        wdir.mkdir(parents=True, exist_ok=True)
        self.log = wdir / "deepmd_infer.log"
        check_file = wdir / "check.npz"
        cmd = [str(deepmd_env.venv_python()), str(THEIRS_RUNNER), "--task", task,
               "--model", str(ns.model or Task(task).reference_model), "--system", str(system),
               "--frames", str(ns.frames), "--kinds", ns.deepmd_models, "--batch-atoms", ns.deepmd_batch_atoms,
               "--precision", ns.precision, "--workdir", str(wdir), "--save-check", str(check_file)]
        most = str(max(int(t) for t in ns.deepmd_threads.split(",")))
        env = deepmd_env.deepmd_run_env(None) | {"OMP_NUM_THREADS": most, "DP_INTRA_OP_PARALLELISM_THREADS": most,
                                                "DP_INTER_OP_PARALLELISM_THREADS": "1"}
        launch = time.time()
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                                         text=True, cwd=wdir)
        self.ready: dict[str, Any] = self._reply()["ready"]
        self.ready["total_s"] = self.ready["ready_epoch"] - launch
        self.check = dict(np.load(check_file))

    def _reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                out: dict[str, Any] = json.loads(line)
                return out
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"DeePMD-kit's inference process ended (log {self.log}):\n{tail}")

    def run(self, modes: list[ModeKey], min_seconds: float) -> list[dict[str, Any]]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"modes": modes, "min_seconds": min_seconds}) + "\n")
        self.proc.stdin.flush()
        results: list[dict[str, Any]] = self._reply()["results"]
        return results

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ours_lib(task: str, ns: Any, system: Path) -> dict[str, Any]:
    wdir = ns.workdir / "infer" / task / OURS
    cmd = [sys.executable, str(OURS_RUNNER), "infer", "--model", str(ns.model or Task(task).reference_model),
           "--system", str(system), "--frames", str(ns.frames), "--lib-frames", str(ns.lib_frames),
           "--min-seconds", str(ns.min_seconds), "--precision", ns.precision, "--save", str(wdir / "check.npz"),
           *([] if ns.no_floor else ["--floor"])]
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


def _grid(ns: Any) -> list[ModeKey]:
    sizes = sorted({min(b or ns.frames, ns.frames) for b in parse_batches(ns.batches)})
    return [(kind, int(atoms), int(threads), out, b) for kind in ns.deepmd_models.split(",")
            for atoms in ns.deepmd_batch_atoms.split(",") for threads in ns.deepmd_threads.split(",")
            for out in ns.outputs.split(",") for b in sizes]


def _rounds(task: str, ns: Any, big: Path, small: Path, small_n: int, errors: list[str]
            ) -> tuple[dict[ModeKey, Mode], dict[str, Any] | None, Any, dict[int, Any], dict[int, Any]]:
    """Every round: half of DeePMD-kit's modes, ours in-process, the other half, our CLI."""
    modes: dict[ModeKey, Mode] = {}
    lib: dict[int, dict[str, Any]] = {}
    cli: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
    theirs = attempt(errors, f"{task}/{THEIRS} start", lambda: Theirs(task, ns, big)) \
        if ns.side in (THEIRS, "both") else None
    do_ours = ns.side in (OURS, "both")
    try:
        for r in range(ns.repeats):
            todo: list[ModeKey] = _grid(ns) if r < ns.full_rounds else \
                [m.key for out in ns.outputs.split(",") for m in fastest(modes, out, ns.remeasure)]
            turn = r % len(todo) if todo else 0  # (no modes at all with --side dptensor)
            todo = todo[turn:] + todo[:turn]  # no mode is always first
            half = len(todo) // 2
            jobs: list[tuple[str, Any]] = []
            for i, part in enumerate((todo[:half], todo[half:])):
                if theirs is not None and part:
                    jobs.append((f"{task}/{THEIRS} {len(part)} modes",
                                 lambda r=r, m=part: collect(modes, r, theirs.run(m, ns.min_seconds))))
                if do_ours and i == 0:
                    jobs.append((f"{task}/{OURS} library", lambda r=r: lib.__setitem__(r, _ours_lib(task, ns, big))))
            if do_ours and not ns.no_cli:
                jobs.append((f"{task}/{OURS} cli", lambda r=r: cli.__setitem__(
                    r, (_ours_cli(task, ns, small, small_n), _ours_cli(task, ns, big, ns.cli_frames)))))
            for label, job in jobs:
                print(f"[infer] round {r + 1}/{ns.repeats}: {label}", file=sys.stderr)
                attempt(errors, label, job)
    finally:
        if theirs is not None:
            theirs.close()
    return modes, (theirs.ready if theirs is not None else None), (theirs.check if theirs else None), lib, cli


def run_task(task: str, ns: Any, errors: list[str]) -> tuple[str, dict[str, Any]]:
    frames = inference_frames(task, ns.cli_frames)
    base = ns.workdir / "infer" / task
    small_n = max(ns.lib_frames, ns.cli_frames // 4)
    big = write_system(frames, base / f"system_{ns.cli_frames}", ["O", "H"])
    small = write_system(Frames(frames.coord[:small_n], frames.atype, None if frames.box is None
                                else frames.box[:small_n]), base / f"system_{small_n}", ["O", "H"])
    modes, ready, check, lib, cli = _rounds(task, ns, big, small, small_n, errors)
    cli_steady = {r: (b["frames"] - a["frames"]) / (b["wall_s"] - a["wall_s"]) for r, (a, b) in cli.items()
                  if b["wall_s"] > a["wall_s"]}
    floored = {r: x for r, x in lib.items() if x.get("floor")}  # rounds whose runner measured the floor
    rows = [(f"predict() in-process, the same {ns.frames} frames, one call",
             {r: x["same_frames"]["fps"] for r, x in lib.items()}),
            (f"predict() in-process, {ns.lib_frames} frames, one call", {r: x["lib"]["fps"] for r, x in lib.items()}),
            (f"`dptensor predict` steady state ({small_n}→{ns.cli_frames} frames)", cli_steady),
            (f"`dptensor predict` end to end, {ns.cli_frames} frames incl. start-up",
             {r: b["frames"] / b["wall_s"] for r, (_, b) in cli.items()}),
            (f"compute floor of the same {ns.frames} frames (bench/floor.py; no implementation reaches it)",
             {r: x["floor"]["fps"] for r, x in floored.items()})]
    notes = [f"frames: {big} (float64, {frames.atype.size} atoms, {'periodic' if frames.box is not None else 'nopbc'});"
             f" DeePMD-kit on its first {ns.frames}; {ns.precision}; {ns.repeats} rounds. Noisy on a shared machine: "
             "compare within one run.", "start-up, launch → frames read and model loaded, s (min / median / max):"]
    if ready is not None:
        notes.append(f"  DeePMD-kit: {ready['total_s']:.2f} s (one process: import {ready['import_s']:.2f}, read "
                     f"{ready['read_s']:.2f}, freeze {ready['freeze_s']:.2f}, load "
                     + ", ".join(f"{k} {v:.2f}" for k, v in ready["load_s"].items()) + ")")
    notes.append(startup_line("dptensor in-process", [x["startup"] for x in lib.values()]))
    if floored:
        last = floored[max(floored)]["floor"]
        notes.append("compute floor, last round, ms/frame: " + ", ".join(
            f"{k} {v:.3f}" for k, v in last["ms_per_frame"].items())
            + f" (one thread's forward kernels alone, warm caches, ÷ {last['threads']} threads)")
        share = spread([100 * x["lib"]["fps"] / x["floor"]["fps"] for x in floored.values()])
        notes.append(f"in-process predict() ({ns.lib_frames} frames) at {fmt_spread(share, ' %')} of the floor, per round")
    if cli_steady:
        est = sorted(cli[r][1]["wall_s"] - cli[r][1]["frames"] / rate for r, rate in cli_steady.items())
        notes.append(f"  `dptensor predict` (wall − frames / steady rate): {est[0]:.2f} / "
                     f"{est[len(est) // 2]:.2f} / {est[-1]:.2f} s")
    result: dict[str, Any] = {"modes": [{"key": m.key, "all": m.all_frames, "fps": m.fps} for m in modes.values()],
                              "lib": {r: {k: v for k, v in x.items() if k != "check"} for r, x in lib.items()},
                              "cli": {r: [{k: v for k, v in y.items() if k != "check"} for y in pair]
                                      for r, pair in cli.items()},
                              "cli_steady_fps": cli_steady, "deepmd_ready": ready}
    if check is not None and lib:
        for key in ("global_", "atomic"):
            diff = _max_diff(lib[max(lib)]["check"], check, key)
            result[f"max_abs_diff_{key.strip('_')}"] = diff
            notes.append(f"max |ours − DeePMD-kit|, {key.strip('_')} outputs of the first frame: {diff:.3g}")
        if cli:
            diff = _max_diff(cli[max(cli)][1]["check"], check, "global_")
            notes.append(f"max |`dptensor predict` npz − DeePMD-kit|, global: {diff:.3g}")
    for out in ("global", "atomic"):
        best = next(iter(fastest(modes, out)), None)
        if best is not None:
            result[f"fastest_{out}"] = {"key": best.key, "fps": best.fps}
    title = f"inference, {task}{', ' + ns.model.parent.name if ns.model else ''} ({ns.precision}, {frames.atype.size} atoms)"
    return render_task(title, modes, rows, notes), result


def main(argv: list[str] | None = None) -> int:
    ap = common.base_parser(__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: "
                    + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    ap.add_argument("--frames", type=int, help=f"frames DeePMD-kit evaluates per mode (default {FULL['frames']})")
    ap.add_argument("--repeats", type=int, help=f"rounds (default {FULL['repeats']})")
    ap.add_argument("--min-seconds", type=float, help=f"time each mode at least (default {FULL['min_seconds']})")
    ap.add_argument("--lib-frames", type=int, help=f"frames of the large in-process call (default {FULL['lib_frames']})")
    ap.add_argument("--cli-frames", type=int, help=f"frames of the system file (default {FULL['cli_frames']})")
    ap.add_argument("--full-rounds", type=int, help="rounds that time every DeePMD-kit mode "
                    f"(default: {FULL['full_rounds']}, --quick {QUICK['full_rounds']})")
    ap.add_argument("--remeasure", type=int, default=3,
                    help="later rounds time the N fastest DeePMD-kit modes per output kind (default 3)")
    ap.add_argument("--batches", default="1,4,16,all", help="DeePMD-kit frames per eval call")
    ap.add_argument("--outputs", default="global,atomic", help="DeePMD-kit eval outputs")
    ap.add_argument("--deepmd-threads", default="1,2", help="DeePMD-kit intra-op threads (inter-op: 1)")
    ap.add_argument("--deepmd-batch-atoms", default="1024", help="DP_INFER_BATCH_SIZE values (atoms per batch)")
    ap.add_argument("--deepmd-models", default="checkpoint,frozen",
                    help="DeePMD-kit model files: the .pt checkpoint and/or the frozen .pth (dp --pt freeze)")
    ap.add_argument("--no-cli", action="store_true", help="skip `dptensor predict`")
    ap.add_argument("--no-floor", action="store_true", help="skip the compute-floor row (bench/floor.py)")
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
        common.ensure_deepmd_env()
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
