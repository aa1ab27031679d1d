"""DeePMD-kit's side of the interoperability tests; runs *inside* the DeePMD-kit venv
(bench/deepmd_env.py), never imports dptensor.

Usage: ``python deepmd_runner.py JOB.json`` with JOB.json::

    {"convert": [["in.dp", "out.pth"], ...],          # `dp convert-backend in out`, in order
     "eval": [{"model": "m.pth", "kind": "dipole", "frames": "f.npz", "out": "o.npz"}, ...]}

``frames``: coord [nf, nat, 3], atype [nat], optional box [nf, 3, 3] (absent: open frames).
``out``: global [nf, dim] (DeepDipole/DeepPolar.eval(atomic=False)) and atomic
[nf, nat, dim] (atomic=True). One process for everything: DeePMD-kit starts in ~10 s.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def convert(src: str, dst: str) -> None:
    from deepmd.main import main

    main(["convert-backend", src, dst])  # exactly what the `dp convert-backend` command runs
    if not Path(dst).is_file():
        raise RuntimeError(f"dp convert-backend {src} {dst} wrote nothing")


def evaluate(model: str, kind: str, frames: str, out: str) -> None:
    from deepmd.infer.deep_dipole import DeepDipole
    from deepmd.infer.deep_polar import DeepPolar

    evaluator = (DeepDipole if kind == "dipole" else DeepPolar)(model)
    with np.load(frames) as f:
        coord, atype = f["coord"], f["atype"]
        box = f.get("box", None)
    nf = coord.shape[0]
    cells = None if box is None else box.reshape(nf, 9)
    glob = evaluator.eval(coord.reshape(nf, -1), cells, atype, atomic=False)
    atomic = evaluator.eval(coord.reshape(nf, -1), cells, atype, atomic=True)
    dim = 3 if kind == "dipole" else 9
    np.savez(out, **{"global": np.asarray(glob).reshape(nf, dim),
                     "atomic": np.asarray(atomic).reshape(nf, -1, dim)})


def main(job_file: str) -> int:
    job = json.loads(Path(job_file).read_text())
    for src, dst in job.get("convert", []):
        convert(src, dst)
    for item in job.get("eval", []):
        evaluate(item["model"], item["kind"], item["frames"], item["out"])
    print(json.dumps({"ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
