"""Cost per frame vs system size (192 → ~24 000 atoms), dptensor only.

The periodic 192-atom water frames of the polar validation set are replicated n×n×n
(n = 1..5); each size is predicted with both reference models (dipole and polar) and the
time per frame and per atom is printed. Linear scaling shows as a flat time per atom:
above CELL_LIST_MIN_ATOMS the neighbour search switches from all-pairs to a cell list.

    .venv/bin/python bench/bench_scaling.py [--sizes 1 2 3 4 5] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from inputs import Task, replicate

from model import load_model, predict
from model.data import load_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    system = load_system(Task("polar").validation_system("global"), type_map=["O", "H"])
    assert system.box is not None
    print(f"threads {torch.get_num_threads()}")
    print(f"{'model':7s} {'atoms':>7s} {'ms/frame':>10s} {'µs/atom':>9s} {'per-atom vs 192':>16s}")
    for task in ("dipole", "polar"):
        model = load_model(Task(task).reference_model)
        base = None
        for n in args.sizes:
            coord, box = replicate(system.coord[0], system.box[0], (n, n, n))
            atype = np.tile(system.atype, n**3)
            frames = max(1, 64 // n**3)  # about the same number of atoms per call
            c, b = np.repeat(coord[None], frames, 0), np.repeat(box[None], frames, 0)
            predict(model, c[:1], atype, b[:1])  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                predict(model, c, atype, b)
                times.append((time.perf_counter() - t0) / frames)
            per_frame = min(times)
            per_atom = per_frame / len(atype)
            base = base or per_atom
            print(f"{task:7s} {len(atype):7d} {per_frame * 1e3:10.2f} {per_atom * 1e6:9.3f} {per_atom / base:16.2f}")


if __name__ == "__main__":
    main()
