"""Process-level tuning for the command line and the workers (never done on import).

glibc malloc serves blocks above a dynamic threshold (128 KiB at start) with fresh mmaps
and hands freed memory at the top of the heap back to the kernel. A training step or an
inference chunk allocates and frees dozens of multi-MB activations, so every step paid for
thousands of page faults — each first touch of a fresh page costs ~2–3 µs on this class of
VM, which made a chain of twelve [4000, 100] float64 elementwise ops 11× slower
(26 ms instead of 2.4 ms; README, Performance). Keeping freed memory in the heap for reuse
removes them; the price is that a process keeps up to ``TRIM_THRESHOLD`` of freed memory
instead of returning it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum: only blocks above it get their own mmap
TRIM_THRESHOLD = 1024 * 1024 * 1024  # keep up to 1 GiB of freed heap for reuse

_tuned = False


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True when applied (a no-op
    returning False on other C libraries)."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _tuned
