"""Batches of frames: never mixing systems, systems drawn in proportion to their batches.

The draw for step ``s`` depends only on (seed, s) — and on the rank in a data-parallel run,
rank 0 drawing what a single process draws — so a restarted run sees exactly the batches
the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from model.data import System
from model.errors import ConfigError


@dataclass
class Batch:
    system: int  # index into the sampler's systems
    frames: tuple[int, ...]  # frame indices within that system
    coord: Tensor  # [B, nat, 3]
    atype: Tensor  # [nat]
    box: Tensor | None  # [B, 3, 3]
    atomic_label: Tensor | None  # [B, nat, dim]
    global_label: Tensor | None  # [B, dim]


def resolve_batch_sizes(spec: int | list[int] | str, systems: list[System], path: str) -> list[int]:
    """int → the same for all; list → one per system; "auto[:N]" → ceil(N / natoms), N = 32."""
    if isinstance(spec, int):
        return [spec] * len(systems)
    if isinstance(spec, list):
        if len(spec) != len(systems):
            raise ConfigError(f"has {len(spec)} entries for {len(systems)} systems", path=path)
        return list(spec)
    target = int(spec.split(":", 1)[1]) if ":" in spec else 32
    return [max(1, math.ceil(target / s.natoms)) for s in systems]


def make_batch(system: System, index: int, frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> Batch:
    def tensor(a: np.ndarray | None) -> Tensor | None:
        return None if a is None else torch.as_tensor(a[frames], dtype=dtype, device=device)

    coord = tensor(system.coord)
    assert coord is not None
    return Batch(system=index, frames=tuple(int(f) for f in frames), coord=coord,
                 atype=torch.as_tensor(system.atype, device=device),
                 box=tensor(system.box), atomic_label=tensor(system.atomic_label),
                 global_label=tensor(system.global_label))


class BatchSampler:
    def __init__(self, systems: list[System], batch_sizes: list[int], *, seed: int, auto_prob: str = "prob_sys_size",
                 sys_probs: list[float] | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> None:
        self.systems, self.batch_sizes, self.seed = systems, batch_sizes, seed
        self.device, self.dtype = torch.device(device), dtype
        if sys_probs is not None:
            if len(sys_probs) != len(systems) or min(sys_probs) < 0 or sum(sys_probs) <= 0:
                raise ConfigError("needs one non-negative weight per system", path="sys_probs")
            weights = np.asarray(sys_probs, dtype=np.float64)
        elif auto_prob == "prob_uniform":
            weights = np.ones(len(systems))
        else:  # prob_sys_size: proportional to the number of batches
            weights = np.array([max(1, s.nframes // b) for s, b in zip(systems, batch_sizes, strict=True)], dtype=float)
        self.probs = weights / weights.sum()

    def batch_at(self, step: int, rank: int = 0) -> Batch:
        rng = np.random.default_rng([self.seed, step] if rank == 0 else [self.seed, step, rank])
        k = int(rng.choice(len(self.systems), p=self.probs))
        system = self.systems[k]
        bs = min(self.batch_sizes[k], system.nframes)
        frames = np.sort(rng.choice(system.nframes, size=bs, replace=False))
        return make_batch(system, k, frames, self.device, self.dtype)

    def sequential(self, max_frames: int | None = None) -> Iterator[Batch]:
        """Every frame of every system once, in order (for evaluation)."""
        for k, system in enumerate(self.systems):
            n = system.nframes if max_frames is None else min(system.nframes, max_frames)
            for f0 in range(0, n, self.batch_sizes[k]):
                yield make_batch(system, k, np.arange(f0, min(n, f0 + self.batch_sizes[k])), self.device, self.dtype)
