"""DeePMD-kit's inference modes, timed inside the DeePMD-kit venv (``deepmd_env.VENV_DIR``)
by one long-lived process per task, driven by ``bench_infer.py`` through stdin/stdout:

  _deepmd_infer.py --task dipole|polar --model M --system SYS [--frames N] [--kinds checkpoint,frozen]
                   [--batch-atoms 1024] [--precision P] --workdir DIR [--save-check OUT.npz]

Start-up: the imports, reading the frames and building one evaluator
(``DeepDipole``/``DeepPolar``) per model kind (the checkpoint, and the frozen TorchScript
model ``dp --pt freeze`` writes) and per ``DP_INFER_BATCH_SIZE``; then one JSON line
``{"ready": {...}}``. Each stdin line ``{"modes": [[kind, batch_atoms, threads, output,
batch], ...], "min_seconds": S}`` is answered by ``{"results": [...]}``: ``eval(...,
atomic=output == "atomic")`` in calls of ``batch`` frames over the first N frames of the
system, with ``threads`` intra-op threads (``torch.set_num_threads``, what
``DP_INTRA_OP_PARALLELISM_THREADS`` sets at start-up), timed for at least S seconds
after a one-frame warm-up the first time a (evaluator, threads, output) is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from _deepmd_runner import freeze, loadable_model
from inputs import read_system
from timing import throughput


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["dipole", "polar"], required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--system", required=True)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--kinds", default="checkpoint,frozen")
    ap.add_argument("--batch-atoms", default="1024", help="DP_INFER_BATCH_SIZE values")
    ap.add_argument("--precision", choices=["float64", "float32"], default="float64")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--save-check", help="global and atomic outputs of the first frame (.npz)")
    ns = ap.parse_args()
    t_start = time.time()
    import numpy as np
    import torch

    if ns.task == "dipole":
        from deepmd.infer.deep_dipole import DeepDipole as Evaluator
    else:
        from deepmd.infer.deep_polar import DeepPolar as Evaluator
    t_import = time.time()
    frames = read_system(Path(ns.system))
    n = min(ns.frames, frames.nframes)
    coord, box, atype = frames.coord[:n], None if frames.box is None else frames.box[:n], frames.atype
    t_read = time.time()
    workdir = Path(ns.workdir).resolve()
    checkpoint = loadable_model(Path(ns.model).resolve(), ns.precision, workdir)
    files = {"checkpoint": checkpoint}
    if "frozen" in ns.kinds.split(","):
        files["frozen"] = freeze(checkpoint, workdir)
    t_frozen = time.time()
    evaluators, load_s = {}, {}
    for kind in ns.kinds.split(","):
        for atoms in ns.batch_atoms.split(","):
            os.environ["DP_INFER_BATCH_SIZE"] = atoms  # read when the evaluator is built
            t0 = time.time()
            evaluators[kind, int(atoms)] = Evaluator(str(files[kind]))
            load_s[f"{kind}/{atoms}"] = time.time() - t0
    first = next(iter(evaluators.values()))
    check = {out: np.asarray(first.eval(coord[:1], None if box is None else box[:1], atype,
                                        atomic=out == "atomic")) for out in ("global", "atomic")}
    if not all(np.all(np.isfinite(v)) for v in check.values()):
        print("error: DeePMD-kit returned non-finite predictions", file=sys.stderr)
        return 1
    if ns.save_check:
        np.savez(ns.save_check, global_=check["global"].reshape(1, -1), atomic=check["atomic"].reshape(1, atype.size, -1))
    ready = {"import_s": t_import - t_start, "read_s": t_read - t_import, "freeze_s": t_frozen - t_read,
             "load_s": load_s, "ready_epoch": time.time(), "frames": n, "natoms": int(atype.size),
             "default_threads": torch.get_num_threads()}
    print(json.dumps({"ready": ready}), flush=True)

    warmed: set[tuple[Any, ...]] = set()

    def evaluate(dp: Any, atomic: bool, f0: int, f1: int) -> Any:
        return dp.eval(coord[f0:f1], None if box is None else box[f0:f1], atype, atomic=atomic)

    for line in sys.stdin:
        req = json.loads(line)
        results = []
        for kind, atoms, threads, output, batch in req["modes"]:
            torch.set_num_threads(int(threads))
            dp = evaluators[kind, int(atoms)]
            call = partial(evaluate, dp, output == "atomic")
            if (kind, atoms, threads, output) not in warmed:  # first-call costs
                call(0, 1)
                warmed.add((kind, atoms, threads, output))
            res = throughput(call, n, int(batch) or n, float(req["min_seconds"]))
            results.append({"kind": kind, "batch_atoms": atoms, "threads": threads, "output": output,
                            "batch": min(int(batch) or n, n), "all": min(int(batch) or n, n) == n, **res})
        print(json.dumps({"results": results}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
