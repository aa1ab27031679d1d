"""DeePMD-kit's serialized-model files: ``.dp`` (HDF5) and ``.yaml``, written and read safely.

``.dp``: the document as JSON in the root's ``attrs["json"]``; every array under an
``@variables`` key is replaced by the name of an HDF5 dataset (``/variable_0000`` …).
``.yaml``: the same document with each array inline as ``{"@class": "np.ndarray",
"@is_variable": true, "@version": 1, "dtype": ..., "value": [...]}``.

Reading is defensive, because a model file may come from anyone: YAML only through
``yaml.safe_load`` (tags that construct objects are errors), HDF5 datasets only where the
JSON names them, only plain in-file numeric datasets (no external storage, virtual
datasets or links to other files), and caps on the file, the JSON and every array.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from model.errors import CheckpointError

SUFFIXES = (".dp", ".yaml", ".yml")
MAX_FILE_BYTES = 2 * 1024**3
MAX_JSON_BYTES = 32 * 1024**2
MAX_ARRAY_VALUES = 64 * 1024**2  # one variable
MAX_TOTAL_VALUES = 256 * 1024**2  # all variables together
MAX_TREE_NODES = 1_000_000  # dicts/lists/scalars outside arrays (YAML aliases cannot blow this up)
_DTYPES = ("float64", "float32", "float16", "int64", "int32", "bool")


def is_dpmodel_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _map_variables(node: Any, fn: Callable[[Any, str], Any], path: str = "", inside: bool = False) -> Any:
    """Apply ``fn(leaf, json_path)`` to every variable (the leaves below ``@variables``)."""
    if isinstance(node, dict):
        if node.get("@is_variable", False):
            return fn(node, path)
        return {k: _map_variables(v, fn, f"{path}.{k}" if path else str(k), inside or k == "@variables")
                for k, v in node.items()}
    if isinstance(node, list):
        return [_map_variables(v, fn, f"{path}[{i}]", inside) for i, v in enumerate(node)]
    if inside and node is not None:
        return fn(node, path)
    return node


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the partial file only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_dpmodel(path: str | Path, document: dict[str, Any]) -> Path:
    """Write the document (numpy arrays under ``@variables``) as .dp or .yaml."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dp":
        import h5py

        def write_h5(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                counter = iter(range(10**9))

                def store(value: Any, _: str) -> str:
                    return str(f.create_dataset(f"variable_{next(counter):04d}", data=np.asarray(value)).name)

                f.attrs["json"] = json.dumps(_map_variables(document, store), separators=(",", ":"))

        _atomic_write(path, write_h5)
    elif suffix in (".yaml", ".yml"):
        import yaml

        def inline(value: Any, _: str) -> dict[str, Any]:
            arr = np.asarray(value)
            return {"@class": "np.ndarray", "@is_variable": True, "@version": 1, "dtype": arr.dtype.name,
                    "value": arr.tolist()}

        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        text = yaml.dump(_map_variables(document, inline), Dumper=dumper)
        def write_text(tmp: Path) -> None:
            tmp.write_text(text)

        _atomic_write(path, write_text)
    else:
        raise CheckpointError(f"{path}: unknown model file type {suffix!r}; use .dp or .yaml")
    return path


class _Budget:
    def __init__(self, path: Path) -> None:
        self.path, self.values = path, 0

    def take(self, n: int, where: str) -> None:
        if n > MAX_ARRAY_VALUES:
            raise CheckpointError(f"{self.path}: {where}: {n} values, more than the {MAX_ARRAY_VALUES} allowed")
        self.values += n
        if self.values > MAX_TOTAL_VALUES:
            raise CheckpointError(f"{self.path}: more than {MAX_TOTAL_VALUES} values in all arrays")


def _count_nodes(node: Any, path: Path) -> None:
    """Walk the plain tree once with a cap, before anything recurses through it."""
    stack, seen = [node], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_TREE_NODES:
            raise CheckpointError(f"{path}: the model document has more than {MAX_TREE_NODES} nodes")
        if isinstance(item, dict):
            if item.get("@class") == "np.ndarray":
                continue  # arrays are counted by their own cap
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _read_dp(path: Path) -> dict[str, Any]:
    import h5py

    budget = _Budget(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise CheckpointError(f"{path}: not an HDF5 .dp model file ({exc})") from None
    with f:
        raw = f.attrs.get("json")
        if raw is None:
            raise CheckpointError(f"{path}: no 'json' attribute: not a DeePMD-kit .dp model")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        if len(text) > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: the model document is larger than {MAX_JSON_BYTES} bytes")
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: attrs['json'] is not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise CheckpointError(f"{path}: the model document is not a JSON object")
        _count_nodes(document, path)

        def load(ref: Any, where: str) -> np.ndarray:
            if not isinstance(ref, str) or not ref.startswith("/") or len(ref) > 256:
                raise CheckpointError(f"{path}: {where}: expected the name of a dataset, found {ref!r:.80}")
            link = f.get(ref, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise CheckpointError(f"{path}: {where}: {ref} is not a dataset of this file")
            ds = f[ref]
            if not isinstance(ds, h5py.Dataset) or ds.external or ds.is_virtual:
                raise CheckpointError(f"{path}: {where}: {ref} is not a plain dataset stored in this file")
            if ds.dtype.name not in _DTYPES:
                raise CheckpointError(f"{path}: {where}: dataset of type {ds.dtype} (numbers expected)")
            budget.take(int(ds.size), where)
            return np.asarray(ds[()])

        return dict(_map_variables(document, load))


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    budget = _Budget(path)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with path.open("rb") as fh:
            document = yaml.load(fh, Loader=loader)  # a safe loader: no object-constructing tags
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a safe, valid YAML model document ({first})") from None
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: the model document is not a mapping")
    _count_nodes(document, path)

    def load(node: Any, where: str) -> np.ndarray:
        if isinstance(node, (int, float)) and not isinstance(node, bool):  # a scalar variable
            return np.asarray(node, dtype=np.float64)
        if not isinstance(node, dict) or node.get("@class") != "np.ndarray" or "value" not in node:
            raise CheckpointError(f"{path}: {where}: expected an inline np.ndarray, found {type(node).__name__}")
        dtype = str(node.get("dtype"))
        if dtype not in _DTYPES:
            raise CheckpointError(f"{path}: {where}: dtype {dtype!r} is not one of {_DTYPES}")
        value = node["value"]
        count = _count_values(value, path, where)
        budget.take(count, where)
        try:
            return np.asarray(value, dtype=dtype)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: {where}: not a rectangular array of numbers ({exc})") from None

    return dict(_map_variables(document, load))


def _count_values(value: Any, path: Path, where: str) -> int:
    stack, n = [value], 0
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            n += 1
        if n > MAX_ARRAY_VALUES or len(stack) > MAX_ARRAY_VALUES:
            raise CheckpointError(f"{path}: {where}: more than the {MAX_ARRAY_VALUES} values allowed")
    return n


def read_dpmodel(path: str | Path) -> dict[str, Any]:
    """The document of a .dp/.yaml file with numpy arrays at the variables. Every problem
    is a CheckpointError naming the file (and the JSON path where there is one)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file does not exist")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    suffix = path.suffix.lower()
    if suffix == ".dp":
        return _read_dp(path)
    if suffix in (".yaml", ".yml"):
        return _read_yaml(path)
    raise CheckpointError(f"{path}: not a .dp or .yaml model file")
