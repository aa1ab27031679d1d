"""Thin periodic cells (issue 12 item 1): time and extra peak memory of a prediction of 10
waters in cells [[a,0,0],[0,a,0],[0,0,100]] for a = 0.01, 0.03, 0.05 Å (refused by the
budget) and 0.3 Å (the most these 30 atoms may cost inside the default budget).
Run: .venv/bin/python bench/thin_cell.py"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.inference import predict
from model.search_budget import SearchTooCostly
from tests.model.conftest import tiny_model
from tests.model.test_search_budget import ten_waters_in_a_thin_cell


def main() -> None:
    warnings.simplefilter("ignore")
    model = tiny_model("polar", rcut=6.0, rcut_smth=1.0, sel=[46, 92])
    coord, atype, _ = ten_waters_in_a_thin_cell(1.0)
    predict(model, coord, atype, np.diag([20.0, 20.0, 100.0])[None])  # warm up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for a in (0.01, 0.03, 0.05, 0.3):
        coord, atype, box = ten_waters_in_a_thin_cell(a)
        t0, c0 = time.monotonic(), time.process_time()
        try:
            predict(model, coord, atype, box)
            answer = "computed"
        except SearchTooCostly:
            answer = "refused"
        extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
        print(json.dumps({"a": a, "wall_s": round(time.monotonic() - t0, 4), "cpu_s": round(time.process_time() - c0, 4),
                          "extra_mb": round(extra, 1), "answer": answer}))


if __name__ == "__main__":
    main()
