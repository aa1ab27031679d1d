"""The descriptor's two inference contractions side by side on the reference models: dense
(all G at once, each centre's pairs zero-padded) against blocked (G block by block, in
cache), by frames per call — the size of a synchronous prediction batch — single-threaded,
interleaved (dense, blocked, dense, …) so a busy moment of the machine falls on both.
Prints ms per frame (median [min–max] over the rounds), dense/blocked, the padded buffer's
size (model.descriptor.DENSE_CONTRACTION_MAX picks dense up to it on a CPU) and the
largest relative difference of the atomic tensors.

    .venv/bin/python bench/bench_contraction.py [--task dipole|polar|both] [--frames 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from inputs import Task, task_names

import model.descriptor as descriptor
from model import load_model
from model.data import load_system
from model.runtime import tune_allocator

FORCED = {"dense": 10**12, "blocked": 0}


def ms_per_frame(model: torch.nn.Module, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None,
                 calls: int) -> tuple[float, torch.Tensor]:
    """Best of ``calls`` calls (after one warm-up), ms per frame."""
    with torch.inference_mode():
        out = model(coord, atype, box, differentiable=False)
        best = float("inf")
        for _ in range(calls):
            t0 = time.perf_counter()
            model(coord, atype, box, differentiable=False)
            best = min(best, time.perf_counter() - t0)
    return 1e3 * best / coord.shape[0], out.atomic


def padded_elements(model: torch.nn.Module, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None) -> int:
    """nC · width · M1 of the dense contraction's buffer for this call."""
    with torch.inference_mode():
        centres = model.centres(atype)
        env = model.environment(coord, atype, box, centres)
    return int(env.n_centres * env.width * model.descriptor.m1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["dipole", "polar", "both"], default="both")
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=3, help="calls per timing (the best counts)")
    args = ap.parse_args()
    tune_allocator()  # as in the workers
    torch.set_num_threads(1)
    default = descriptor.DENSE_CONTRACTION_MAX
    for task in task_names(args.task):
        model = load_model(Task(task).reference_model)
        system = load_system(Task(task).validation_system("global"), kind=task, type_map=model.type_map,
                             sel_type=model.sel_type)
        atype = torch.as_tensor(system.atype)
        print(f"== {task}: {system.coord.shape[1]} atoms, {'periodic' if system.box is not None else 'no cell'}; "
              f"dense on a CPU up to {default:,} elements ==")
        print(f"{'frames':>6} {'elements':>10} {'dense ms/frame':>22} {'blocked ms/frame':>22} "
              f"{'dense/blocked':>20} {'max rel diff':>12}")
        for nf in args.frames:
            picks = np.arange(nf) % system.nframes
            coord = torch.as_tensor(system.coord[picks])
            box = None if system.box is None else torch.as_tensor(system.box[picks])
            times: dict[str, list[float]] = {"dense": [], "blocked": []}
            atomic: dict[str, torch.Tensor] = {}
            try:
                for _ in range(args.rounds):
                    for mode, limit in FORCED.items():
                        descriptor.DENSE_CONTRACTION_MAX = limit
                        t, atomic[mode] = ms_per_frame(model, coord, atype, box, args.calls)
                        times[mode].append(t)
            finally:
                descriptor.DENSE_CONTRACTION_MAX = default
            ratio = [d / b for d, b in zip(times["dense"], times["blocked"], strict=True)]
            rel = ((atomic["dense"] - atomic["blocked"]).abs().max() / atomic["dense"].abs().max()).item()

            def cell(v: list[float]) -> str:
                return f"{statistics.median(v):.3f} [{min(v):.3f}-{max(v):.3f}]"

            print(f"{nf:6d} {padded_elements(model, coord, atype, box):10,d} {cell(times['dense']):>22} "
                  f"{cell(times['blocked']):>22} {cell(ratio):>20} {rel:12.1e}", flush=True)


if __name__ == "__main__":
    main()
