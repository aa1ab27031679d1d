"""DeePMD-kit side of the benchmarks; runs *inside* the DeePMD-kit venv (``deepmd_env.VENV_DIR``).

Subcommands (each prints one JSON object as the last line of stdout; DeePMD-kit's own
output goes to log files in the work dir):

  train  --input IN --workdir DIR --steps N [--seed S] [--disp-freq F] [--save-freq F]
  test   --model M --system SYS [-n N] --workdir DIR
  modes  --model M --task dipole|polar --system SYS [--frames N] [--batches 1,4,16,all]
         [--outputs global,atomic] [--min-seconds S] [--precision P] --workdir DIR [--save OUT.npz]

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
from functools import partial
from pathlib import Path
from typing import Any

from inputs import prepare_input, read_system
from timing import parse_batches, throughput

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


def _freeze(model: Path, workdir: Path) -> Path:
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
    frozen = _freeze(Path(ns.model).resolve(), workdir)
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


def _loadable_model(model: Path, precision: str, workdir: Path) -> Path:
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


def cmd_modes(ns: argparse.Namespace) -> dict[str, Any]:
    """DeepDipole/DeepPolar.eval in every (output, batch) mode on the first --frames frames
    of --system, each mode timed for at least --min-seconds after one warm-up pass; the
    threads and DP_INFER_BATCH_SIZE are this process's environment (one process per
    setting). Start-up (imports, reading the frames, building the evaluator) is reported
    apart from the steady-state frames/s."""
    t_start = time.time()
    import numpy as np

    if ns.task == "dipole":
        from deepmd.infer.deep_dipole import DeepDipole as Evaluator
    else:
        from deepmd.infer.deep_polar import DeepPolar as Evaluator
    t_import = time.time()
    frames = read_system(Path(ns.system))
    t_read = time.time()
    workdir = Path(ns.workdir).resolve()
    dp = Evaluator(str(_loadable_model(Path(ns.model).resolve(), ns.precision, workdir)))
    t_ready = time.time()
    n = min(ns.frames, frames.nframes)
    coord, box, atype = frames.coord[:n], None if frames.box is None else frames.box[:n], frames.atype

    def evaluate(atomic: bool, f0: int, f1: int) -> Any:
        return dp.eval(coord[f0:f1], None if box is None else box[f0:f1], atype, atomic=atomic)

    modes = [(out, b) for out in ns.outputs.split(",") for b in sorted({min(b or n, n) for b in parse_batches(ns.batches)})]
    rot = ns.rotate % len(modes)  # repeats start at different modes: no mode is always first
    modes = modes[rot:] + modes[:rot]
    for out in {m[0] for m in modes}:  # warm-up: first-call costs, both call shapes
        evaluate(out == "atomic", 0, 1)
        evaluate(out == "atomic", 0, min(4, n))
    results = []
    for out, b in modes:
        res = throughput(partial(evaluate, out == "atomic"), n, b, ns.min_seconds)
        results.append({"output": out, "batch": b, "all": b == n, **res})
    sample = min(n, ns.check_frames)
    glob = np.asarray(evaluate(False, 0, sample)).reshape(sample, -1)
    atomic = np.asarray(evaluate(True, 0, sample)).reshape(sample, atype.size, -1)
    if not (np.all(np.isfinite(glob)) and np.all(np.isfinite(atomic))):
        raise RunnerError("DeePMD-kit returned non-finite predictions")
    if ns.save:
        np.savez(ns.save, global_=glob, atomic=atomic)
    return {
        "frames": n,
        "natoms": int(atype.size),
        "pbc": box is not None,
        "precision": ns.precision,
        "startup": {"import_s": t_import - t_start, "read_s": t_read - t_import, "load_s": t_ready - t_read,
                    "ready_epoch": t_ready},
        "modes": results,
    }


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
    md = sub.add_parser("modes", help="DeepDipole/DeepPolar.eval frames/s in every output and batch mode")
    md.add_argument("--model", required=True)
    md.add_argument("--task", choices=["dipole", "polar"], required=True)
    md.add_argument("--system", required=True, help="npy system to read the frames from")
    md.add_argument("--frames", type=int, default=16, help="the first N frames of the system")
    md.add_argument("--batches", default="1,4,16,all", help="frames per eval call; all = --frames")
    md.add_argument("--outputs", default="global,atomic", help="eval(atomic=False) / eval(atomic=True)")
    md.add_argument("--min-seconds", type=float, default=1.5, help="time each mode at least this long")
    md.add_argument("--rotate", type=int, default=0, help="start with the k-th mode")
    md.add_argument("--check-frames", type=int, default=2, help="frames whose outputs are saved")
    md.add_argument("--precision", choices=["float64", "float32"], default="float64")
    md.add_argument("--workdir", required=True)
    md.add_argument("--save", help="write the outputs of the check frames (.npz: global_, atomic)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    handlers = {"train": cmd_train, "test": cmd_test, "modes": cmd_modes}
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
