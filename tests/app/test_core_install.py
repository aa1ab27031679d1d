"""``pip install .`` without extras: the model commands work with the core dependencies
alone; the service commands say which extra to install (no traceback).

The check runs in a separate venv with only the core install. The venv lives in the pytest
cache and is made once (torch comes from the wheel pip already has, via
``pip install torch==<this venv's version>``); this checkout is installed into it afresh on
every run, from a copy of its sources so no build/ is left in the tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.model.test_train import EXAMPLES, tiny_input

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [p.rstrip("*") for p in tomllib.loads((REPO / "pyproject.toml").read_text())
            ["tool"]["setuptools"]["packages"]["find"]["include"]]
SOURCES = ("pyproject.toml", "README.md", *PACKAGES)
# what must NOT be importable in the core venv (service and dev extras)
NOT_CORE = ("pydantic_settings", "fastapi", "sqlalchemy", "celery", "uvicorn", "ase", "matplotlib")
SYSTEM = EXAMPLES / "dipole" / "validation_data_reformat" / "atomic_system"

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _pip(venv: Path, *args: str, cwd: Path) -> None:
    r = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *args], cwd)
    assert r.returncode == 0, r.stdout + r.stderr


def _extras_present(venv: Path, cwd: Path) -> list[str]:
    probe = f"import importlib.util as u; print(','.join(m for m in {NOT_CORE!r} if u.find_spec(m)))"
    r = _run([str(venv / "bin" / "python"), "-c", probe], cwd)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.strip().split(",") if m]


@pytest.fixture(scope="module")
def core(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a venv holding this checkout installed with `pip install .` (no extras)."""
    import torch

    venv = Path(request.config.cache.mkdir("core-venv"))
    work = tmp_path_factory.mktemp("core")
    if not (venv / "bin" / "python").exists() or _extras_present(venv, work):
        shutil.rmtree(venv)
        r = _run([sys.executable, "-m", "venv", str(venv)], work)
        assert r.returncode == 0, r.stderr
        _pip(venv, f"torch=={torch.__version__}", cwd=work)
    src = work / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    r = _run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--yes", "--quiet", "dptensor"], work)
    _pip(venv, str(src), cwd=work)
    assert _extras_present(venv, work) == []
    return venv / "bin"


def test_model_commands_work_with_the_core_install(core: Path, tmp_path: Path) -> None:
    raw = tiny_input(steps=4)
    raw["training"].update(disp_freq=2, save_freq=4)
    (tmp_path / "input.json").write_text(json.dumps(raw))
    dptensor = str(core / "dptensor")
    for cmd in (["train", "input.json", "--output", "run"],
                ["test", "-m", "run/model.pt", "-s", str(SYSTEM), "-n", "2", "-d", ""],
                ["predict", "-m", "run/model.pt", "-s", str(SYSTEM), "-o", "p.npz"],
                ["spectrum", "-m", "run/model.pt", "-t", str(SYSTEM), "--kind", "ir", "--dt", "0.5",
                 "--max-frames", "8", "-o", "ir.json"]):
        r = _run([dptensor, *cmd], tmp_path)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    assert (tmp_path / "run" / "model.pt").is_file() and (tmp_path / "p.npz").is_file()
    assert json.loads((tmp_path / "ir.json").read_text())["intensities"]["ir"]


@pytest.mark.parametrize("cmd", [["serve"], ["worker"], ["token", "create", "--user", "x"]])
def test_service_commands_name_the_extra(core: Path, tmp_path: Path, cmd: list[str]) -> None:
    r = _run([str(core / "dptensor"), *cmd], tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "pip install 'dptensor[service]'" in r.stderr and "pydantic-settings" in r.stderr
    assert not (tmp_path / ".dptensor").exists()  # nothing was started or created
