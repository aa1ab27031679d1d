"""dptensor side of the inference benchmark, in a fresh process of the project venv, so
that its start-up is measured like DeePMD-kit's (``_deepmd_runner.py modes``).

  infer --model M --system SYS [--frames N] [--lib-frames L] [--min-seconds S] [--precision P]
        [--save OUT.npz]

Prints one JSON object: start-up (imports, reading the system, loading the model) and the
steady-state frames/s of ``model.predict`` on the first N frames (one call on all N, as
DeePMD-kit's "all" mode) and on the first L frames (one call: the chunks run on
concurrent workers).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from timing import throughput

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("infer", choices=["infer"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--lib-frames", type=int, default=512)
    ap.add_argument("--min-seconds", type=float, default=1.5)
    ap.add_argument("--check-frames", type=int, default=2)
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--save")
    ap.add_argument("--floor", action="store_true", help="also the compute floor of the same frames (bench/floor.py)")
    ns = ap.parse_args(argv)
    t_start = time.time()
    sys.path.insert(0, str(REPO))
    import numpy as np

    from model import load_model, predict
    from model.runtime import tune_allocator
    from model.structures import load_structures

    tune_allocator()  # as `dptensor predict` and the workers do
    t_import = time.time()
    m = load_model(ns.model, device="cpu", precision=ns.precision)
    t_load = time.time()
    coord, atype, box = load_structures(ns.system, m.type_map)
    t_ready = time.time()

    def evaluate(f0: int, f1: int) -> object:
        return predict(m, coord[f0:f1], atype, None if box is None else box[f0:f1])

    n, lib = min(ns.frames, len(coord)), min(ns.lib_frames, len(coord))
    evaluate(0, min(4, n))  # warm-up: first-call costs
    same = throughput(evaluate, n, n, ns.min_seconds)
    large = throughput(evaluate, lib, lib, ns.min_seconds)
    check = predict(m, coord[:ns.check_frames], atype, None if box is None else box[:ns.check_frames])
    if not np.all(np.isfinite(check.atomic_tensor)):
        print("error: non-finite predictions", file=sys.stderr)
        return 1
    if ns.save:
        np.savez(ns.save, global_=check.global_tensor, atomic=check.atomic_tensor)
    floor = None
    if ns.floor:  # one thread's kernels ÷ the threads: perfect scaling, the most optimistic floor
        import torch
        from floor import measure_inference_floor, predict_shapes

        threads = torch.get_num_threads()
        shapes = predict_shapes(m, torch.as_tensor(coord[:n]), torch.as_tensor(atype),
                                None if box is None else torch.as_tensor(box[:n]))
        fl = measure_inference_floor(shapes, m.kind, n, threads=1)
        torch.set_num_threads(threads)
        floor = {"ms_per_frame": {k: v / threads for k, v in fl.ms.items()}, "threads": threads,
                 "fps": threads * 1e3 / fl.total_ms}
    out = {"tool": "dptensor", "frames": n, "lib_frames": lib, "natoms": int(coord.shape[1]),
           "startup": {"import_s": t_import - t_start, "load_s": t_load - t_import, "read_s": t_ready - t_load,
                       "ready_epoch": t_ready},
           "same_frames": same, "lib": large, "floor": floor}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
