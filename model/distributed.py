"""Data-parallel training over ``torch.distributed``: one rank per process, gloo on CPU,
NCCL on CUDA. The training loop (model/train.py) asks a ``World`` four things: who builds
the starting point (rank 0: statistics, sel, the restart checkpoint, broadcast once), which
batch stream is mine (the rank), averaging the gradients (one all_reduce per step), and
whether to stop (rank 0 polls, everyone agrees). Rank 0 alone validates and writes files.

Two ways in:
- ``dptensor train --nproc N`` → :func:`train_data_parallel` spawns N ranks on this host
  (``torch.multiprocessing``; a rank that dies stops the others and fails the run);
- ``torchrun --nproc-per-node N [--nnodes ...] dptensor train ...`` → torchrun's
  environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) is read by :func:`init_world`.
Collectives time out after ``timeout_s`` (a hung rank fails the run, it does not hang it).
"""

from __future__ import annotations

import os
import queue
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from model.config import ModelConfig, ParsedInput, parse_section
from model.errors import ConfigError, DptensorError
from model.tensor_model import TensorModel

DEFAULT_TIMEOUT_S = 600.0  # rank 0 validates and saves while the others wait in the next all_reduce


class DistributedError(DptensorError):
    """A distributed run failed: a rank died, raised, or a collective timed out."""


@dataclass(frozen=True)
class World:
    """This process's place in the run; ``World()`` is a single process (no collectives)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; tensors travel on CPU)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """grad ← mean over ranks, one all_reduce per dtype. A parameter no rank gave a
        gradient keeps ``grad=None`` (so Adam skips it exactly as a single process would)."""
        if not self.distributed:
            return
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            if p.requires_grad:
                by_dtype.setdefault(p.dtype, []).append(p)
        for group in by_dtype.values():
            has = torch.tensor([p.grad is not None for p in group], dtype=group[0].dtype, device=group[0].device)
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group]
                             + [has])  # [n_values + n_params]
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            values, counts = flat[:-len(group)] / self.size, flat[-len(group):]
            offset = 0
            for p, count in zip(group, counts.tolist(), strict=True):
                n = p.numel()
                p.grad = values[offset:offset + n].view_as(p).clone() if count > 0 else None
                offset += n

    def agree(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when rank 0's ``flag`` is True (others pass False)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.broadcast(t, src=0)
        return bool(t.item())


def share_start(world: World, model: TensorModel | None,
                train_state: dict[str, Any] | None) -> tuple[TensorModel, dict[str, Any] | None]:
    """Rank 0's starting point (weights, statistics, sel, optimizer state, step) on every
    rank: the other ranks never compute statistics nor read the restart checkpoint."""
    if not world.distributed:
        assert model is not None
        return model, train_state
    payload = world.broadcast(None if model is None else {
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": train_state})
    if model is not None:
        return model, train_state
    shared = TensorModel(parse_section(payload["config"], ModelConfig, path="config"))
    shared.load_state_dict(payload["state_dict"])
    return shared, payload["train"]


def launched_by_torchrun() -> bool:
    """torchrun (or any launcher of the env:// protocol) set up more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _rank_device(device: str | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)  # one GPU per local rank
    return dev


def _share_cores(local_size: int) -> None:
    """N CPU ranks on one host split its cores (unless the user set OMP_NUM_THREADS)."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))


def init_world(device: str | None, timeout_s: float = DEFAULT_TIMEOUT_S,
               store: dist.Store | None = None) -> tuple[World, torch.device]:
    """Join the process group described by the environment (torchrun's variables)."""
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = _rank_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    else:
        _share_cores(int(os.environ.get("LOCAL_WORLD_SIZE", size)))
    backend = "nccl" if dev.type == "cuda" else "gloo"
    timeout = timedelta(seconds=timeout_s)
    if store is None:
        dist.init_process_group(backend, timeout=timeout)
    else:
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout)
    return World(rank=rank, size=size, local_rank=local_rank), dev


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


# --- dptensor train --nproc N: spawn the ranks on this host --------------------------------


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
    """One spawned rank: join the group through the parent's store, train, report (rank 0)."""
    from model.train import train  # the loop imports this module

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
                        on_progress: Callable[[Any], None] | None = None,
                        should_stop: Callable[[], bool] | None = None,
                        timeout_s: float = DEFAULT_TIMEOUT_S, progress_every_s: float = 2.0) -> Any:
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
    result = None

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
