"""DeePMD-kit side of the benchmarks; runs *inside* the DeePMD-kit venv (``deepmd_env.VENV_DIR``).

Subcommands (each prints one JSON object as the last line of stdout; DeePMD-kit's own
output goes to log files in the work dir):

  train  --input IN --workdir DIR --steps N [--seed S] [--disp-freq F] [--save-freq F]
  test   --model M --system SYS [-n N] --workdir DIR

Started by the orchestrators through ``common.deepmd_runner``; usable by hand with the
environment of ``deepmd_env.deepmd_run_env``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from inputs import prepare_input

BIN_DIR = Path(sys.executable).parent
GLOBAL_LABELS = ("dipole", "polarizability")
ATOMIC_LABELS = ("atomic_dipole", "atom_dipole", "atomic_polarizability", "atom_polarizability")


class RunnerError(RuntimeError):
    """A DeePMD-kit command failed."""


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    import torch

    return {"deepmd_kit": version("deepmd-kit"), "torch": torch.__version__}


def _dp(args: list[str], cwd: Path, log: Path) -> float:
    """Run ``dp --pt ARGS`` in ``cwd`` with output to ``log``; return its wall time."""
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN_DIR / "dp"), "--pt", *args]
    with log.open("w") as fh:
        start = time.perf_counter()
        res = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
    if res.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise RunnerError(f"{' '.join(cmd)} failed (exit {res.returncode}) in {cwd}:\n{tail}")
    return wall


def cmd_train(ns: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(ns.workdir).resolve()
    inp = prepare_input(Path(ns.input), workdir, ns.steps, ns.seed, ns.disp_freq, ns.save_freq)
    wall = _dp(["train", inp.name], workdir, workdir / "train.log")
    match = re.search(
        r"average training time: ([0-9.eE+-]+) s/batch", (workdir / "train.log").read_text()
    )
    ckpt = workdir / "model.ckpt.pt"
    return {
        "steps": ns.steps,
        "wall_s": wall,
        "log_s_per_step": float(match.group(1)) if match else None,
        "workdir": str(workdir),
        "model": str(ckpt.resolve()) if ckpt.exists() else None,
        "lcurve": str(workdir / "lcurve.out"),
    }


def freeze(model: Path, workdir: Path) -> Path:
    if model.suffix == ".pth":
        return model
    frozen = workdir / f"{model.stem}.frozen.pth"
    if not frozen.exists() or frozen.stat().st_mtime < model.stat().st_mtime:
        _dp(["freeze", "-c", str(model), "-o", str(frozen)], workdir, workdir / "freeze.log")
    return frozen


def _labels(system: Path) -> tuple[bool, bool]:
    """(has global label, has atomic label) in any set of the system."""
    names = {p.stem for p in system.glob("set.*/*.npy")}
    return bool(names & set(GLOBAL_LABELS)), bool(names & set(ATOMIC_LABELS))


def _parse_test(text: str) -> dict[str, float | int | None]:
    """First system block of ``dp test`` output: nframes, RMSE, RMSE/N (None if absent)."""
    nframes = re.search(r"# number of test data : (\d+)", text)
    rmse = re.search(r"(?:Dipole|Polarizability)\s+RMSE\s+: (\S+)", text)
    rmse_n = re.search(r"(?:Dipole|Polarizability)\s+RMSE/N\s+: (\S+)", text)
    if nframes is None or rmse is None:
        raise RunnerError(f"cannot parse dp test output:\n{text[-2000:]}")
    return {
        "nframes": int(nframes.group(1)),
        "rmse": float(rmse.group(1)),
        "rmse_per_atom": float(rmse_n.group(1)) if rmse_n else None,
    }


def cmd_test(ns: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(ns.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    system = Path(ns.system).resolve()
    frozen = freeze(Path(ns.model).resolve(), workdir)
    has_global, has_atomic = _labels(system)
    out: dict[str, Any] = {"system": str(system), "nframes": 0, "global": None, "atomic": None}
    base = ["test", "-m", str(frozen), "-s", str(system), "-n", str(ns.numb_test)]
    for kind, wanted, extra in (("global", has_global, []), ("atomic", has_atomic, ["-a"])):
        if not wanted:
            continue
        log = workdir / f"test_{system.name}_{kind}.log"
        _dp([*base, *extra, "-d", str(workdir / f"detail_{system.name}_{kind}")], workdir, log)
        res = _parse_test(log.read_text(errors="replace"))
        out["nframes"] = res.pop("nframes")
        if kind == "atomic":
            res.pop("rmse_per_atom")
        out[kind] = res
    return out


def loadable_model(model: Path, precision: str, workdir: Path) -> Path:
    """A file DeepDipole/DeepPolar can load; slim reference checkpoints are rebuilt as
    the reference README shows; ``float32`` rewrites the model's precision."""
    import torch

    if model.suffix == ".pth":
        if precision != "float64":
            raise RunnerError("--precision float32 needs a .pt checkpoint, not a frozen .pth")
        return model
    ck = torch.load(model, map_location="cpu", weights_only=True)
    if "format" in ck and "state_dict" in ck:
        state = dict(ck["state_dict"])
        extra = {"model_params": ck["model_params"], "train_infos": ck["train_infos"]}
    else:
        state = dict(ck["model"])
        extra = state.pop("_extra_state")
    if precision == "float64" and "format" not in ck:
        return model
    if precision == "float32":
        params = json.loads(json.dumps(extra["model_params"]))
        for part in ("descriptor", "fitting_net"):
            params[part]["precision"] = "float32"
        extra = {**extra, "model_params": params}
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"{model.stem}.{precision}.pt"
    torch.save({"model": {**state, "_extra_state": extra}}, out)
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description="DeePMD-kit side of the dptensor benchmarks")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="dp --pt train for N steps; wall time")
    tr.add_argument("--input", required=True)
    tr.add_argument("--workdir", required=True)
    tr.add_argument("--steps", type=int, required=True)
    tr.add_argument("--seed", type=int)
    tr.add_argument("--disp-freq", type=int)
    tr.add_argument("--save-freq", type=int)
    te = sub.add_parser("test", help="dp --pt test on one system; RMSEs")
    te.add_argument("--model", required=True)
    te.add_argument("--system", required=True)
    te.add_argument("-n", "--numb-test", type=int, default=0, help="0 = all frames")
    te.add_argument("--workdir", required=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    handlers = {"train": cmd_train, "test": cmd_test}
    try:
        result = handlers[ns.cmd](ns)
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {"tool": "deepmd-kit", **_versions(), **result}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
