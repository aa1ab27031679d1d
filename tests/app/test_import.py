"""The api process must not import torch nor the worker (the api image has no torch)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys, pkgutil, importlib
import app
for mod in pkgutil.walk_packages(app.__path__, "app."):
    importlib.import_module(mod.name)
from app.main import create_app
from app.settings import load_settings
import tempfile
create_app(load_settings(data_dir=tempfile.mkdtemp())).openapi()
print(sorted(m for m in ("torch", "worker", "celery") if m in sys.modules))
"""


def test_app_imports_neither_torch_nor_worker() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['celery']"  # celery yes (send_task by name), torch and worker no
