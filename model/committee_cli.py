"""Committee parts of the command line: ``dptensor train --committee K``, the per-frame
table of ``dptensor predict`` (CSV / JSON) and ``dptensor select``."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from model.keys import (
    PRED_COMMITTEE_SIZE,
    PRED_DEVI_ATOMIC_MAX,
    PRED_DEVI_GLOBAL,
    PRED_GLOBAL,
    PRED_GLOBAL_STD,
    PRED_KIND,
)

COMPONENTS = {3: ["x", "y", "z"], 9: ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]}


def train_committee_cli(args: argparse.Namespace) -> int:
    from model.committee_train import train_committee
    from model.train import TrainProgress

    def show(member: int, p: TrainProgress) -> None:
        if p.row is not None:
            losses = "  ".join(f"{k} {v:8.2e}" for k, v in p.row.items() if k != "lr" and v == v)
            print(f"[member {member}] step {p.step:>7d}/{p.numb_steps}  {p.steps_per_s:7.1f} steps/s  {losses}",
                  flush=True)

    result = train_committee(args.input, Path(args.output), args.committee, device=args.device, on_progress=show)
    print(f"trained a committee of {len(result.members)} ({result.concurrent} at once) -> {result.model_path}")
    for i, member in enumerate(result.members):
        print(f"  member {i}: {member.steps_done} steps -> {member.model_path}")
    for key, value in result.metrics.items():
        print(f"  mean {key:23s} {value:.4e}")
    return 0


def frame_table(npz: dict[str, np.ndarray]) -> tuple[list[str], list[list[float]]]:
    """Per-frame rows of a predictions file: the global tensor (the committee mean), and
    for a committee its std per component, devi_global and devi_atomic_max."""
    glob = npz[PRED_GLOBAL]
    comps = COMPONENTS[glob.shape[1]]
    name = "mu" if str(npz[PRED_KIND]) == "dipole" else "alpha"
    header = ["frame", *(f"{name}_{c}" for c in comps)]
    cols = [glob]
    if PRED_COMMITTEE_SIZE in npz:
        header += [*(f"{name}_{c}_std" for c in comps), PRED_DEVI_GLOBAL, PRED_DEVI_ATOMIC_MAX]
        cols += [npz[PRED_GLOBAL_STD], npz[PRED_DEVI_GLOBAL][:, None], npz[PRED_DEVI_ATOMIC_MAX][:, None]]
    data = np.column_stack([np.arange(glob.shape[0]), *cols])
    return header, [[int(r[0]), *map(float, r[1:])] for r in data]


def write_frame_table(npz_path: Path, csv_path: str | None, json_path: str | None) -> list[Path]:
    written = []
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k not in ("atomic", "atomic_std")}
    header, rows = frame_table(arrays)
    if csv_path:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        written.append(Path(csv_path))
    if json_path:
        doc: dict[str, Any] = {"columns": header, "rows": rows}
        if PRED_COMMITTEE_SIZE in arrays:
            doc["committee_size"] = int(arrays[PRED_COMMITTEE_SIZE])
        Path(json_path).write_text(json.dumps(doc))
        written.append(Path(json_path))
    return written


def cmd_select(args: argparse.Namespace) -> int:
    from model.committee import Committee, load_predictor
    from model.errors import CheckpointError
    from model.select import check_bounds, frame_deviation, histogram_text, select, write_candidates
    from model.structures import load_structures

    check_bounds(args.lo, args.hi, args.max)
    committee = load_predictor(args.model, device=args.device or "cpu")
    if not isinstance(committee, Committee) or committee.size < 2:
        raise CheckpointError("select needs a committee of at least 2 members (a committee file or several -m)")
    coord, atype, box = load_structures(args.system, committee.type_map, args.format)
    devi = frame_deviation(committee, coord, atype, box, criterion=args.criterion, batch_size=args.batch_size)
    selection = select(devi, args.lo, args.hi, max_frames=args.max, criterion=args.criterion, seed=args.seed)
    out = write_candidates(args.output, selection, coord, atype, box, committee.type_map)
    print(histogram_text(selection))
    print(f"{devi.size} frames: {selection.n_accurate} accurate (< {args.lo}), {selection.n_candidates} candidates, "
          f"{selection.n_failed} failed (>= {args.hi}); wrote {selection.candidates.size} frames -> {out}")
    return 0


def add_select_parser(sub: Any) -> None:
    p = sub.add_parser("select", help="frames a committee disagrees on, as an unlabelled DeePMD system")
    p.add_argument("-m", "--model", action="append", required=True,
                   help="committee file, or one -m per member model")
    p.add_argument("-s", "--system", required=True, help="DeePMD system folder or trajectory file")
    p.add_argument("--lo", type=float, required=True, help="frames with deviation >= lo are candidates")
    p.add_argument("--hi", type=float, required=True, help="frames with deviation >= hi count as failed")
    p.add_argument("--max", type=int, default=None, help="at most N candidates (a seeded random subset)")
    p.add_argument("--criterion", choices=["atomic", "global"], default="atomic",
                   help="devi_atomic_max (default) or devi_global")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max subset")
    p.add_argument("-o", "--output", required=True, help="folder for the candidate system")
    p.add_argument("--format", help="trajectory format when the extension does not tell")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device")
    p.set_defaults(func=cmd_select)


def print_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"# wrote {path}", file=sys.stderr)
