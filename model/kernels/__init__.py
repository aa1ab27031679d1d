"""Optional compiled CPU kernels, built on first use with torch.utils.cpp_extension.

Built for the machine that runs them (-march=native) and cached by torch (per source and
CPU). Anything that prevents building — no C++ compiler, no ninja, DPTENSOR_KERNELS=0 —
leaves the pure-PyTorch path in charge, which computes the same function; the kernels
only serve inference on CPU.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("embed_contract.cpp")
_lock = threading.Lock()
_state: dict[str, ModuleType | None] = {}


class KernelWarning(UserWarning):
    """The compiled kernels could not be built; the (slower) PyTorch path is used."""


def _cpu_tag() -> str:
    """Distinguishes builds for different CPUs sharing one cache directory."""
    flags = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return hashlib.sha1((flags + _SOURCE.read_text()).encode()).hexdigest()[:10]


def embed_kernels() -> ModuleType | None:
    """The fused embedding/contraction module, or None when unavailable."""
    if os.environ.get("DPTENSOR_KERNELS", "1") == "0":
        return None
    with _lock:
        if "embed" not in _state:
            _state["embed"] = _build()
        return _state["embed"]


def _build() -> ModuleType | None:
    try:
        from torch.utils.cpp_extension import load

        return load(name=f"dptensor_embed_{_cpu_tag()}", sources=[str(_SOURCE)], verbose=False,
                    extra_cflags=["-O3", "-march=native", "-ffast-math"])
    except Exception as exc:  # a missing compiler shows up as many different exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        warnings.warn(f"dptensor: compiled CPU kernels unavailable ({first}); using the PyTorch path",
                      KernelWarning, stacklevel=3)
        return None
