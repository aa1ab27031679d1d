"""Create (idempotently) the DeePMD-kit virtualenv used by the benchmarks.

Usage: ``/work/main/.venv/bin/python bench/deepmd_env.py [--force]``

The venv lives outside the clone, in ``${XDG_CACHE_HOME:-~/.cache}/dptensor/venv-deepmd``
(override: ``DPTENSOR_DEEPMD_VENV``), so that it survives between CI runs on one machine;
``scripts/test`` creates it when missing and the DeePMD-kit tests use the same one.  torch is pinned to the CPU
build 2.13.0 in every pip command so that pip can never pull a CUDA torch.
DeePMD-kit is run in pure-PyTorch mode: its compiled op library is not loaded
(see :func:`deepmd_run_env`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
TORCH_PIN = "torch==2.13.0"
# The reference models in shared/data/deepmd_reference were made with DeePMD-kit 3.2.0.
DEEPMD_VERSION = "3.2.0"
DEEPMD_SPEC = f"deepmd-kit=={DEEPMD_VERSION}"


def default_venv_dir() -> Path:
    """Where the DeePMD-kit venv lives: ``$DPTENSOR_DEEPMD_VENV`` or the user cache."""
    override = os.environ.get("DPTENSOR_DEEPMD_VENV")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "dptensor" / "venv-deepmd"


VENV_DIR = default_venv_dir()
EXTRA_PACKAGES = ("mpich", "e3nn")

_PROBE = (
    "import json, torch, deepmd, importlib.metadata as md;"
    "import deepmd.pt.cxx_op as op;"
    "print(json.dumps({'torch': torch.__version__, 'deepmd': md.version('deepmd-kit'),"
    " 'mpich': md.version('mpich'), 'e3nn': md.version('e3nn'),"
    " 'custom_op_loaded': bool(op.ENABLE_CUSTOMIZED_OP),"
    " 'cuda': torch.version.cuda}))"
)


class DeepmdEnvError(RuntimeError):
    """The DeePMD-kit environment could not be created or is unusable."""


def venv_python() -> Path:
    """Path of the DeePMD-kit venv's python interpreter."""
    return VENV_DIR / "bin" / "python"


def dp_executable() -> Path:
    """Path of the ``dp`` console script inside the DeePMD-kit venv."""
    return VENV_DIR / "bin" / "dp"


def deepmd_run_env(threads: int | None = None) -> dict[str, str]:
    """Environment for running DeePMD-kit (pure PyTorch, CPU) from our processes.

    DeePMD-kit has no environment switch that skips its compiled op library: pure-PyTorch
    mode comes from :func:`disable_op_library` (the library is renamed in the venv).
    - ``DP_BACKEND=pytorch``: ``dp`` without ``--pt`` would otherwise pick TensorFlow.
    - ``CUDA_VISIBLE_DEVICES=""``: CPU only.
    - ``DP_INFER_BATCH_SIZE=1024``: DeePMD-kit's CPU default (1024 atoms per inference
      batch), set explicitly so it stops warning; override it by exporting it.
    - with ``threads``: OMP / DP intra-op threads pinned, inter-op 1.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["VIRTUAL_ENV"] = str(VENV_DIR)
    env["PATH"] = f"{VENV_DIR / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["DP_BACKEND"] = "pytorch"
    env.setdefault("DP_INFER_BATCH_SIZE", "1024")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads is not None:
        for key in ("OMP_NUM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS"):
            env[key] = str(threads)
        env["DP_INTER_OP_PARALLELISM_THREADS"] = "1"
    return env


def probe() -> dict[str, object] | None:
    """Versions installed in the venv, or None when it is missing or broken."""
    py = venv_python()
    if not py.exists():
        return None
    res = subprocess.run(
        [str(py), "-c", _PROBE], env=deepmd_run_env(), capture_output=True, text=True
    )
    if res.returncode != 0:
        return None
    try:
        info: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return info


def _deepmd_lib_dirs() -> list[Path]:
    return list((VENV_DIR / "lib").glob("python3*/site-packages/deepmd/lib"))


def disable_op_library() -> str:
    """Put DeePMD-kit in pure-PyTorch mode by hiding its compiled PyTorch op library.

    DeePMD-kit has no switch for this: ``deepmd.pt.cxx_op`` loads ``libdeepmd_op_pt.so``
    whenever the file exists, and raises when it was built for another torch (the 3.2.0
    wheel: torch 2.11).  Without the file it sets ``ENABLE_CUSTOMIZED_OP = False`` and runs
    pure PyTorch; se_e2_a needs none of those ops (only model compression would).  So the
    file is renamed to ``*.disabled``, always, so that runs do not depend on whether a
    wheel happens to match torch.
    """
    for libdir in _deepmd_lib_dirs():
        lib = libdir / "libdeepmd_op_pt.so"
        if lib.exists():
            lib.rename(lib.with_name(lib.name + ".disabled"))
            return f"renamed {lib.name} to {lib.name}.disabled (pure PyTorch)"
        if (libdir / "libdeepmd_op_pt.so.disabled").exists():
            return "libdeepmd_op_pt.so.disabled (pure PyTorch)"
    return "no libdeepmd_op_pt.so (pure PyTorch)"


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    res = subprocess.run(cmd)
    if res.returncode != 0:
        raise DeepmdEnvError(f"command failed with exit code {res.returncode}: {' '.join(cmd)}")


def _is_ok(info: dict[str, object] | None) -> bool:
    return (
        info is not None
        and str(info.get("torch", "")).startswith("2.13.0")
        and info.get("deepmd") == DEEPMD_VERSION
        and info.get("cuda") is None
    )


def ensure_env(force: bool = False) -> dict[str, object]:
    """Create the venv and install DeePMD-kit if needed; return the installed versions."""
    if not force and venv_python().exists():
        disable_op_library()
    info = None if force else probe()
    if _is_ok(info):
        assert info is not None
        return info
    if not venv_python().exists() or force:
        VENV_DIR.parent.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "venv", "--clear", str(VENV_DIR)])
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check"]
    _run([*pip, "--upgrade", "pip"])
    _run([*pip, TORCH_PIN])
    _run([*pip, TORCH_PIN, DEEPMD_SPEC, *EXTRA_PACKAGES])
    print("DeePMD-kit op library:", disable_op_library(), flush=True)
    info = probe()
    if not _is_ok(info):
        raise DeepmdEnvError(
            f"DeePMD-kit venv at {VENV_DIR} is unusable after install (probe: {info}); "
            "run with --force to rebuild it"
        )
    assert info is not None
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="recreate the venv from scratch")
    args = ap.parse_args(argv)
    try:
        info = ensure_env(force=args.force)
    except DeepmdEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"DeePMD-kit venv: {VENV_DIR}")
    print(f"python: {venv_python()}")
    print(f"op library: {disable_op_library()}")
    for key, val in info.items():
        print(f"  {key}: {val}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
