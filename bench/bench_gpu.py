"""GPU figures: inference frames/s for 192- and 10 368-atom water in float32 and float64,
training steps/s of both examples, one NCCL rank, and the fraction of the device's
measured matrix-product rate the inference reaches.

Run on a machine with a CUDA device (bench/gpu_check.sh runs it with the CUDA tests):

    python bench/bench_gpu.py [--repeats 5] [--json out.json]

FLOPs are counted by torch.utils.flop_counter (matrix products only: the embedding and
fitting nets and the contractions, which are nearly all of the arithmetic); the bound is
a large square matrix product of the same dtype measured on the same device in the same
run, so "fraction of bound" needs no spec-sheet figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inputs import Task, prepare_input, replicate

from model import distributed
from model.checkpoint import load_model
from model.data import load_system
from model.train import train

SIZES = {"192": (1, 1, 1), "10368": (3, 3, 6)}  # replication of the 192-atom cell


def matmul_rate(dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    """FLOP/s of an n×n×n product on the device (the bound the nets' products are held to)."""
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def time_forward(model: torch.nn.Module, c: torch.Tensor, atype: torch.Tensor, b: torch.Tensor,
                 repeats: int) -> list[float]:
    """Seconds per call of the inference forward, device-resident inputs, synchronised."""
    with torch.inference_mode():
        for _ in range(2):
            model(c, atype, b, differentiable=False)
        torch.cuda.synchronize()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(c, atype, b, differentiable=False)
            torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return out


def count_flops(model: torch.nn.Module, c: torch.Tensor, atype: torch.Tensor, b: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(c, atype, b, differentiable=False)
    return int(counter.get_total_flops())


def inference(repeats: int, bounds: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    # periodic 192-atom water for both models (the dipole example's validation set is non-periodic)
    system = load_system(Task("polar").validation_system("global"), type_map=["O", "H"])
    assert system.box is not None
    for kind in ("dipole", "polar"):
        for precision, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            model = load_model(Task(kind).reference_model, device="cuda", precision=precision)
            for label, reps in SIZES.items():
                coord, box = replicate(system.coord[0], system.box[0], reps)
                atype = np.tile(system.atype, int(np.prod(reps)))
                for frames in ((1, 64, 512) if label == "192" else (1, 8)):
                    try:
                        c = torch.tensor(np.repeat(coord[None], frames, 0), dtype=dtype, device="cuda")
                        b = torch.tensor(np.repeat(box[None], frames, 0), dtype=dtype, device="cuda")
                        a = torch.tensor(atype, device="cuda")
                        times = time_forward(model, c, a, b, repeats)
                        flops = count_flops(model, c, a, b)
                    except torch.OutOfMemoryError as exc:
                        print(f"  {kind} {precision} {label} ×{frames}: out of memory ({exc})", flush=True)
                        torch.cuda.empty_cache()
                        continue
                    best, med = min(times), float(np.median(times))
                    row = {"kind": kind, "precision": precision, "atoms": len(atype), "frames_per_call": frames,
                           "frames_per_s_best": frames / best, "frames_per_s_median": frames / med,
                           "frames_per_s_worst": frames / max(times), "ms_per_call_median": med * 1e3,
                           "flop_per_frame": flops / frames, "tflops_median": flops / med / 1e12,
                           "fraction_of_matmul_bound": flops / med / bounds[precision],
                           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
                    rows.append(row)
                    print(f"  {kind:6s} {precision} {len(atype):6d} atoms ×{frames:4d}: "
                          f"{row['frames_per_s_median']:10.1f} frames/s (best {row['frames_per_s_best']:.1f}, "
                          f"worst {row['frames_per_s_worst']:.1f}), {row['tflops_median']:.2f} TFLOP/s = "
                          f"{row['fraction_of_matmul_bound']:.1%} of the {precision} matmul rate", flush=True)
                    del c, b
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
    return rows


def steps_per_s(kind: str, short: int, long: int, workdir: Path, world: distributed.World | None = None) -> dict:
    """Two trainings of the example input (short and long); the difference excludes start-up."""
    walls = {}
    for steps in (short, long):
        inp = prepare_input(Task(kind).input_json, workdir / f"{kind}-{steps}", steps, disp_freq=steps)
        t0 = time.perf_counter()
        train(inp, workdir / f"{kind}-{steps}", device="cuda", world=world)
        walls[steps] = time.perf_counter() - t0
    return {"steps_per_s": (long - short) / (walls[long] - walls[short]),
            "wall_s": {str(k): v for k, v in walls.items()}}


def one_nccl_rank(kind: str, short: int, long: int, workdir: Path) -> dict:
    """The data-parallel code path (NCCL process group, gradient all-reduce) with one rank:
    the device has one GPU, and NCCL refuses two ranks on the same GPU."""
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29531"})
    world, dev = distributed.init_world("cuda", 120.0)
    try:
        backend = torch.distributed.get_backend()
        # the collectives the data-parallel loop uses, on this backend (with one rank the loop skips them)
        flat = torch.arange(6, dtype=torch.float64, device=dev)
        torch.distributed.all_reduce(flat)
        box: list[Any] = [{"step": 7}]
        torch.distributed.broadcast_object_list(box, src=0)
        collectives_ok = bool(torch.equal(flat.cpu(), torch.arange(6, dtype=torch.float64))) and box[0] == {"step": 7}
        res = steps_per_s(kind, short, long, workdir, world=world)
    finally:
        torch.distributed.destroy_process_group()
    return {**res, "backend": backend, "device": str(dev), "collectives_ok": collectives_ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--short", type=int, default=50)
    ap.add_argument("--long", type=int, default=350)
    ap.add_argument("--json", type=Path)
    ns = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    print(f"device {props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
          f"torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    bounds = {"float64": matmul_rate(torch.float64), "float32": matmul_rate(torch.float32)}
    print("matmul bound (8192³, same run): " + ", ".join(f"{k} {v / 1e12:.1f} TFLOP/s" for k, v in bounds.items()),
          flush=True)
    result: dict[str, Any] = {"device": props.name, "torch": torch.__version__,
                              "matmul_tflops": {k: v / 1e12 for k, v in bounds.items()}}
    print("inference (forward on device-resident frames, synchronised; median of repeats):", flush=True)
    result["inference"] = inference(ns.repeats, bounds)
    with tempfile.TemporaryDirectory() as tmp:
        result["training"] = {}
        for kind in ("dipole", "polar"):
            res = steps_per_s(kind, ns.short, ns.long, Path(tmp) / "single")
            result["training"][kind] = res
            print(f"training {kind}: {res['steps_per_s']:.1f} steps/s (one process, float64, batch as in the "
                  f"example; {ns.short} vs {ns.long} steps)", flush=True)
        res = one_nccl_rank("dipole", ns.short, ns.long, Path(tmp) / "nccl")
        result["training"]["dipole_nccl_1rank"] = res
        print(f"training dipole, one {res['backend']} rank on {res['device']}: {res['steps_per_s']:.1f} steps/s "
              f"(all_reduce + broadcast checked: {res['collectives_ok']})",
              flush=True)
    if ns.json:
        ns.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
