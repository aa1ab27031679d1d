"""``dptensor train --nproc N``: spawn N data-parallel ranks on this host and watch them.

Each rank joins the process group through a TCPStore this process owns (no port to
guess), runs model.train.train with its ``World`` (model/distributed.py), and rank 0 sends
progress and its result back through a queue; a stop request crosses the other way as an
event. ``torch.multiprocessing`` stops the other ranks when one dies; the error names it.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from model.config import ParsedInput
from model.distributed import (
    DEFAULT_TIMEOUT_S,
    DistributedError,
    close_world,
    exit_rank,
    init_world,
)
from model.errors import ConfigError
from model.train import TrainProgress, TrainResult, train


@dataclass(frozen=True)
class _RankJob:
    source: str | dict[str, Any] | ParsedInput
    output_dir: str
    restart: str | None
    device: str | None
    nproc: int
    store_port: int
    timeout_s: float
    progress_every_s: float


def _rank_main(rank: int, job: _RankJob, events: Any, stop: Any) -> None:
    """One spawned rank: join the group through the parent's store, train, report (rank 0), and
    end without the interpreter's teardown (distributed.exit_rank)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(job.nproc), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(job.nproc))
    store = dist.TCPStore("127.0.0.1", job.store_port, job.nproc, is_master=False,
                          timeout=timedelta(seconds=job.timeout_s))
    world, dev = init_world(job.device, job.timeout_s, store=store)
    parent = os.getppid()

    def stop_asked() -> bool:  # also when the launching process is gone (a killed worker): no orphan run
        return bool(stop.is_set()) or os.getppid() != parent

    try:
        main = world.is_main
        result = train(job.source, job.output_dir, restart=job.restart, device=str(dev), world=world,
                       on_progress=(lambda p: events.put(("progress", p))) if main else None,
                       should_stop=stop_asked if main else None, progress_every_s=job.progress_every_s)
        if main:
            events.put(("result", result))
    finally:
        close_world(world)
    events.close()
    events.join_thread()  # the result is in the pipe before the process ends
    exit_rank(0)


def _failure_message(exc: Exception, nproc: int, output_dir: Path) -> str:
    latest = output_dir / "model.ckpt.pt"
    resume = f"; continue with --restart {latest}" if latest.exists() else ""
    if isinstance(exc, tmp.ProcessExitedException):
        how = f"signal {exc.signal_name}" if exc.signal_name else f"exit code {exc.exit_code}"
        return f"rank {exc.error_index} of {nproc} died ({how}); the other ranks were stopped{resume}"
    if isinstance(exc, tmp.ProcessRaisedException):
        last = [ln for ln in str(exc).strip().splitlines() if ln.strip()][-1:] or ["?"]
        return f"rank {exc.error_index} of {nproc} failed: {last[0].strip()}; the other ranks were stopped{resume}"
    return f"distributed training failed: {exc}"


def train_data_parallel(source: str | Path | dict[str, Any] | ParsedInput, output_dir: str | Path, *, nproc: int,
                        restart: str | Path | None = None, device: str | None = None,
                        on_progress: Callable[[TrainProgress], None] | None = None,
                        should_stop: Callable[[], bool] | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S, progress_every_s: float = 2.0) -> TrainResult:
    """Train with ``nproc`` ranks on this host; returns rank 0's TrainResult. Progress and
    stop requests cross to rank 0 through a queue and an event."""
    if nproc < 1:
        raise ConfigError(f"must be at least 1, got {nproc}", path="--nproc")
    on_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if on_cuda and nproc > torch.cuda.device_count():
        raise ConfigError(f"{nproc} ranks asked for but {torch.cuda.device_count()} GPUs visible "
                          "(one rank per GPU; use --device cpu for CPU ranks)", path="--nproc")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = dist.TCPStore("127.0.0.1", 0, nproc + 1, is_master=True, timeout=timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    ctx = tmp.get_context("spawn")
    events, stop = ctx.Queue(), ctx.Event()
    src = source if isinstance(source, dict | ParsedInput) else str(Path(source).resolve())
    job = _RankJob(source=src, output_dir=str(out.resolve()), restart=None if restart is None else str(restart),
                   device=device, nproc=nproc, store_port=store.port, timeout_s=timeout_s,
                   progress_every_s=progress_every_s)
    procs = tmp.start_processes(_rank_main, args=(job, events, stop), nprocs=nproc, join=False,
                                start_method="spawn")
    result: TrainResult | None = None

    def drain() -> None:
        """Pass on the newest progress (and the newest lcurve row): ``on_progress`` may be
        slower than rank 0 (a database write per call), and a backlog in the pipe would
        hold rank 0 at exit until this process read it all."""
        nonlocal result
        latest = latest_row = None
        while True:
            try:
                kind, payload = events.get_nowait()
            except queue.Empty:
                break
            if kind == "result":
                result = payload
            else:
                latest = payload
                latest_row = payload if payload.row is not None else latest_row
        if on_progress is not None:
            for p in ([latest_row] if latest_row is not None and latest_row is not latest else []) + [latest]:
                if p is not None:
                    on_progress(p)

    try:
        while not procs.join(timeout=0.25):
            drain()
            if should_stop is not None and not stop.is_set() and should_stop():
                stop.set()
    except (tmp.ProcessExitedException, tmp.ProcessRaisedException) as exc:
        raise DistributedError(_failure_message(exc, nproc, out)) from None
    finally:
        for p in procs.processes:  # an exception in drain/should_stop must not leave ranks behind
            if p.is_alive():
                p.terminate()
    drain()
    if result is None:
        raise DistributedError("rank 0 finished without a result")
    return result
