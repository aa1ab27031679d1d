"""``dptensor train | test | predict | spectrum`` — the model library's command line,
mirroring DeePMD-kit's ``dp``. Errors caused by input print one clear line and exit 2."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from model.errors import ConfigError, DptensorError
from model.search_budget import DEFAULT_MAX_CANDIDATES


def _fmt_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def cmd_train(args: argparse.Namespace) -> int:
    from model.train import TrainProgress, train

    tty = sys.stdout.isatty()

    def show(p: TrainProgress) -> None:
        status = (f"step {p.step:>7d}/{p.numb_steps}  lr {p.lr:8.2e}  {p.steps_per_s:7.1f} steps/s  "
                  f"ETA {_fmt_duration(p.eta_s)}")
        if p.row is not None:
            losses = "  ".join(f"{k} {v:8.2e}" for k, v in p.row.items() if k != "lr" and v == v)
            print(("\r" if tty else "") + f"{status}  {losses}", flush=True)
        elif tty:
            print("\r" + status, end="", flush=True)

    if args.committee is not None and args.nproc > 1:
        raise ConfigError("--committee trains members side by side; it does not combine with --nproc",
                          path="--nproc")
    if args.committee is not None:
        if args.init_model is not None:
            raise ConfigError("--init-model starts one model; it cannot be combined with --committee")
        from model.committee_cli import train_committee_cli

        return train_committee_cli(args)
    output = Path(args.output)
    import torch.distributed as dist

    from model import distributed

    if distributed.launched_by_torchrun():  # torchrun set RANK/WORLD_SIZE: this process is one rank
        world, dev = distributed.init_world(args.device, args.dist_timeout)
        try:
            result = train(args.input, output, restart=args.restart, init_model=args.init_model, device=str(dev),
                           world=world,
                           on_progress=show if world.is_main else None)
        except dist.DistError as exc:
            raise distributed.DistributedError(f"rank {world.rank} of {world.size}: a collective failed "
                                               f"(another rank died or timed out): {exc}") from None
        finally:
            distributed.close_world(world)
        if not world.is_main:
            distributed.exit_rank(0)
    elif args.nproc > 1:
        if args.init_model is not None:
            raise ConfigError("not yet combined with --nproc: start from the model with one process or torchrun",
                              path="--init-model")
        from model.launch import train_data_parallel

        result = train_data_parallel(args.input, output, nproc=args.nproc, restart=args.restart,
                                     device=args.device, on_progress=show, timeout_s=args.dist_timeout)
    else:
        result = train(args.input, output, restart=args.restart, init_model=args.init_model, device=args.device,
                       on_progress=show)
    print(f"trained {result.steps_done} steps -> {result.model_path}")
    for key, value in result.metrics.items():
        if key != "steps":
            print(f"  {key:28s} {value:.4e}")
    if distributed.launched_by_torchrun():
        distributed.exit_rank(0)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from model.checkpoint import load_model
    from model.evaluation import load_test_systems, score_system, write_detail

    model = load_model(args.model, device=args.device or "cpu")
    systems = load_test_systems(model, args.system)
    scores = [score_system(model, s, args.numb_test, args.batch_size) for s in systems]
    if args.json:
        print(json.dumps(scores[0].to_json() if len(scores) == 1 else [s.to_json() for s in scores]))
    else:
        name = "Dipole" if model.kind == "dipole" else "Polarizability"
        for s in scores:
            print(f"# system       : {s.system}")
            print(f"# number of test data : {s.nframes}   atoms of sel_type N = {s.n_sel}")
            if s.global_rmse is not None:
                print(f"{name} RMSE        : {s.global_rmse:e}")
                print(f"{name} RMSE/sqrtN  : {s.global_rmse / s.n_sel ** 0.5:e}")
                print(f"{name} RMSE/N      : {s.global_rmse / s.n_sel:e}")
            if s.atomic_rmse is not None and (args.atomic or s.global_rmse is None):
                print(f"Atomic {name} RMSE : {s.atomic_rmse:e}")
    detail = args.detail if args.detail is not None else (None if args.json else "test")
    if detail:
        for path in write_detail(detail, model.kind, scores):
            print(f"# wrote {path}", file=sys.stderr)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from model.committee import load_predictor
    from model.committee_cli import print_written, write_frame_table
    from model.inference import save_predictions_npz
    from model.structures import load_structures

    model = load_predictor(args.model, device=args.device or "cpu", precision=args.precision, member=args.member,
                           max_search_candidates=args.max_search_candidates)
    coord, atype, box = load_structures(args.system, model.type_map, args.format)
    if args.modes and not args.derivatives:
        raise ConfigError("--modes needs --derivatives (the harmonic IR uses the Born charges)", path="--modes")
    t0 = time.monotonic()
    out = save_predictions_npz(args.output, model, coord, atype, box, batch_size=args.batch_size)
    dt = time.monotonic() - t0
    print(f"predicted {coord.shape[0]} frames ({coord.shape[1]} atoms) in {dt:.2f} s "
          f"({coord.shape[0] / max(dt, 1e-9):.1f} frames/s) -> {out}")
    print_written(write_frame_table(out, args.csv, args.json))
    if args.as_system:
        from model.system_writer import write_prediction_system

        written = write_prediction_system(args.as_system, out, coord, atype, box, type_map=model.type_map,
                                          kind=model.kind, sel_type=list(model.sel_type))
        print(f"wrote the frames with the predictions as {model.kind} labels -> {written} (a DeePMD system)")
    if args.derivatives:
        from model.derivatives_cli import write_derivatives

        write_derivatives(args, model, coord, atype, box)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from model.checkpoint import load_model
    from model.dpmodel_export import export_model

    out = export_model(load_model(args.model), args.output)
    print(f"exported {args.model} -> {out} (DeePMD-kit serialized model; "
          f"`dp convert-backend {out.name} model.pth` makes a frozen model for dp test and LAMMPS)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dptensor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a dipole/polar model from a DeePMD-kit input.json")
    p.add_argument("input", help="DeePMD-kit input.json (system paths relative to its folder)")
    p.add_argument("-o", "--output", default=".", help="output folder (lcurve.out, checkpoints, model.pt)")
    p.add_argument("--restart", help="checkpoint to continue from (e.g. model.ckpt.pt)")
    p.add_argument("--init-model", help="start from this model's weights and statistics (dptensor .pt, "
                   "DeePMD-kit model.ckpt-N.pt, .dp or .yaml of the same architecture)")
    p.add_argument("--committee", type=int, default=None, metavar="K",
                   help="train K members with different seeds -> OUTPUT/committee.pt")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel ranks on this host (one per GPU, or N CPU ranks); several hosts: "
                        "launch with torchrun --nnodes ... --nproc-per-node N dptensor train ...")
    p.add_argument("--dist-timeout", type=float, default=600.0, metavar="S",
                   help="seconds a rank waits in a collective before the run fails (default 600)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("test", help="RMSE of a model on labelled systems, like dp test")
    p.add_argument("-m", "--model", required=True, help="dptensor or DeePMD-kit checkpoint")
    p.add_argument("-s", "--system", required=True, help="system folder, or a folder of systems")
    p.add_argument("-n", "--numb-test", type=int, default=None, help="first N frames of each system")
    p.add_argument("-a", "--atomic", action="store_true", help="also report the atomic RMSE")
    p.add_argument("-d", "--detail", default=None,
                   help="prefix of the data-vs-prediction files (default 'test'; none with --json unless given)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("predict", help="batched inference to an .npz (global [nf,dim], atomic [nf,nat,dim])")
    p.add_argument("-m", "--model", required=True, action="append",
                   help="model file; a committee file or several -m give the committee mean, std and deviations")
    p.add_argument("--member", type=int, default=None, help="use only this member of the committee")
    p.add_argument("--csv", help="also write per-frame global tensors (and committee deviations) as CSV")
    p.add_argument("--json", help="the same per-frame table as JSON")
    p.add_argument("-s", "--system", required=True, help="DeePMD system folder or trajectory file (xyz, dump, traj)")
    p.add_argument("-o", "--output", required=True, help="output .npz")
    p.add_argument("--as-system", metavar="DEST",
                   help="also write the frames with the predictions as labels, as a DeePMD system "
                        "(a folder, or data.hdf5#/name) for DeePMD-kit's tools")
    p.add_argument("--format", help="trajectory format when the extension does not tell")
    p.add_argument("--batch-size", type=int, default=None, help="frames per chunk (default: by size)")
    p.add_argument("--precision", choices=["float64", "float32"], default=None)
    p.add_argument("--device")
    p.add_argument("--max-search-candidates", type=int, default=DEFAULT_MAX_CANDIDATES,
                   help="neighbour candidates per atom (periodic images × atoms) above which a frame is "
                        f"refused as too thin a cell (default {DEFAULT_MAX_CANDIDATES})")
    from model.derivatives_cli import add_derivative_arguments

    add_derivative_arguments(p)
    p.set_defaults(func=cmd_predict)

    from model.committee_cli import add_select_parser

    add_select_parser(sub)

    p = sub.add_parser("export", help="write a model as DeePMD-kit's serialized model (.dp or .yaml)")
    p.add_argument("model", help="dptensor or DeePMD-kit model file (.pt, .dp, .yaml)")
    p.add_argument("-o", "--output", required=True, help="OUT.dp (HDF5) or OUT.yaml")
    p.set_defaults(func=cmd_export)

    try:
        from model.spectrum_cli import add_spectrum_parser
    except ImportError:  # pragma: no cover - optional module
        pass
    else:
        add_spectrum_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    from model.runtime import tune_allocator

    tune_allocator()
    try:
        return int(args.func(args))
    except DptensorError as exc:
        print(f"dptensor {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ndptensor {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
