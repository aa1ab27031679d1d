"""The accuracy cost of float32: the reference models evaluated in float64 and in float32
on all validation frames — differences between the two, RMSE of each against the labels,
and the speed ratio float32/float64.

    .venv/bin/python bench/bench_precision.py [--task dipole|polar|both]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from inputs import Task, task_names

from model import load_model, predict
from model.data import load_system


def timed(model, system):  # type: ignore[no-untyped-def]
    predict(model, system.coord[:4], system.atype, None if system.box is None else system.box[:4])
    t0 = time.perf_counter()
    res = predict(model, system.coord, system.atype, system.box)
    return res, system.nframes / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["dipole", "polar", "both"], default="both")
    args = ap.parse_args()
    for task in task_names(args.task):
        m64 = load_model(Task(task).reference_model, precision="float64")
        m32 = load_model(Task(task).reference_model, precision="float32")
        print(f"== {task} ==")
        for kind in ("global", "atomic"):
            system = load_system(Task(task).validation_system(kind), kind=task, type_map=m64.type_map,
                                 sel_type=m64.sel_type)
            r64, fps64 = timed(m64, system)
            r32, fps32 = timed(m32, system)
            pred64 = r64.global_tensor if kind == "global" else r64.atomic_tensor
            pred32 = r32.global_tensor if kind == "global" else r32.atomic_tensor
            label = system.global_label if kind == "global" else system.atomic_label
            mask = np.isin(system.atype, m64.sel_type)
            if kind == "atomic":
                pred64, pred32, label = pred64[:, mask], pred32[:, mask], label[:, mask]  # type: ignore[index]
            diff = np.abs(pred32 - pred64)
            rmse64 = float(np.sqrt(np.mean((pred64 - label) ** 2)))
            rmse32 = float(np.sqrt(np.mean((pred32 - label) ** 2)))
            print(f"{kind:6s}: max |f32 - f64| {diff.max():.2e} (relative {diff.max() / np.abs(pred64).max():.1e}), "
                  f"RMSE vs labels f64 {rmse64:.6g} f32 {rmse32:.6g} (change {rmse32 / rmse64 - 1:+.1e}); "
                  f"frames/s f64 {fps64:.0f} f32 {fps32:.0f} (×{fps32 / fps64:.2f})")


if __name__ == "__main__":
    main()
