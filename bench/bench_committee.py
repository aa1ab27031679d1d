"""Committee benchmarks (dptensor only: DeePMD-kit has no tensor model deviation).

calibration — train a committee on water_tensor/<task>, then on the validation systems:
  Spearman ρ of the per-frame deviation against the per-frame true error (global:
  devi_global vs ‖mean − label‖; atomic: devi_atomic_max vs max over atoms ‖mean − label‖),
  and the mean deviation on out-of-distribution frames made from the validation frames
  (hotter: Gaussian displacements of every atom; compressed: coordinates (and cells)
  scaled; displaced: one atom per frame moved) over the in-distribution mean.
cost — frames/s of committee prediction for K = 1, 4, 8 members over a 192-atom
  trajectory, batched (one pass, stacked weights) and, for comparison, K separate passes.
  Repeated; min / median / max reported, as the machine may be noisy.

  .venv/bin/python bench/bench_committee.py calibration [--task dipole|polar] [--members 4] [--steps 2000]
  .venv/bin/python bench/bench_committee.py cost [--task dipole] [--frames 64] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from model.committee import Committee, deviation, load_predictor  # noqa: E402
from model.committee_train import train_committee  # noqa: E402
from model.data import System, load_system  # noqa: E402
from model.inference import iter_predict, predict  # noqa: E402
from model.tensor_model import TensorModel  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "water_tensor"
INPUTS = {"dipole": DATA / "dipole" / "dipole_input_torch.json", "polar": DATA / "polar" / "polar_input_torch.json"}


# ---- calibration ----------------------------------------------------------------------------


def _validation(task: str, committee: Committee) -> list[System]:
    root = DATA / task / "validation_data_reformat"
    return [load_system(root / name, type_map=committee.type_map, kind=committee.kind)
            for name in ("atomic_system", "global_system")]


def _frame_devi(committee: Committee, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None
                ) -> tuple[Any, Any]:
    pred = predict(committee, coord, atype, box)
    assert pred.member_global is not None and pred.member_atomic is not None
    return pred, deviation(pred.member_global, pred.member_atomic)


def _ood(system: System, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Out-of-distribution variants of the validation frames (coordinates, cells)."""
    c, box = system.coord, system.box
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for sigma in (0.1, 0.2):
        out[f"hotter σ={sigma} Å"] = (c + rng.normal(scale=sigma, size=c.shape), box)
    for factor in (0.9,):
        centre = c.mean(axis=1, keepdims=True)
        out[f"compressed ×{factor}"] = (centre + factor * (c - centre), None if box is None else factor * box)
    for dist in (0.5,):
        moved = c.copy()
        idx = rng.integers(0, c.shape[1], size=c.shape[0])
        direction = rng.normal(size=(c.shape[0], 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        moved[np.arange(c.shape[0]), idx] += dist * direction
        out[f"one atom displaced {dist} Å"] = (moved, box)
    return out


def calibration(args: argparse.Namespace) -> dict[str, Any]:
    size = "small" if args.small else "example"
    work = Path(args.workdir) / f"committee-{args.task}-{size}-{args.members}x{args.steps}"
    committee_file = work / "committee.pt"
    if (not committee_file.exists() and not args.from_members) or args.retrain:
        raw = json.loads(INPUTS[args.task].read_text())
        raw["training"].update(numb_steps=args.steps, disp_freq=max(1, args.steps // 10), save_freq=args.steps)
        if args.small:  # a smaller net, for a busy machine
            raw["model"]["descriptor"].update(neuron=[8, 16, 32], axis_neuron=4)
            raw["model"]["fitting_net"]["neuron"] = [32, 32]
        for key in ("training_data", "validation_data"):
            data = raw["training"][key]
            data["systems"] = [str(INPUTS[args.task].parent / s) for s in data["systems"]]
        t0 = time.monotonic()
        result = train_committee(raw, work, args.members, device="cpu")
        print(f"trained {args.members} members × {args.steps} steps ({result.concurrent} at once) in "
              f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
    if args.from_members:  # the members finished so far (a busy machine): a committee of those
        finished = sorted(work.glob("member-*/model.pt"))
        print(f"committee of the {len(finished)} finished members: {[p.parent.name for p in finished]}",
              file=sys.stderr)
        committee = load_predictor(finished)
    else:
        committee = load_predictor(committee_file)
    assert isinstance(committee, Committee)
    report: dict[str, Any] = {"task": args.task, "members": committee.size, "steps": args.steps, "net": size}
    rng = np.random.default_rng(0)
    in_dist: dict[str, list[np.ndarray]] = {"global": [], "atomic": []}
    ood: dict[str, dict[str, list[np.ndarray]]] = {}
    for system in _validation(args.task, committee):
        pred, dev = _frame_devi(committee, system.coord, system.atype, system.box)
        in_dist["global"].append(dev.devi_global)
        in_dist["atomic"].append(dev.devi_atomic_max)
        name = Path(system.path).name
        if system.global_label is not None:
            err = np.linalg.norm(pred.global_tensor - system.global_label, axis=1)
            rho = spearmanr(dev.devi_global, err)
            report[f"spearman_global ({name})"] = {"rho": float(rho.statistic), "p": float(rho.pvalue),
                                                   "frames": int(err.size)}
        if system.atomic_label is not None:
            sel = np.isin(system.atype, committee.sel_type)
            err_at = np.linalg.norm(pred.atomic_tensor[:, sel] - system.atomic_label[:, sel], axis=-1).max(axis=1)
            rho = spearmanr(dev.devi_atomic_max, err_at)
            report[f"spearman_atomic ({name})"] = {"rho": float(rho.statistic), "p": float(rho.pvalue),
                                                   "frames": int(err_at.size)}
        for label, (coord, box) in _ood(system, rng).items():
            _, d = _frame_devi(committee, coord, system.atype, box)
            slot = ood.setdefault(label, {"global": [], "atomic": []})
            slot["global"].append(d.devi_global)
            slot["atomic"].append(d.devi_atomic_max)
    base = {k: float(np.concatenate(v).mean()) for k, v in in_dist.items()}
    report["in_distribution_mean_devi"] = base
    report["ood_ratio"] = {label: {k: float(np.concatenate(v[k]).mean()) / base[k] for k in ("global", "atomic")}
                           for label, v in ood.items()}
    return report


# ---- cost -----------------------------------------------------------------------------------


def _members(template: TensorModel, k: int) -> list[TensorModel]:
    """K members of the template's architecture with different weights (cost does not
    depend on the values), statistics copied."""
    out = []
    for i in range(k):
        cfg = template.config.model_copy(update={
            "descriptor": template.config.descriptor.model_copy(update={"seed": 100 + i}),
            "fitting_net": template.config.fitting_net.model_copy(update={"seed": 200 + i})})
        m = TensorModel(cfg)
        m.load_state_dict({**m.state_dict(), **{k_: v for k_, v in template.state_dict().items()
                                                if not k_.endswith(("matrix", "bias", "idt"))}})
        out.append(m.eval())
    return out


def _rate(model: Any, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in iter_predict(model, coord, atype, box):
            pass
        rates.append(coord.shape[0] / (time.perf_counter() - t0))
    return rates


def cost(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    task = args.task
    raw = json.loads(INPUTS[task].read_text())
    from model.config import ModelConfig, parse_section

    cfg = parse_section(raw["model"], ModelConfig)
    template = TensorModel(cfg).eval()
    system = load_system(DATA / task / "validation_data_reformat" / "global_system", type_map=template.type_map)
    reps = -(-args.frames // system.nframes)
    coord = np.concatenate([system.coord] * reps)[: args.frames]
    box = None if system.box is None else np.concatenate([system.box] * reps)[: args.frames]
    members = _members(template, max(args.sizes))
    report: dict[str, Any] = {"task": task, "atoms": system.natoms, "frames": args.frames,
                              "threads": torch.get_num_threads(), "repeats": args.repeats}
    single = _rate(members[0], coord, system.atype, box, args.repeats)
    report["single model"] = _summary(single)
    for k in args.sizes:
        committee = Committee(members[:k]).eval()
        batched = _rate(committee, coord, system.atype, box, args.repeats)
        row: dict[str, Any] = {"batched": _summary(batched)}
        if k > 1:
            separate = Committee(members[:k]).eval()
            separate.batched = False  # K separate passes, for comparison
            row["separate passes"] = _summary(_rate(separate, coord, system.atype, box, args.repeats))
        row["cost / single (median)"] = statistics.median(single) / statistics.median(batched)
        report[f"K={k}"] = row
    return report


def _summary(rates: list[float]) -> dict[str, float]:
    return {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("calibration")
    p.add_argument("--task", choices=["dipole", "polar"], default="dipole")
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--small", action="store_true", help="descriptor [8,16,32], fitting [32,32] (faster)")
    p.add_argument("--from-members", action="store_true",
                   help="no training: a committee of the members already finished in the work folder")
    p.add_argument("--workdir", default=str(REPO / "runs" / "bench"))
    p = sub.add_parser("cost")
    p.add_argument("--task", choices=["dipole", "polar"], default="dipole")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    for q in sub.choices.values():
        q.add_argument("--json", help="also write the report here")
    args = ap.parse_args()
    report = calibration(args) if args.what == "calibration" else cost(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
