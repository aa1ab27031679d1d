"""Shared code of the benchmark scripts (run from our venv): command line, both tools'
train / test / inference calls, the two-run steps/s method and the result tables."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import deepmd_env
from inputs import TASKS

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_deepmd_runner.py"
OURS, THEIRS = "dptensor", "deepmd"
SIDES = (OURS, THEIRS)


class BenchError(RuntimeError):
    """One side of a benchmark failed; the other side's numbers are still reported."""


# ---------------------------------------------------------------- command line / env


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--task", choices=[*TASKS, "both"], default="both")
    ap.add_argument(
        "--side", choices=[*SIDES, "both"], default="both", help="run only one tool (default: both)"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=REPO / "runs" / "bench",
        help="where runs are written (default: runs/bench, git-ignored)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="pin intra-op threads of both tools (default: torch's default)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write results here")
    return ap


def sides(choice: str) -> list[str]:
    return list(SIDES) if choice == "both" else [choice]


def subprocess_env(threads: int | None) -> dict[str, str]:
    """Environment for our own subprocesses (the same thread pinning as DeePMD-kit's)."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ""
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run_json(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd``; stderr goes to ``log``; the last stdout line must be a JSON object."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{' '.join(cmd)} exited {res.returncode} (log {log}):\n{tail}")
    lines = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise BenchError(f"{' '.join(cmd)} printed no JSON (log {log})")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def timed_run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` in ``cwd`` with all output to ``log``; return the wall time in s."""
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        start = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"{' '.join(cmd)} exited {res.returncode} (log {log}):\n{tail}")
    return wall


# ---------------------------------------------------------------- DeePMD-kit side

_ENV_READY: dict[str, object] = {}


def ensure_deepmd_env() -> None:
    """Create the DeePMD-kit venv on first use (once per process)."""
    if not _ENV_READY:
        try:
            _ENV_READY.update(deepmd_env.ensure_env())
        except deepmd_env.DeepmdEnvError as exc:
            raise BenchError(str(exc)) from exc


def deepmd_runner(args: list[str], threads: int | None, log: Path) -> dict[str, Any]:
    """Run ``_deepmd_runner.py ARGS`` in the DeePMD-kit venv (created on first use)."""
    ensure_deepmd_env()
    cmd = [str(deepmd_env.venv_python()), str(RUNNER), *args]
    return run_json(cmd, deepmd_env.deepmd_run_env(threads), log)


def deepmd_version() -> str:
    return str(_ENV_READY.get("deepmd", "?"))


# ---------------------------------------------------------------- dptensor side


def dptensor_exe() -> str:
    exe = Path(sys.executable).with_name("dptensor")
    found = str(exe) if exe.exists() else shutil.which("dptensor")
    if not found:
        raise BenchError("the `dptensor` console script is not installed in this venv")
    return found


def ours_train(input_json: Path, workdir: Path, threads: int | None) -> dict[str, Any]:
    """``dptensor train INPUT --output DIR`` (input already prepared in ``workdir``)."""
    cmd = [dptensor_exe(), "train", str(input_json), "--output", str(workdir)]
    wall = timed_run(cmd, workdir, subprocess_env(threads), workdir / "train.log")
    model = workdir / "model.pt"
    if not model.exists():
        raise BenchError(f"dptensor train wrote no {model}")
    return {"wall_s": wall, "model": str(model)}


def ours_test(
    model: Path, system: Path, numb_test: int, threads: int | None, log: Path
) -> dict[str, Any]:
    cmd = [dptensor_exe(), "test", "-m", str(model), "-s", str(system), "--json"]
    if numb_test > 0:
        cmd += ["-n", str(numb_test)]
    return run_json(cmd, subprocess_env(threads), log)


# ---------------------------------------------------------------- measurement helpers


def steps_per_second(
    train: Callable[[int, Path], float], short: int, long: int, workdir: Path, repeats: int = 1
) -> dict[str, float]:
    """Steady-state steps/s = (long − short) / (t_long − t_short), each a fresh process,
    so start-up (imports, data loading, statistics, first-step costs) cancels out.
    With ``repeats`` > 1 each run is repeated and its fastest wall time kept."""
    t_short = min(train(short, workdir / f"steps{short}_r{i}") for i in range(repeats))
    t_long = min(train(long, workdir / f"steps{long}_r{i}") for i in range(repeats))
    if t_long <= t_short:
        raise BenchError(
            f"the {long}-step run ({t_long:.1f} s) was not slower than the "
            f"{short}-step run ({t_short:.1f} s); use more steps or a quieter machine"
        )
    return {
        "steps_per_s": (long - short) / (t_long - t_short),
        "wall_short_s": t_short,
        "wall_long_s": t_long,
    }


def attempt(errors: list[str], label: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn``; on BenchError record the message under ``label`` and return None."""
    try:
        return fn()
    except BenchError as exc:
        errors.append(f"{label}: {exc}")
        print(f"  ! {label} failed (see the end of the report)", file=sys.stderr)
        return None


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    title: str
    rows: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, label: str, ours: float | None, theirs: float | None) -> None:
        self.rows.append((label, ours, theirs))

    def render(self) -> str:
        head = ("metric", "dptensor", f"DeePMD-kit {deepmd_version()}", "ours/theirs")
        body = [
            (lab, _fmt(o), _fmt(t), _fmt(o / t if o is not None and t else None))
            for lab, o, t in self.rows
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
        lines = [f"== {self.title} =="]
        for r in [head, *body]:
            lines.append(
                "  ".join(
                    c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)
                )
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def report(
    tables: list[Table], errors: list[str], results: dict[str, Any], json_path: Path | None
) -> int:
    """Print the tables and errors, optionally save JSON; exit status 1 if anything failed."""
    print()
    for t in tables:
        print(t.render())
        print()
    for e in errors:
        print(f"ERROR {e}\n")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"results": results, "errors": errors, "deepmd_kit": deepmd_version()}
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if errors else 0
