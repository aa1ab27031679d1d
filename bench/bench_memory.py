"""Bounded memory for long trajectories: predict N frames (default 100 000) of 192-atom
water, streaming from a memory-mapped coordinate file into an .npz, and report peak RSS
and frames/s. Runs the prediction in a child process so that its peak RSS is its own.

    .venv/bin/python bench/bench_memory.py [--frames 100000] [--task dipole|polar]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from inputs import Task

from model.data import load_system

WORK = Path(__file__).resolve().parent.parent / "runs" / "bench" / "memory"


class NpyFrames:
    """Frames of a [nf, nat, 3] float64 .npy file, read from disk slice by slice (a memory
    map would count every page it touched in the resident set)."""

    def __init__(self, path: Path) -> None:
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
            self.offset = f.tell()
        self.path, self.shape = path, shape

    def __getitem__(self, sel: slice) -> np.ndarray:
        start, stop, _ = sel.indices(self.shape[0])
        per_frame = self.shape[1] * 3
        data = np.fromfile(self.path, dtype=np.float64, count=(stop - start) * per_frame,
                           offset=self.offset + start * per_frame * 8)
        return data.reshape(stop - start, self.shape[1], 3)


def child(task: str, coord_file: Path, out: Path) -> None:
    from model import load_model, save_predictions_npz

    model = load_model(Task(task).reference_model)
    coord = NpyFrames(coord_file)  # never fully in memory
    system = load_system(Task(task).validation_system("global"), type_map=model.type_map)
    box = None if system.box is None else np.broadcast_to(system.box[:1], (coord.shape[0], 3, 3))
    t0 = time.perf_counter()
    save_predictions_npz(out, model, coord, system.atype, box)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": int(coord.shape[0]), "seconds": dt, "frames_per_s": coord.shape[0] / dt,
                      "peak_rss_mb": rss_mb}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--task", choices=["dipole", "polar"], default="dipole")
    ap.add_argument("--child", nargs=3, metavar=("TASK", "COORDS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    system = load_system(Task(args.task).validation_system("global"), type_map=["O", "H"])
    coord_file = WORK / f"coords_{args.task}_{args.frames}.npy"
    if not coord_file.exists():  # the validation frames, tiled and jittered, written chunk by chunk
        rng = np.random.default_rng(0)
        out = np.lib.format.open_memmap(coord_file, mode="w+", dtype=np.float64,
                                        shape=(args.frames, system.natoms, 3))
        for f0 in range(0, args.frames, 1000):
            n = min(1000, args.frames - f0)
            src = system.coord[np.arange(f0, f0 + n) % system.nframes]
            out[f0:f0 + n] = src + 0.01 * rng.standard_normal(src.shape)
        out.flush()
        del out
    result_file = WORK / f"pred_{args.task}.npz"
    proc = subprocess.run([sys.executable, __file__, "--child", args.task, str(coord_file), str(result_file)],
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    atomic_mb = args.frames * system.natoms * (3 if args.task == "dipole" else 9) * 8 / 2**20
    coord_mb = coord_file.stat().st_size / 2**20
    print(f"{args.task}: {res['frames']} frames of {system.natoms} atoms in {res['seconds']:.1f} s "
          f"({res['frames_per_s']:.0f} frames/s)")
    print(f"peak RSS {res['peak_rss_mb']:.0f} MB; the coordinates are {coord_mb:.0f} MB and the atomic "
          f"predictions {atomic_mb:.0f} MB (written to {result_file}, {result_file.stat().st_size / 2**20:.0f} MB)")


if __name__ == "__main__":
    main()
