"""DeePMD systems → ``System``: npy folders and HDF5 groups, one reader, one set of rules.

A system holds ``type.raw`` (one type per atom), optionally ``type_map.raw`` (type names),
``nopbc`` for non-periodic systems, and ``set.*`` with ``coord.npy`` [nf, nat*3],
``box.npy`` [nf, 9] and the labels. On disk that is a folder of files; in an HDF5 file
(DeePMD-kit's and dpdata's ``deepmd/hdf5``) a group with the same names as datasets,
addressed as ``data.hdf5#/path/to/group``. Atomic labels come in two layouts: only the
atoms of ``sel_type`` (in file order) or all atoms (zeros elsewhere). Every malformed input
raises ``DataError`` naming the file, the shape found and the shape expected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.keys import ATOMIC_LABEL, ATOMIC_LABEL_ALIAS, GLOBAL_LABEL, TENSOR_DIM
from model.system import System, check_finite
from model.system_store import HDF5_SUFFIXES, SystemStore, find_systems, is_system_dir, open_store

log = logging.getLogger("dptensor.data")

__all__ = ["HDF5_SUFFIXES", "System", "SystemStore", "find_systems", "is_system_dir",
           "load_system", "load_systems", "open_store"]


def _raw_types(store: SystemStore) -> np.ndarray:
    if not store.has("type.raw"):
        raise DataError("not a DeePMD system: type.raw is missing", path=store.path)
    raw = store.read_ints("type.raw")
    if raw.size == 0:
        raise DataError("type.raw is empty: a system needs at least one atom", path=store.name("type.raw"))
    return raw


def _map_types(raw_types: np.ndarray, names: list[str] | None, type_map: list[str] | None,
               store: SystemStore) -> np.ndarray:
    type_file = store.name("type.raw")
    if (raw_types < 0).any():
        raise DataError("atom types must be >= 0", path=type_file)
    if names is not None:
        if raw_types.max() >= len(names):
            raise DataError(
                f"type.raw uses type {int(raw_types.max())} but type_map.raw names only {len(names)} types {names}",
                path=type_file,
            )
        if type_map is None:
            return raw_types
        used = sorted({names[t] for t in raw_types.tolist()})
        unknown = [n for n in used if n not in type_map]
        if unknown:
            raise DataError(f"element(s) {unknown} are not in the model's type_map {type_map}",
                            path=store.name("type_map.raw"))
        lookup = np.array([type_map.index(n) if n in type_map else -1 for n in names], dtype=np.int64)
        return lookup[raw_types]
    if type_map is not None and raw_types.max() >= len(type_map):
        raise DataError(
            f"type {int(raw_types.max())} is out of range for the model's type_map {type_map} "
            "(add a type_map.raw file to map types by name)",
            path=type_file,
        )
    return raw_types


def _frame_rows(store: SystemStore, set_name: str, file: str, row: int, nframes: int | None,
                expected: str) -> np.ndarray:
    """``set/file`` as a float64 [nframes, row] array (a view of a memory map where possible);
    a size that does not fit is a DataError naming the file, not numpy's reshape error."""
    arr = store.read_array(set_name, file)
    if arr.size == 0 or arr.size % row != 0 or (nframes is not None and arr.size != nframes * row):
        raise DataError(f"has shape {tuple(arr.shape)}, expected {expected}", path=store.name(set_name, file))
    return np.asarray(arr, dtype=np.float64).reshape(-1, row)


def _label_name(store: SystemStore, set_name: str, stem: str, alias: str | None, notes: list[str]) -> str | None:
    if store.has(set_name, f"{stem}.npy"):
        return f"{stem}.npy"
    if alias is not None and store.has(set_name, f"{alias}.npy"):
        notes.append(f"{store.name(set_name, alias + '.npy')}: read as {stem}.npy "
                     f"(DeePMD-kit expects the name {stem}.npy)")
        return f"{alias}.npy"
    return None


def _atomic_layout(arr: np.ndarray, path: str, nframes: int, atype: np.ndarray,
                   sel_type: list[int], dim: int) -> np.ndarray:
    """Atomic labels to the natoms layout [nf, nat, dim]."""
    nat = atype.shape[0]
    sel_mask = np.isin(atype, sel_type)
    nsel = int(sel_mask.sum())
    if arr.size == nframes * nat * dim:
        return np.asarray(arr, dtype=np.float64).reshape(nframes, nat, dim)
    if nsel and arr.size == nframes * nsel * dim:
        out = np.zeros((nframes, nat, dim))
        out[:, sel_mask] = np.asarray(arr).reshape(nframes, nsel, dim)
        return out
    hint = ""
    if arr.size == nframes * dim:
        hint = " — this looks like a global label: name it " + GLOBAL_LABEL["dipole" if dim == 3 else "polar"] + ".npy"
    raise DataError(
        f"has shape {tuple(arr.shape)}, expected ({nframes}, {nsel * dim}) (the {nsel} atoms of sel_type "
        f"{sel_type} × {dim}) or ({nframes}, {nat * dim}) (all {nat} atoms × {dim}){hint}",
        path=path,
    )


def _read_labels(store: SystemStore, set_name: str, kind: str, nf: int, first: int, atype: np.ndarray,
                 sel_type: list[int], notes: list[str]) -> tuple[np.ndarray | None, np.ndarray | None]:
    dim = TENSOR_DIM[kind]
    glob = atomic = None
    gname = _label_name(store, set_name, GLOBAL_LABEL[kind], None, notes)
    aname = _label_name(store, set_name, ATOMIC_LABEL[kind], ATOMIC_LABEL_ALIAS[kind], notes)
    if gname is not None:
        garr = store.read_array(set_name, gname)
        if garr.size != nf * dim:
            hint = (f" — an atomic label? name it {ATOMIC_LABEL[kind]}.npy"
                    if garr.size % (nf * dim) == 0 and garr.size > nf * dim else "")
            raise DataError(f"has shape {tuple(garr.shape)}, expected ({nf}, {dim}){hint}",
                            path=store.name(set_name, gname))
        glob = np.asarray(garr, dtype=np.float64).reshape(nf, dim)
        check_finite(glob, "label", store.name(set_name, gname), first)
    if aname is not None:
        atomic = _atomic_layout(store.read_array(set_name, aname), store.name(set_name, aname), nf, atype,
                                sel_type, dim)
        check_finite(atomic, "label", store.name(set_name, aname), first)
    return glob, atomic


def load_system(
    path: str | Path,
    *,
    kind: str | None = None,
    type_map: list[str] | None = None,
    sel_type: list[int] | None = None,
) -> System:
    """Read one system (a folder or ``file.hdf5#/group``). ``kind`` ("dipole"/"polar")
    selects the labels to read (None: no labels); ``type_map`` maps the system's type names
    onto model types; ``sel_type`` is needed to read atomic labels in the nsel layout.
    Frame numbers in messages count over the whole system (all sets in order); what was
    accepted but is worth telling comes back in ``System.notes``."""
    with open_store(path) as store:
        raw_types = _raw_types(store)
        names = store.read_words("type_map.raw") if store.has("type_map.raw") else None
        atype = _map_types(raw_types, names, type_map, store).astype(np.int64)
        nat = int(atype.shape[0])
        pbc = not store.has("nopbc")
        if kind is not None and sel_type is None:
            sel_type = sorted(set(atype.tolist()))
        sets = store.sets()
        if not sets:
            raise DataError("no set.* found (expected set.000/coord.npy ...)", path=store.path)
        coords: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        globals_: list[np.ndarray] = []
        atomics: list[np.ndarray] = []
        notes: list[str] = []
        first = 0
        for set_name in sets:
            if not store.has(set_name, "coord.npy"):
                raise DataError("coord.npy is missing", path=store.name(set_name))
            coord = _frame_rows(store, set_name, "coord.npy", nat * 3, None,
                                f"(nframes, {nat * 3}) for the {nat} atoms of type.raw")
            nf = coord.shape[0]
            check_finite(coord, "coordinates", store.name(set_name, "coord.npy"), first)
            coords.append(coord.reshape(nf, nat, 3))
            if pbc:
                if not store.has(set_name, "box.npy"):
                    raise DataError("box.npy is missing (add an empty 'nopbc' file for a non-periodic system)",
                                    path=store.name(set_name))
                box = _frame_rows(store, set_name, "box.npy", 9, nf, f"({nf}, 9)").reshape(nf, 3, 3)
                check_finite(box, "cell", store.name(set_name, "box.npy"), first)
                vol = np.abs(np.linalg.det(box))
                if (vol < 1e-6).any():
                    raise DataError(f"degenerate cell (zero volume) in frame(s) "
                                    f"{(first + np.flatnonzero(vol < 1e-6)[:10]).tolist()}",
                                    path=store.name(set_name, "box.npy"))
                boxes.append(box)
            if kind is not None:
                assert sel_type is not None
                glob, atomic = _read_labels(store, set_name, kind, nf, first, atype, sel_type, notes)
                for arr, found, name in ((glob, globals_, GLOBAL_LABEL[kind]), (atomic, atomics, ATOMIC_LABEL[kind])):
                    if arr is not None:
                        found.append(arr)
                    if found and len(found) != len(coords):
                        raise DataError(f"{name}.npy is present in some set.* but missing here",
                                        path=store.name(set_name))
            first += nf

    def joined(parts: list[np.ndarray]) -> np.ndarray:  # one set: no concatenation copy
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    return System(
        path=store.path,
        atype=atype,
        coord=joined(coords),
        box=joined(boxes) if pbc else None,
        global_label=joined(globals_) if globals_ else None,
        atomic_label=joined(atomics) if atomics else None,
        type_names=list(type_map) if type_map is not None else names,  # the names atype indexes
        pbc=(pbc, pbc, pbc),
        notes=tuple(notes),
    )


def resolve_system_path(entry: str, base: Path) -> str:
    """A systems entry of input.json, relative to ``base`` unless absolute (``#`` kept)."""
    file_part, sep, inner = entry.partition("#")
    root = Path(file_part)
    root = root if root.is_absolute() else (base / root).resolve()
    return f"{root}{sep}{inner}"


def load_systems(
    paths: list[str], base: Path, *, kind: str, type_map: list[str] | None, sel_type: list[int] | None,
    require_labels: bool = True,
) -> list[System]:
    """Resolve (relative to ``base``), expand folders/HDF5 files of systems and load them all."""
    systems: list[System] = []
    for entry in paths:
        root = resolve_system_path(entry, base)
        if not Path(root.partition("#")[0]).exists():
            raise DataError("system path does not exist", path=root)
        found = find_systems(root)
        if not found:
            raise DataError("no DeePMD system (type.raw with set.*) found here", path=root)
        for path in found:
            system = load_system(path, kind=kind, type_map=type_map, sel_type=sel_type)
            if require_labels and system.global_label is None and system.atomic_label is None:
                raise DataError(
                    f"no {kind} labels: expected set.*/{GLOBAL_LABEL[kind]}.npy and/or "
                    f"set.*/{ATOMIC_LABEL[kind]}.npy",
                    path=path,
                )
            for note in system.notes:
                log.warning("%s", note)  # for people: the terminal, the job log
            systems.append(system)
    return systems
