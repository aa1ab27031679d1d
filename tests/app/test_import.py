"""The arrows between the packages (README "Layout"): ``app`` (HTTP) and ``worker`` (Celery)
both stand on ``jobs`` (the job core) and neither imports the other; ``jobs`` and ``app``
never import torch (the api image has none). Checked twice: by walking every import
statement of the source (lazy ones inside functions included), and by importing the
packages in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("model", "jobs", "worker", "app")

CODE = """
import sys, pkgutil, importlib
import app
for mod in pkgutil.walk_packages(app.__path__, "app."):
    importlib.import_module(mod.name)
from app.main import create_app
from jobs.settings import load_settings
import tempfile
create_app(load_settings(data_dir=tempfile.mkdtemp())).openapi()
print(sorted(m for m in ("torch", "worker", "celery") if m in sys.modules))
"""

JOBS_CODE = """
import sys, pkgutil, importlib
import jobs
for mod in pkgutil.walk_packages(jobs.__path__, "jobs."):
    importlib.import_module(mod.name)
print(sorted(m for m in ("torch", "app", "worker", "fastapi") if m in sys.modules))
"""


def _modules() -> dict[str, Path]:
    """Every module of our packages by dotted name (a package by its own name)."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for file in (ROOT / package).rglob("*.py"):
            parts = list(file.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = file
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, file: Path, known: dict[str, Path]) -> set[str]:
    """The modules ``name`` imports, anywhere in the file, mapped to our modules where they
    are ours (``from jobs import store`` -> jobs.store) and kept as top-level names otherwise."""
    found: set[str] = set()
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(file.read_text())
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue  # annotations only: never imported at run time
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    out: set[str] = set()
    for target in found:
        while target not in known and "." in target:
            target = target.rpartition(".")[0]
        if target != name:
            out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, file, known) for name, file in known.items()}


def _top(module: str) -> str:
    return module.split(".")[0]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): every import
    cycle lies inside one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue  # not ours
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _private_imports(packages: tuple[str, ...]) -> list[str]:
    """``from ours.x import _name`` in another module: a private name used across modules."""
    out = []
    for name, file in _modules().items():
        if _top(name) not in packages:
            continue
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and _top(node.module or "") in PACKAGES:
                out += [f"{name}: from {node.module} import {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def _private_definitions(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, methods, classes, attributes set on self."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def _private_attribute_uses(packages: tuple[str, ...]) -> list[str]:
    """``obj._name`` (obj not self/cls) where ``_name`` is defined by another of our modules
    and not by this one: another module's private method or attribute reached into."""
    trees = {name: ast.parse(file.read_text()) for name, file in _modules().items()}
    defined = {name: _private_definitions(tree) for name, tree in trees.items()}
    everywhere = {n for names in defined.values() for n in names}
    out = []
    for name, tree in trees.items():
        if _top(name) not in packages:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in everywhere and node.attr not in defined[name]
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                out.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    return out


def test_layering_holds_in_the_source() -> None:
    forbidden = {"app": {"worker"}, "worker": {"app"}, "jobs": {"app", "worker", "torch"},
                 "model": {"app", "worker", "jobs"}}
    broken = sorted(f"{module} imports {target}" for module, targets in _graph().items()
                    for target in targets if _top(target) in forbidden[_top(module)])
    assert broken == []


def test_no_import_cycles_in_any_package() -> None:
    """Lazy imports inside functions count: a cycle hidden in a function is still a cycle."""
    assert _cycles(_graph()) == []


def test_no_private_names_cross_modules() -> None:
    assert _private_imports(PACKAGES) == []
    assert _private_attribute_uses(PACKAGES) == []


def test_the_private_name_walk_finds_a_reach_into_another_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "a.py").write_text("class A:\n    def _stats(self):\n        return 1\n")
    (tmp_path / "model" / "b.py").write_text("from model.a import A, _helper\n\ndef f(a: A):\n    return a._stats()\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGES", ("model",))
    assert _private_imports(("model",)) == ["model.b: from model.a import _helper"]
    assert _private_attribute_uses(("model",)) == ["model.b:4: a._stats"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_walk_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself: an import inside a function counts, ``from pkg import mod`` names
    the module, a relative import resolves against its package, an ``if TYPE_CHECKING:``
    import (annotations only) does not count."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("from . import c\nimport torch\n")
    (tmp_path / "pkg" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    known = {"pkg": tmp_path / "pkg" / "__init__.py", **{f"pkg.{m}": tmp_path / "pkg" / f"{m}.py" for m in "abc"}}
    assert _imports("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    assert _imports("pkg.b", known["pkg.b"], known) == {"pkg.c", "torch"}
    assert _imports("pkg.c", known["pkg.c"], known) == {"typing"}  # type-only imports do not count


def test_app_imports_neither_torch_nor_worker() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['celery']"  # celery yes (send_task by name), torch and worker no


def test_jobs_imports_no_torch_no_http_and_neither_side() -> None:
    out = subprocess.run([sys.executable, "-c", JOBS_CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
