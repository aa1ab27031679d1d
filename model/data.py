"""DeePMD-kit "npy" systems → arrays, with the label rules of tensor fitting.

A system folder holds ``type.raw`` (one type per atom), optionally ``type_map.raw`` (type
names), an empty ``nopbc`` file for non-periodic systems, and ``set.*/`` folders with
``coord.npy`` [nf, nat*3], ``box.npy`` [nf, 9] and the labels. Atomic labels come in two
layouts: only the atoms of ``sel_type`` (in file order) or all atoms (zeros elsewhere).
Every malformed input raises ``DataError`` naming the file, the shape found and the
shape expected.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.errors import DataError
from model.keys import ATOMIC_LABEL, ATOMIC_LABEL_ALIAS, GLOBAL_LABEL, TENSOR_DIM


class DataWarning(UserWarning):
    """Data that is accepted but looks suspicious (e.g. a misnamed label file)."""


@dataclass(frozen=True)
class System:
    """One DeePMD system, types already mapped onto the model's type_map."""

    path: str
    atype: np.ndarray  # [nat] int64, model type indices
    coord: np.ndarray  # [nf, nat, 3] float64, Å
    box: np.ndarray | None  # [nf, 3, 3] float64, rows are cell vectors; None = no PBC
    global_label: np.ndarray | None  # [nf, dim] float64
    atomic_label: np.ndarray | None  # [nf, nat, dim] float64, zeros outside sel_type
    type_names: list[str] | None = None  # the system's own type_map.raw, if any

    @property
    def nframes(self) -> int:
        return int(self.coord.shape[0])

    @property
    def natoms(self) -> int:
        return int(self.coord.shape[1])

    @property
    def pbc(self) -> bool:
        return self.box is not None


def is_system_dir(path: Path) -> bool:
    return (path / "type.raw").is_file()


def find_systems(root: Path) -> list[Path]:
    """``root`` itself if it is a system, else every system folder below it (sorted)."""
    if is_system_dir(root):
        return [root]
    return sorted(p.parent for p in root.rglob("type.raw"))


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"cannot read as a numpy .npy file ({exc})", path=str(path)) from None


def _load_raw_ints(path: Path) -> np.ndarray:
    try:
        values = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"expected whitespace-separated integers ({exc})", path=str(path)) from None
    return values.reshape(-1)


def _reshape(arr: np.ndarray, path: Path, nframes: int | None, row: int, expected: str) -> np.ndarray:
    """Reshape to [nframes, row]; a size that does not fit is a DataError, not numpy's."""
    if arr.size == 0 or arr.size % row != 0 or (nframes is not None and arr.size != nframes * row):
        raise DataError(f"has shape {tuple(arr.shape)}, expected {expected}", path=str(path))
    return arr.reshape(-1, row).astype(np.float64)


def _check_finite(arr: np.ndarray, path: Path) -> None:
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        frames = np.flatnonzero(bad)
        raise DataError(
            f"contains NaN or inf values in frame(s) {frames[:10].tolist()} (row index within this file)",
            path=str(path),
        )


def _map_types(raw_types: np.ndarray, names: list[str] | None, type_map: list[str] | None, folder: Path) -> np.ndarray:
    if (raw_types < 0).any():
        raise DataError("atom types must be >= 0", path=str(folder / "type.raw"))
    if names is not None:
        if raw_types.max() >= len(names):
            raise DataError(
                f"type.raw uses type {int(raw_types.max())} but type_map.raw names only {len(names)} types {names}",
                path=str(folder / "type.raw"),
            )
        if type_map is None:
            return raw_types
        used = sorted({names[t] for t in raw_types.tolist()})
        unknown = [n for n in used if n not in type_map]
        if unknown:
            raise DataError(
                f"element(s) {unknown} are not in the model's type_map {type_map}",
                path=str(folder / "type_map.raw"),
            )
        lookup = np.array([type_map.index(n) if n in type_map else -1 for n in names], dtype=np.int64)
        return lookup[raw_types]
    if type_map is not None and raw_types.max() >= len(type_map):
        raise DataError(
            f"type {int(raw_types.max())} is out of range for the model's type_map {type_map} "
            "(add a type_map.raw file to map types by name)",
            path=str(folder / "type.raw"),
        )
    return raw_types


def _set_dirs(folder: Path) -> list[Path]:
    sets = sorted(p for p in folder.glob("set.*") if p.is_dir())
    if not sets:
        raise DataError("no set.* folder found (expected set.000/coord.npy ...)", path=str(folder))
    return sets


def _label_file(set_dir: Path, stem: str, alias: str | None) -> Path | None:
    proper = set_dir / f"{stem}.npy"
    if proper.is_file():
        return proper
    if alias is not None and (set_dir / f"{alias}.npy").is_file():
        warnings.warn(
            f"{set_dir / (alias + '.npy')}: read as {stem}.npy (DeePMD-kit expects the name {stem}.npy)",
            DataWarning,
            stacklevel=4,
        )
        return set_dir / f"{alias}.npy"
    return None


def _atomic_layout(arr: np.ndarray, path: Path, nframes: int, atype: np.ndarray,
                   sel_type: list[int], dim: int) -> np.ndarray:
    """Atomic labels to the natoms layout [nf, nat, dim]."""
    nat = atype.shape[0]
    sel_mask = np.isin(atype, sel_type)
    nsel = int(sel_mask.sum())
    if arr.size == nframes * nat * dim:
        out = arr.reshape(nframes, nat, dim).astype(np.float64)
        return out
    if nsel and arr.size == nframes * nsel * dim:
        out = np.zeros((nframes, nat, dim))
        out[:, sel_mask] = arr.reshape(nframes, nsel, dim)
        return out
    hint = ""
    if arr.size == nframes * dim:
        hint = " — this looks like a global label: name it " + ("dipole.npy" if dim == 3 else "polarizability.npy")
    raise DataError(
        f"has shape {tuple(arr.shape)}, expected ({nframes}, {nsel * dim}) (the {nsel} atoms of sel_type "
        f"{sel_type} × {dim}) or ({nframes}, {nat * dim}) (all {nat} atoms × {dim}){hint}",
        path=str(path),
    )


def load_system(
    path: str | Path,
    *,
    kind: str | None = None,
    type_map: list[str] | None = None,
    sel_type: list[int] | None = None,
) -> System:
    """Read one system. ``kind`` ("dipole"/"polar") selects the labels to read (None: no
    labels); ``type_map`` maps the system's type names onto model types; ``sel_type`` is
    needed to read atomic labels in the nsel layout."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError("system folder does not exist", path=str(folder))
    if not (folder / "type.raw").is_file():
        raise DataError("not a DeePMD system: type.raw is missing", path=str(folder))
    raw_types = _load_raw_ints(folder / "type.raw")
    if raw_types.size == 0:
        raise DataError("type.raw is empty: a system needs at least one atom", path=str(folder / "type.raw"))
    names = None
    if (folder / "type_map.raw").is_file():
        names = (folder / "type_map.raw").read_text().split()
    atype = _map_types(raw_types, names, type_map, folder)
    nat = int(atype.shape[0])
    pbc = not (folder / "nopbc").exists()
    dim = TENSOR_DIM[kind] if kind is not None else 0
    if kind is not None and sel_type is None:
        sel_type = sorted(set(atype.tolist()))

    coords, boxes, globals_, atomics = [], [], [], []
    for set_dir in _set_dirs(folder):
        coord_path = set_dir / "coord.npy"
        if not coord_path.is_file():
            raise DataError("coord.npy is missing", path=str(set_dir))
        coord = _reshape(_load_npy(coord_path), coord_path, None, nat * 3, f"(nframes, {nat * 3}) for {nat} atoms")
        nf = coord.shape[0]
        _check_finite(coord, coord_path)
        coords.append(coord.reshape(nf, nat, 3))
        if pbc:
            box_path = set_dir / "box.npy"
            if not box_path.is_file():
                raise DataError("box.npy is missing (add an empty 'nopbc' file for a non-periodic system)",
                                path=str(set_dir))
            box = _reshape(_load_npy(box_path), box_path, nf, 9, f"({nf}, 9)").reshape(nf, 3, 3)
            _check_finite(box, box_path)
            vol = np.abs(np.linalg.det(box))
            if (vol < 1e-6).any():
                raise DataError(f"degenerate cell (zero volume) in frame(s) {np.flatnonzero(vol < 1e-6)[:10].tolist()}",
                                path=str(box_path))
            boxes.append(box)
        if kind is None:
            continue
        gfile = _label_file(set_dir, GLOBAL_LABEL[kind], None)
        afile = _label_file(set_dir, ATOMIC_LABEL[kind], ATOMIC_LABEL_ALIAS[kind])
        if gfile is not None:
            hint = " — an atomic label? name it " + ATOMIC_LABEL[kind] + ".npy"
            garr = _load_npy(gfile)
            if garr.size != nf * dim:
                raise DataError(
                    f"has shape {tuple(garr.shape)}, expected ({nf}, {dim})"
                    + (hint if garr.size % (nf * dim) == 0 and garr.size > nf * dim else ""),
                    path=str(gfile),
                )
            garr = garr.reshape(nf, dim).astype(np.float64)
            _check_finite(garr, gfile)
            globals_.append(garr)
        if afile is not None:
            assert sel_type is not None
            aarr = _atomic_layout(_load_npy(afile), afile, nf, atype, sel_type, dim)
            _check_finite(aarr, afile)
            atomics.append(aarr)
        for found, name in ((globals_, GLOBAL_LABEL[kind]), (atomics, ATOMIC_LABEL[kind])):
            if found and len(found) != len(coords):
                raise DataError(f"{name}.npy is present in some set.* folders but missing here", path=str(set_dir))

    return System(
        path=str(folder),
        atype=atype.astype(np.int64),
        coord=np.concatenate(coords),
        box=np.concatenate(boxes) if pbc else None,
        global_label=np.concatenate(globals_) if globals_ else None,
        atomic_label=np.concatenate(atomics) if atomics else None,
        type_names=names,
    )


def load_systems(
    paths: list[str], base: Path, *, kind: str, type_map: list[str] | None, sel_type: list[int] | None,
    require_labels: bool = True,
) -> list[System]:
    """Resolve (relative to ``base``), expand folders of systems and load them all."""
    systems: list[System] = []
    for entry in paths:
        root = (base / entry).resolve() if not Path(entry).is_absolute() else Path(entry)
        if not root.exists():
            raise DataError("system path does not exist", path=str(root))
        found = find_systems(root)
        if not found:
            raise DataError("no DeePMD system (a folder with type.raw) found here", path=str(root))
        for folder in found:
            system = load_system(folder, kind=kind, type_map=type_map, sel_type=sel_type)
            if require_labels and system.global_label is None and system.atomic_label is None:
                raise DataError(
                    f"no {kind} labels: expected set.*/{GLOBAL_LABEL[kind]}.npy and/or "
                    f"set.*/{ATOMIC_LABEL[kind]}.npy",
                    path=str(folder),
                )
            systems.append(system)
    return systems
