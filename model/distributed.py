"""Data-parallel training over ``torch.distributed``: one rank per process, gloo on CPU,
NCCL on CUDA. The training loop (model/train.py) asks a ``World`` four things: who builds
the starting point (rank 0: statistics, sel, the restart checkpoint, broadcast once), which
batch stream is mine (the rank), averaging the gradients (one all_reduce per step), and
whether to stop (rank 0 polls, everyone agrees). Rank 0 alone validates and writes files.

Two ways in:
- ``dptensor train --nproc N`` → ``model.launch.train_data_parallel`` spawns N ranks on this
  host (``torch.multiprocessing``; a rank that dies stops the others and fails the run);
- ``torchrun --nproc-per-node N [--nnodes ...] dptensor train ...`` → torchrun's
  environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) is read by :func:`init_world`.
Collectives time out after ``timeout_s`` (a hung rank fails the run, it does not hang it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from model.config import ModelConfig, parse_section
from model.errors import DptensorError
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


def exit_rank(code: int = 0) -> NoReturn:
    """End a rank's process once its work is out (files written, queues flushed, the group
    destroyed), skipping the interpreter's teardown. There, under load, torch 2.13's gloo
    rank sometimes aborts ("terminate called without an active exception", SIGABRT, no
    Python frame): 2 of 13 test runs and 1 of 15 torchrun runs on a loaded 2-core machine,
    and once in CI through ``--nproc``, failing a run whose model was already saved."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
