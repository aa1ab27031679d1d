"""Read MD trajectories (positions, cells, pbc, symbols) for prediction and spectra.

Formats: extended XYZ, LAMMPS text dump and ASE ``.traj`` through ASE's readers, and DeePMD
systems (npy folders, ``data.hdf5#/group``) through ``model.data``'s reader. Every format
gives the one frame container, ``model.system.System``. The time step is deliberately not read:
dumps carry step counters, not times, and a guessed Δt would silently rescale a spectrum.
Also the total-dipole helpers (unwrap_positions, wannier_total_dipole; re-exported by
model.spectra), which work on the positions read here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from model.errors import ConfigError, DataError
from model.system import PBC, System, check_finite
from model.system_store import split_hdf5

FORMATS = ("extxyz", "lammps-dump-text", "traj", "deepmd/npy", "deepmd/hdf5")
_ALIASES = {
    "xyz": "extxyz",
    "lammps": "lammps-dump-text",
    "lammps-dump": "lammps-dump-text",
    "lammpstrj": "lammps-dump-text",
    "ase": "traj",
    "npy": "deepmd/npy",
    "deepmd": "deepmd/npy",
    "hdf5": "deepmd/hdf5",
}
_DEEPMD = ("deepmd/npy", "deepmd/hdf5")
_SUFFIXES = {
    ".xyz": "extxyz",
    ".extxyz": "extxyz",
    ".traj": "traj",
    ".lammpstrj": "lammps-dump-text",
    ".dump": "lammps-dump-text",
}


def map_symbols_to_types(symbols: Sequence[str], type_map: Sequence[str]) -> NDArray[np.int64]:
    """Element symbols → indices into the model's type_map."""
    index = {name: i for i, name in enumerate(type_map)}
    unknown = sorted({s for s in symbols if s not in index})
    if unknown:
        raise DataError(f"element(s) {unknown} are not in the model's type_map {list(type_map)}")
    return np.array([index[s] for s in symbols], dtype=np.int64)


def detect_format(path: str | Path) -> str:
    if split_hdf5(path) is not None:
        return "deepmd/hdf5"
    p = Path(path)
    if p.is_dir():
        return "deepmd/npy"
    name = p.name.lower()
    for suffix in (p.suffix.lower(), Path(name.removesuffix(".gz")).suffix):
        if suffix in _SUFFIXES:
            return _SUFFIXES[suffix]
    if name.startswith("dump.") or name.endswith(".dump.gz"):
        return "lammps-dump-text"
    raise DataError(
        f"cannot tell the trajectory format from the name; pass format= one of {FORMATS}",
        path=str(path),
    )


def read_trajectory(
    path: str | Path,
    format: str | None = None,
    *,
    index: str | int | slice = ":",
    max_frames: int | None = None,
    lammps_type_symbols: Mapping[int, str] | None = None,
) -> System:
    """Read frames ``index`` (ASE slice syntax, e.g. ":" or "100::2"), at most max_frames."""
    src = str(path)
    hdf5 = split_hdf5(path)
    p = Path(path) if hdf5 is None else hdf5[0]
    if not p.exists():
        raise DataError("no such file or folder", path=src)
    if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 1):
        raise ConfigError(f"must be a positive integer, got {max_frames!r}", path="max_frames")
    if format is None:
        fmt = detect_format(path)
    else:
        fmt = _ALIASES.get(format.lower(), format.lower())
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {format!r}; known: {FORMATS}", path="format")
    if fmt not in _DEEPMD and p.is_file() and p.stat().st_size == 0:
        raise DataError("file is empty", path=src)
    if fmt in _DEEPMD:  # the system reader's errors name the file and whole-system frame numbers
        return _select(_read_deepmd(path), _as_slice(index), max_frames, index)
    try:
        symbols, coords, cells, pbc = _read_ase(p, fmt, index, max_frames, lammps_type_symbols)
        check_finite(coords, "coordinates", src)
        if cells is not None:
            check_finite(cells, "cell", src)
            singular = ~(np.abs(np.linalg.det(cells)) > 1e-8)
            if any(pbc) and singular.any():
                raise DataError(
                    f"frame {int(np.argmax(singular))}: periodic but the cell is singular",
                    path=src,
                )
    except DataError as exc:
        if index in (":", slice(None)) or "frame" not in exc.detail:
            raise
        # frame numbers count within the selection; say so rather than mislead
        msg = f"{exc.detail} (frames numbered from the first one selected by index={index!r})"
        raise DataError(msg, path=exc.path) from exc
    names = list(dict.fromkeys(symbols))
    atype = np.array([names.index(s) for s in symbols], dtype=np.int64)
    return System(path=src, atype=atype, coord=coords, box=cells, type_names=names, pbc=pbc)


def _read_deepmd(path: str | Path) -> System:
    from model.data import load_system, open_store

    with open_store(path) as store:  # before reading the frames: without names they are useless
        if not store.has("type_map.raw"):
            raise DataError("type_map.raw is missing (needed to name the elements)", path=store.path)
    return load_system(path)


def _select(system: System, sel: slice, max_frames: int | None, index: str | int | slice) -> System:
    coord = system.coord[sel][:max_frames]
    if coord.shape[0] == 0:
        raise DataError(f"no frames selected by index {index!r}", path=system.path)
    box = None if system.box is None else system.box[sel][:max_frames]
    return replace(system, coord=coord, box=box)


def _as_slice(index: str | int | slice) -> slice:
    """ASE-style index → slice (an int selects one frame)."""
    if isinstance(index, slice):
        return index
    if isinstance(index, int):
        return slice(index, None if index == -1 else index + 1)
    parts = index.split(":")
    if len(parts) == 1:
        try:
            return _as_slice(int(parts[0]))
        except ValueError:
            pass
    elif len(parts) <= 3:
        try:
            values = [int(v) if v.strip() else None for v in parts]
            return slice(*values)
        except ValueError:
            pass
    raise ConfigError(f"not an index or slice like '::2': {index!r}", path="index")


# ---- ASE formats ---------------------------------------------------------------------------


def _lammps_columns(path: Path) -> list[str]:
    """Column names of the first 'ITEM: ATOMS' header (without reading the whole dump)."""
    with path.open("r", errors="replace") as fh:
        for line in fh:
            if line.startswith("ITEM: ATOMS"):
                return line.split()[2:]
    raise DataError("no 'ITEM: ATOMS' line: not a LAMMPS text dump", path=str(path))


def _read_ase(
    path: Path,
    fmt: str,
    index: str | int | slice,
    max_frames: int | None,
    type_symbols: Mapping[int, str] | None,
) -> tuple[list[str], NDArray[np.float64], NDArray[np.float64] | None, PBC]:
    import ase.io  # only this reader needs ASE (optional dependency "traj")

    src = str(path)
    by_type = False
    if fmt == "lammps-dump-text":
        cols = _lammps_columns(path)
        by_type = "element" not in cols and "mass" not in cols
        if by_type and type_symbols is None:
            raise DataError(
                f"the dump has atom types but no element or mass column (columns: {cols}); "
                "pass lammps_type_symbols, e.g. {1: 'O', 2: 'H'}",
                path=src,
            )
    # Keep only positions and cells of each frame: whole Atoms objects cost ~15 kB a frame.
    positions: list[NDArray[np.float64]] = []
    cell_list: list[NDArray[np.float64]] = []
    ref: list[str] = []
    pbc0: tuple[bool, ...] = ()
    try:
        for i, atoms in enumerate(itertools.islice(ase.io.iread(src, index=index, format=fmt), max_frames)):
            if i == 0:
                ref = _frame_symbols(atoms, by_type, type_symbols, 0, src)
                pbc0 = tuple(bool(b) for b in atoms.pbc)
            else:
                _check_frame(atoms, i, ref, pbc0, by_type, type_symbols, src)
            positions.append(np.asarray(atoms.get_positions(), dtype=np.float64))
            cell_list.append(np.asarray(atoms.cell.array, dtype=np.float64))
    except DataError:
        raise
    except Exception as exc:  # ASE raises many types for malformed files
        raise DataError(f"cannot read as {fmt}: {type(exc).__name__}: {exc}", path=src) from exc
    if not positions:
        raise DataError(f"no frames (format {fmt}, index {index!r})", path=src)
    coords = np.stack(positions)
    del positions
    cells: NDArray[np.float64] | None = np.stack(cell_list)
    if cells is not None and not np.any(cells) and not any(pbc0):
        cells = None  # plain XYZ / molecules: no cell at all
    return ref, coords, cells, (pbc0[0], pbc0[1], pbc0[2])


def _check_frame(atoms: Any, i: int, ref: list[str], pbc0: tuple[bool, ...], by_type: bool,
                 type_symbols: Mapping[int, str] | None, src: str) -> None:
    """Frame i must have frame 0's atoms, in the same order, and its pbc."""
    if len(atoms) != len(ref):
        raise DataError(f"frame {i} has {len(atoms)} atoms, frame 0 has {len(ref)}", path=src)
    syms = _frame_symbols(atoms, by_type, type_symbols, i, src)
    if syms != ref:
        j = next(k for k, (a, b) in enumerate(zip(syms, ref, strict=True)) if a != b)
        raise DataError(
            f"frame {i}: atom {j} is {syms[j]}, in frame 0 it is {ref[j]} "
            "(atoms must keep their order)",
            path=src,
        )
    if tuple(bool(b) for b in atoms.pbc) != pbc0:
        raise DataError(f"frame {i}: pbc {atoms.pbc.tolist()} differs from frame 0", path=src)


def _frame_symbols(
    atoms: Any, by_type: bool, type_symbols: Mapping[int, str] | None, i: int, src: str
) -> list[str]:
    if not by_type:
        return list(atoms.get_chemical_symbols())
    assert type_symbols is not None
    types = atoms.get_atomic_numbers().tolist()  # ASE stores LAMMPS types as numbers
    missing = sorted(set(types) - {int(k) for k in type_symbols})
    if missing:
        raise DataError(
            f"frame {i}: LAMMPS type(s) {missing} missing from lammps_type_symbols "
            f"{dict(type_symbols)}",
            path=src,
        )
    lookup = {int(k): v for k, v in type_symbols.items()}
    return [lookup[t] for t in types]


# ---- total dipole from positions ------------------------------------------------------------


def unwrap_positions(
    coords: ArrayLike, cells: ArrayLike | None, pbc: bool | Sequence[bool] = True
) -> NDArray[np.float64]:
    """Undo jumps across periodic boundaries, frame to frame, in fractional coordinates.

    coords [nf, nat, 3] Å; cells [nf, 3, 3] or [3, 3] (rows = lattice vectors, triclinic ok).
    Assumes no atom moves more than half a cell between frames. Frame 0 is kept as is.
    """
    r = np.asarray(coords, dtype=np.float64)
    if r.ndim != 3 or r.shape[2] != 3:
        raise DataError(f"coords: shape {r.shape}, expected [nframes, natoms, 3]")
    periodic = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if cells is None or not periodic.any():
        return r.copy()
    h = np.broadcast_to(np.asarray(cells, dtype=np.float64), (r.shape[0], 3, 3))
    det = np.linalg.det(h)
    bad = ~(np.abs(det) > 1e-8)
    if bad.any():
        raise DataError(f"cells: singular or invalid cell in frame {int(np.argmax(bad))}")
    frac = np.einsum("fai,fij->faj", r, np.linalg.inv(h))  # r = s·h
    jump = np.zeros_like(frac)
    jump[1:] = np.round(np.diff(frac, axis=0))
    jump[..., ~periodic] = 0.0
    images = -np.cumsum(jump, axis=0)  # integer lattice shifts that undo every crossing
    return r + np.einsum("faj,fjk->fak", images, h)


def wannier_total_dipole(
    coords: ArrayLike,
    wannier_deltas: ArrayLike,
    atype: ArrayLike,
    ionic_charges: Mapping[int, float] | ArrayLike,
    q_w: float,
    sel_mask: ArrayLike,
    *,
    cells: ArrayLike | None = None,
    pbc: bool | Sequence[bool] = True,
) -> NDArray[np.float64]:
    """M = Σ_a Z_a r_a + q_W Σ_sel (r_i + Δ_i) in e·Å (water: Z_O=6, Z_H=1, q_W=-8).

    coords must be unwrapped (pass cells/pbc to unwrap here); for a neutral cell
    (Σ Z + q_W·n_sel = 0) M does not depend on the origin. wannier_deltas: [nf, n_sel, 3],
    [nf, n_sel·3] or [nf, nat, 3] (then only the selected rows are used).
    """
    r = unwrap_positions(coords, cells, pbc)
    nf, nat, _ = r.shape
    types = np.asarray(atype, dtype=np.int64).reshape(-1)
    sel = np.asarray(sel_mask, dtype=bool).reshape(-1)
    if types.shape[0] != nat or sel.shape[0] != nat:
        raise DataError(
            f"atype/sel_mask have {types.shape[0]}/{sel.shape[0]} entries for {nat} atoms"
        )
    if isinstance(ionic_charges, Mapping):
        missing = sorted({int(t) for t in types} - {int(k) for k in ionic_charges})
        if missing:
            raise DataError(f"ionic_charges: no charge for atom type(s) {missing}")
        z = np.array([ionic_charges[int(t)] for t in types], dtype=np.float64)
    else:
        by_type = np.asarray(ionic_charges, dtype=np.float64).reshape(-1)
        if types.max(initial=0) >= by_type.shape[0] or types.min(initial=0) < 0:
            raise DataError(
                f"ionic_charges: {by_type.shape[0]} charges but types {sorted(set(types.tolist()))}"
            )
        z = by_type[types]
    n_sel = int(sel.sum())
    d = np.asarray(wannier_deltas, dtype=np.float64)
    if d.shape == (nf, nat, 3) and n_sel != nat:
        d = d[:, sel]
    d = d.reshape(nf, -1) if d.ndim >= 2 and d.shape[0] == nf else d
    if d.shape != (nf, 3 * n_sel):
        raise DataError(
            f"wannier_deltas: shape {np.shape(wannier_deltas)}, expected [{nf}, {n_sel}, 3] "
            f"(frames, selected atoms, xyz) or [{nf}, {nat}, 3]"
        )
    ionic = np.einsum("fai,a->fi", r, z)
    wannier = q_w * (r[:, sel].sum(axis=1) + d.reshape(nf, n_sel, 3).sum(axis=1))
    return ionic + wannier
