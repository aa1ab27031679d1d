"""Where a DeePMD system's files live: a folder, or a group of an HDF5 file.

Both hold the same names (``type.raw``, ``type_map.raw``, ``nopbc``, ``set.*/coord.npy``
…); in HDF5 they are datasets (DeePMD-kit's and dpdata's ``deepmd/hdf5`` layout) and a
system is addressed as ``data.hdf5#/path/to/group``. The reader in ``model.data`` only sees
this interface, so both layouts follow one set of rules. HDF5 reads only the datasets the
layout names, only numeric ones, and checks each one's size before reading it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from model.errors import DataError

HDF5_SUFFIXES = (".hdf5", ".h5")
MAX_HDF5_ARRAY_BYTES = 16 * 1024**3  # one dataset read into memory
OUTSIDE_THE_FILE = ("soft and external links, datasets stored in external files and virtual datasets are "
                    "not read (every object must be stored in the HDF5 file itself, under one name)")


def split_hdf5(path: str | Path) -> tuple[Path, str] | None:
    """'data.hdf5#/a/b' → (data.hdf5, 'a/b'); 'data.hdf5' → (data.hdf5, ''); else None."""
    text = str(path)
    file_part, sep, inner = text.partition("#")
    if sep or Path(file_part).suffix.lower() in HDF5_SUFFIXES:
        return Path(file_part), inner.strip("/")
    return None


class SystemStore(ABC):
    path: str  # how the system is named in messages and System.path

    def name(self, *parts: str) -> str:
        return "/".join([self.path, *parts])

    @abstractmethod
    def has(self, *parts: str) -> bool: ...

    @abstractmethod
    def sets(self) -> list[str]: ...

    @abstractmethod
    def read_array(self, *parts: str) -> np.ndarray: ...

    @abstractmethod
    def read_ints(self, name: str) -> np.ndarray: ...

    @abstractmethod
    def read_words(self, name: str) -> list[str]: ...

    def close(self) -> None:
        return None

    def __enter__(self) -> SystemStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class FolderStore(SystemStore):
    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise DataError("system folder does not exist", path=str(folder))
        self.folder = folder
        self.path = str(folder)

    def has(self, *parts: str) -> bool:
        return self.folder.joinpath(*parts).exists()

    def sets(self) -> list[str]:
        return sorted(p.name for p in self.folder.glob("set.*") if p.is_dir())

    def read_array(self, *parts: str) -> np.ndarray:
        path = self.folder.joinpath(*parts)
        try:  # memory-mapped: huge trajectories are read slice by slice later
            return np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"cannot read as a numpy .npy file ({exc})", path=str(path)) from None

    def read_ints(self, name: str) -> np.ndarray:
        try:
            return np.loadtxt(self.folder / name, dtype=np.int64, ndmin=1).reshape(-1)
        except ValueError as exc:
            raise DataError(f"expected whitespace-separated integers ({exc})", path=self.name(name)) from None

    def read_words(self, name: str) -> list[str]:
        return (self.folder / name).read_text().split()


def _local(root: Any, rel: str) -> Any | None:
    """The object at ``rel`` below ``root`` when every step of the way is a hard link of this
    file, else None: a soft or external link is never followed (it could lead to another file)."""
    import h5py

    node = root
    for part in (p for p in rel.split("/") if p):
        if not isinstance(node, h5py.Group) or not isinstance(node.get(part, getlink=True), h5py.HardLink):
            return None
        node = node[part]
    return node


class HDF5Store(SystemStore):
    def __init__(self, file: Path, group: str) -> None:
        import h5py

        if not file.is_file():
            raise DataError("HDF5 file does not exist", path=str(file))
        try:
            self.file = h5py.File(file, "r")
        except OSError as exc:
            raise DataError(f"cannot open as HDF5 ({exc})", path=str(file)) from None
        self.path = f"{file}#/{group}" if group else str(file)
        node = _local(self.file, group)
        if not isinstance(node, h5py.Group):
            self.file.close()
            raise DataError("no such group in the HDF5 file", path=self.path)
        self.group = node

    def close(self) -> None:
        self.file.close()

    def _dataset(self, *parts: str) -> Any:
        import h5py

        ds = _local(self.group, "/".join(parts))
        if not isinstance(ds, h5py.Dataset):
            raise DataError("not a dataset", path=self.name(*parts))
        if ds.external or ds.is_virtual:
            raise DataError(OUTSIDE_THE_FILE, path=self.name(*parts))
        return ds

    def has(self, *parts: str) -> bool:
        return _local(self.group, "/".join(parts)) is not None

    def sets(self) -> list[str]:
        import h5py

        return sorted(k for k in self.group if k.startswith("set.") and isinstance(_local(self.group, k), h5py.Group))

    def read_array(self, *parts: str) -> np.ndarray:
        ds = self._dataset(*parts)
        if ds.dtype.kind not in "biuf":
            raise DataError(f"dataset of type {ds.dtype} is not numeric", path=self.name(*parts))
        if ds.size * ds.dtype.itemsize > MAX_HDF5_ARRAY_BYTES:
            raise DataError(f"dataset of {ds.size} values is larger than this reader accepts", path=self.name(*parts))
        return np.asarray(ds[()])

    def read_ints(self, name: str) -> np.ndarray:
        arr = self.read_array(name)
        if arr.dtype.kind not in "iub":
            raise DataError(f"expected integer atom types, found {arr.dtype}", path=self.name(name))
        return arr.astype(np.int64).reshape(-1)

    def read_words(self, name: str) -> list[str]:
        ds = self._dataset(name)
        if ds.dtype.kind not in "SOU" or ds.size > 10_000:
            raise DataError(f"expected a list of names, found {ds.dtype} {ds.shape}", path=self.name(name))
        values = np.atleast_1d(ds[()]).reshape(-1)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values.tolist()]


def open_store(path: str | Path) -> SystemStore:
    parts = split_hdf5(path)
    if parts is not None:
        return HDF5Store(*parts)
    return FolderStore(Path(path))


def is_system_dir(path: str | Path) -> bool:
    """A folder with type.raw, or an HDF5 group with type.raw."""
    parts = split_hdf5(path)
    if parts is None:
        return (Path(path) / "type.raw").is_file()
    if not parts[0].is_file():
        return False
    try:
        with open_store(path) as store:
            return store.has("type.raw")
    except DataError:
        return False


def check_self_contained(file: Path) -> None:
    """DataError unless every object of the HDF5 file is stored in it and reached by hard
    links: external (and soft) links, datasets kept in external files and virtual datasets
    would make the reader open other files (an uploaded file could name any file on the server)."""
    import h5py

    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise DataError(f"cannot open as HDF5 ({exc})", path=str(file)) from None
    bad: list[str] = []

    def visit(name: str, link: Any) -> None:
        if not isinstance(link, h5py.HardLink):
            bad.append(name)
        else:
            node = f.get(name)
            if isinstance(node, h5py.Dataset) and (node.external or node.is_virtual):
                bad.append(name)

    with f:
        f.visititems_links(visit)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise DataError(f"{OUTSIDE_THE_FILE}: {shown}", path=str(file))


def _hdf5_systems(file: Path, group: str) -> list[str]:
    import h5py

    check_self_contained(file)
    found: list[str] = []
    with open_store(f"{file}#/{group}") as store:
        assert isinstance(store, HDF5Store)
        if store.has("type.raw"):
            return [store.path]

        def visit(name: str, node: Any) -> None:
            if isinstance(node, h5py.Group) and "type.raw" in node:
                found.append(f"{file}#/{group + '/' if group else ''}{name}")

        store.group.visititems(visit)
    return sorted(found)


def find_systems(root: str | Path) -> list[str]:
    """``root`` itself if it is a system, else every system below it (sorted): folders with
    type.raw and the systems inside HDF5 files (``file.hdf5#/group``)."""
    parts = split_hdf5(root)
    if parts is not None:
        return _hdf5_systems(*parts) if parts[0].is_file() else []
    folder = Path(root)
    if is_system_dir(folder):
        return [str(folder)]
    found = [str(p.parent) for p in folder.rglob("type.raw")]
    for suffix in HDF5_SUFFIXES:
        for file in folder.rglob(f"*{suffix}"):
            found.extend(_hdf5_systems(file, ""))
    return sorted(found)
