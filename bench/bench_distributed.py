"""Data-parallel training: 2 gloo ranks vs 1 process on the dipole example, several seeds.

Both train the same number of steps (the 2-rank run sees twice the frames per step, as with
DeePMD-kit's and torchrun's data parallelism); the final validation RMSE (over all
validation frames) of each seed is printed with the wall time. On a shared, noisy machine
the times are indicative only; the RMSE band is what is compared.

    .venv/bin/python bench/bench_distributed.py [--steps 300] [--seeds 1 2 3] [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from inputs import Task, prepare_input

from model.launch import train_data_parallel
from model.train import train


def _input(workdir: Path, steps: int, seed: int, small: bool) -> Path:
    path = prepare_input(Task("dipole").input_json, workdir, steps, seed=seed, disp_freq=steps)
    if small:  # minutes, not hours, on 2 shared cores
        raw = json.loads(path.read_text())
        raw["model"]["descriptor"].update(neuron=[8, 16], axis_neuron=4)
        raw["model"]["fitting_net"]["neuron"] = [32, 32]
        path.write_text(json.dumps(raw, indent=1))
    return path


def run(mode: str, steps: int, seed: int, small: bool, root: Path) -> dict[str, Any]:
    workdir = root / f"{mode}-seed{seed}"
    source = _input(workdir, steps, seed, small)
    t0 = time.monotonic()
    if mode == "1proc":
        result = train(source, workdir / "out", device="cpu")
    else:
        result = train_data_parallel(source, workdir / "out", nproc=int(mode.removesuffix("rank")), device="cpu")
    wall = time.monotonic() - t0
    return {"mode": mode, "seed": seed, "steps": steps, "wall_s": round(wall, 2),
            "val_rmse": result.metrics["val_rmse"], "val_rmse_atomic": result.metrics.get("val_rmse_atomic")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--small", action="store_true", help="a smaller network than the example's")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for mode in ("1proc", "2rank"):
                rows.append(run(mode, args.steps, seed, args.small, Path(tmp)))
                r = rows[-1]
                print(f"{mode:6s} seed {seed}: val_rmse {r['val_rmse']:.4e}  atomic {r['val_rmse_atomic']:.4e}  "
                      f"{r['wall_s']:.1f} s", flush=True)
    for mode in ("1proc", "2rank"):
        vals = [r["val_rmse"] for r in rows if r["mode"] == mode]
        walls = [r["wall_s"] for r in rows if r["mode"] == mode]
        spread = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"{mode:6s}: val_rmse {statistics.mean(vals):.4e} ± {spread:.1e} "
              f"[{min(vals):.4e}, {max(vals):.4e}]  wall {statistics.mean(walls):.1f} s (noisy machine)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
