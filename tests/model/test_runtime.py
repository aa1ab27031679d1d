"""Allocator tuning: after tune_allocator(), repeated multi-MB allocations reuse memory
instead of faulting in fresh pages.

glibc's default threshold is dynamic (it rises after the first mmapped block is freed), so
how many faults an untuned process takes depends on the glibc build and on allocation
history. The probe therefore pins the worst case first — a fixed 128 KiB threshold, which
also switches the dynamic rule off — and checks that tune_allocator() overrides it."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, json, resource, sys
import torch
from model.runtime import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, tune_allocator
libc = ctypes.CDLL("libc.so.6")
assert libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
applied = tune_allocator() if sys.argv[1] == "tuned" else None
torch.set_num_threads(1)
u = torch.rand(4000, 100, dtype=torch.float64)

def chain():  # twelve 3.2 MB activations alive at once, as in a training step
    kept, a = [], u
    for _ in range(12):
        a = a.mul(1.0001)
        kept.append(a)

for _ in range(3):
    chain()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    chain()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _probe(mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's")
def test_tuned_allocator_stops_page_faults_on_reuse() -> None:
    pinned = _probe("pinned")
    # 12 × 3.2 MB = 9 400 fresh pages per chain when every block is its own mmap
    assert pinned["faults"] > 5000, pinned
    tuned = _probe("tuned")
    assert tuned["applied"] is True
    assert tuned["faults"] < 500, tuned
