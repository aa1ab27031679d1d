"""``--device cuda:auto``: a worker takes the first GPU of its host that no live worker holds.

Replicas of one compose service (``docker compose up --scale worker=N``) all see every GPU;
each holds an exclusive lock on ``<data dir>/gpu-locks/<GPU UUID>.lock`` for its lifetime
(flock: released by the kernel when the process dies, so a crashed worker frees its GPU).
UUIDs, not indices, name the files: workers on other hosts share the data dir safely."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

AUTO = "cuda:auto"

_held: list[IO[str]] = []  # the open lock files of this process: closing one would free its GPU


def claim_gpu(uuids: list[str], lock_dir: Path) -> int | None:
    """Index of the first GPU (in ``uuids`` order) this process could lock, or None."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, uuid in enumerate(uuids):
        handle = open(lock_dir / f"{uuid}.lock", "w")  # noqa: SIM115 - held for the process lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        return index
    return None


def auto_device(lock_dir: Path) -> str:
    """``cuda:<i>`` for the claimed GPU; a RuntimeError (the worker does not start) when every
    GPU of the host is taken."""
    import torch

    uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    index = claim_gpu(uuids, lock_dir)
    if index is None:
        raise RuntimeError(f"--device {AUTO}: all {len(uuids)} GPU(s) of this host are held by other workers "
                           f"(locks in {lock_dir}); scale the workers to at most the number of GPUs")
    return f"cuda:{index}"
