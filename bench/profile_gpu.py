"""Where a GPU forward spends its time: neighbour search (environment) vs the nets and
contractions (forward_env), and the top kernels/ops by device and host time.

    python bench/profile_gpu.py [--rows 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inputs import Task, replicate

from model.checkpoint import load_model
from model.data import load_system

CASES = [("dipole", (3, 3, 6), 1), ("polar", (1, 1, 1), 64), ("polar", (3, 3, 6), 1)]


def timed(fn, repeats: int = 5) -> float:  # type: ignore[no-untyped-def]
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=15)
    ns = ap.parse_args()
    system = load_system(Task("polar").validation_system("global"), type_map=["O", "H"])
    assert system.box is not None
    for kind, reps, frames in CASES:
        model = load_model(Task(kind).reference_model, device="cuda")
        coord, box = replicate(system.coord[0], system.box[0], reps)
        atype = torch.tensor(np.tile(system.atype, int(np.prod(reps))), device="cuda")
        c = torch.tensor(np.repeat(coord[None], frames, 0), device="cuda")
        b = torch.tensor(np.repeat(box[None], frames, 0), device="cuda")
        nf, nat = c.shape[:2]
        with torch.inference_mode():
            centres = model.centres(atype)
            env = model.environment(c, atype, b, centres)
            t_env = timed(lambda: model.environment(c, atype, b, centres))  # noqa: B023
            t_net = timed(lambda: model.forward_env(env, centres, nf, nat, differentiable=False))  # noqa: B023
            print(f"\n== {kind} {nat} atoms × {frames}: environment {t_env * 1e3:.2f} ms, "
                  f"forward_env {t_net * 1e3:.2f} ms, pairs {int(env.rij.shape[0])}", flush=True)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(3):
                    model(c, atype, b, differentiable=False)
                torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=ns.rows), flush=True)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=ns.rows), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
