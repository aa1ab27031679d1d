"""DeePMD-kit itself, for the tests that claim compatibility with it.

It lives in its own pinned venv, made by ``bench/deepmd_env.py`` (``scripts/test`` creates it
when missing, in ``${XDG_CACHE_HOME:-~/.cache}/dptensor/venv-deepmd``). Without it these
tests skip locally; under CI (``CI=true``) they fail, so a CI run cannot pass without
having compared against DeePMD-kit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).resolve().parent / "model" / "deepmd_runner.py"


def _deepmd_env() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deepmd_env", ROOT / "bench" / "deepmd_env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("deepmd_env", module)
    spec.loader.exec_module(module)
    return module


@cache
def _probe() -> tuple[dict[str, Any] | None, str]:
    env = _deepmd_env()
    info = env.probe()
    if info is None:
        return None, (f"the DeePMD-kit venv {env.VENV_DIR} is missing or broken "
                      f"(create it: python bench/deepmd_env.py)")
    if info.get("deepmd") != env.DEEPMD_VERSION:
        return None, f"the DeePMD-kit venv has deepmd-kit {info.get('deepmd')}, expected {env.DEEPMD_VERSION}"
    return info, ""


def require_deepmd() -> dict[str, Any]:
    """DeePMD-kit's versions; skips (locally) or fails (CI=true) when it is unavailable."""
    info, reason = _probe()
    if info is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must compare against DeePMD-kit: {reason}")
        pytest.skip(reason)
    return info


def run_deepmd(job: dict[str, Any], workdir: Path, timeout: float = 2400) -> None:
    """Run tests/model/deepmd_runner.py with ``job`` inside DeePMD-kit's venv."""
    require_deepmd()
    env_module = _deepmd_env()
    workdir.mkdir(parents=True, exist_ok=True)
    job_file = workdir / "deepmd_job.json"
    job_file.write_text(json.dumps(job))
    env = env_module.deepmd_run_env(threads=1)
    res = subprocess.run([str(env_module.venv_python()), str(RUNNER), str(job_file)], env=env, cwd=workdir,
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise AssertionError(f"DeePMD-kit runner failed (exit {res.returncode}):\n{tail}")
