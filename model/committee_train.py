"""Train a committee: K members on the same data, each with its own seeds for the initial
weights and for the batch order; the result is one committee file.

Member i trains in ``<output>/member-<i>/`` (its own lcurve.out, checkpoints and
model.pt, usable alone) from the input with every seed shifted by ``SEED_STRIDE · i``;
member 0 keeps the input's seeds. Members run in separate processes, as many at once as
the cores (or GPUs) allow, otherwise one after the other in this process.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import queue
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from model.committee import MAX_MEMBERS, save_committee
from model.config import read_input
from model.errors import ConfigError
from model.train import TrainProgress, TrainResult, train

SEED_STRIDE = 1000
CORES_PER_MEMBER = 2  # below this, concurrent members only fight over the cores
COMMITTEE_FILE = "committee.pt"

MemberProgress = Callable[[int, TrainProgress], None]


@dataclass
class CommitteeTrainResult:
    output_dir: Path
    model_path: Path  # the committee file
    members: list[TrainResult]
    cancelled: bool
    concurrent: int  # members that ran at once
    metrics: dict[str, float] = field(default_factory=dict)


def _absolute_systems(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """System paths resolved against the input's folder, so member inputs work from anywhere."""
    out = copy.deepcopy(raw)
    training = out.get("training", {})
    for section in ("training_data", "validation_data"):
        data = training.get(section)
        if isinstance(data, dict) and "systems" in data:
            systems = data["systems"]
            data["systems"] = (str(base / systems) if isinstance(systems, str)
                               else [str(base / s) for s in systems])
    return out


def member_input(raw: dict[str, Any], index: int) -> dict[str, Any]:
    """The input of member ``index``: weight seeds (descriptor, fitting) and the batch-order
    seed (training.seed) shifted by SEED_STRIDE · index (absent seeds count as 0)."""
    out = copy.deepcopy(raw)
    shift = SEED_STRIDE * index
    model = out.setdefault("model", {})
    for section in ("descriptor", "fitting_net"):
        if isinstance(model.get(section), dict):
            model[section]["seed"] = int(model[section].get("seed") or 0) + shift
    out.setdefault("training", {})["seed"] = int(out["training"].get("seed") or 0) + shift
    return out


def concurrency(members: int, device: str) -> int:
    """Members trained at once: one per GPU, or one per CORES_PER_MEMBER cores."""
    if device.startswith("cuda"):
        return max(1, min(members, torch.cuda.device_count()))
    return max(1, min(members, (os.cpu_count() or 1) // CORES_PER_MEMBER))


def _member_device(device: str, index: int, parallel: int) -> str:
    if device == "cuda" and parallel > 1:
        return f"cuda:{index % torch.cuda.device_count()}"
    return device


def _train_member(source: dict[str, Any], out: str, device: str, index: int, threads: int,
                  events: Any, stop: Any, restart: str | None) -> TrainResult:
    """One member in a child process; progress goes back through ``events``."""
    torch.set_num_threads(threads)
    return train(source, out, restart=restart, device=device, on_progress=lambda p: events.put((index, p)),
                 should_stop=stop.is_set)


def _restart_point(raw: dict[str, Any], folder: Path, resume: bool) -> Path | None:
    """The member's newest checkpoint when resuming (an interrupted job starts again)."""
    prefix = (raw.get("training") or {}).get("save_ckpt", "model.ckpt")
    latest = folder / f"{prefix}.pt"
    return latest if resume and latest.exists() else None


def train_committee(source: str | Path | dict[str, Any], output_dir: str | Path, members: int, *,
                    device: str | None = None, on_progress: MemberProgress | None = None,
                    should_stop: Callable[[], bool] | None = None, parallel: int | None = None,
                    resume: bool = False) -> CommitteeTrainResult:
    """Train ``members`` models and write ``<output>/committee.pt``. ``parallel`` overrides
    how many train at once (default: ``concurrency``); ``resume`` continues each member
    from its newest checkpoint in the output folder, if any."""
    if not 1 <= members <= MAX_MEMBERS:
        raise ConfigError(f"must be between 1 and {MAX_MEMBERS}, got {members}", path="committee")
    parsed = read_input(source)  # read and validate once, before starting anything
    raw = _absolute_systems(parsed.raw, parsed.base)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs = [member_input(raw, i) for i in range(members)]
    restarts = []
    for i, member in enumerate(inputs):
        (out / f"member-{i}").mkdir(exist_ok=True)
        (out / f"member-{i}" / "input.json").write_text(json.dumps(member, indent=1))
        restarts.append(_restart_point(member, out / f"member-{i}", resume))
    n_parallel = parallel if parallel is not None else concurrency(members, dev)
    n_parallel = max(1, min(n_parallel, members))
    if n_parallel == 1:
        results = []
        for i, member in enumerate(inputs):
            report = None if on_progress is None else (lambda p, i=i: on_progress(i, p))
            results.append(train(member, out / f"member-{i}", restart=restarts[i], device=dev, on_progress=report,
                                 should_stop=should_stop))
            if results[-1].cancelled:
                break
    else:
        results = _train_parallel(inputs, restarts, out, dev, n_parallel, on_progress, should_stop)
    cancelled = any(r.cancelled for r in results) or len(results) < members
    metrics = _mean_metrics(results)
    path = save_committee(out / COMMITTEE_FILE, [r.model_path for r in results],
                          metadata={"seed_stride": SEED_STRIDE, "members": len(results), "cancelled": cancelled,
                                    "member_metrics": [r.metrics for r in results]})
    return CommitteeTrainResult(output_dir=out, model_path=path, members=results, cancelled=cancelled,
                                concurrent=n_parallel, metrics=metrics)


def _train_parallel(inputs: list[dict[str, Any]], restarts: list[Path | None], out: Path, device: str,
                    n_parallel: int,
                    on_progress: MemberProgress | None, should_stop: Callable[[], bool] | None) -> list[TrainResult]:
    threads = max(1, (os.cpu_count() or 1) // n_parallel)
    ctx = mp.get_context("spawn")  # fork after torch/CUDA initialisation is unsafe
    with ctx.Manager() as manager, ProcessPoolExecutor(n_parallel, mp_context=ctx) as pool:
        events, stop = manager.Queue(), manager.Event()
        futures: list[Future[TrainResult]] = [
            pool.submit(_train_member, member, str(out / f"member-{i}"), _member_device(device, i, n_parallel), i,
                        threads, events, stop, None if restarts[i] is None else str(restarts[i]))
            for i, member in enumerate(inputs)]
        while not all(f.done() for f in futures):
            try:
                index, progress = events.get(timeout=0.5)
            except queue.Empty:
                pass
            else:
                if on_progress is not None:
                    on_progress(index, progress)
            if should_stop is not None and not stop.is_set() and should_stop():
                stop.set()
        while not events.empty():
            index, progress = events.get()
            if on_progress is not None:
                on_progress(index, progress)
        return [f.result() for f in futures]


def _mean_metrics(results: list[TrainResult]) -> dict[str, float]:
    """Each metric averaged over members, and the members' count."""
    keys = set.intersection(*(set(r.metrics) for r in results)) if results else set()
    out = {k: sum(r.metrics[k] for r in results) / len(results) for k in sorted(keys)}
    out["members"] = float(len(results))
    return out
