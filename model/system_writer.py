"""Write a ``System`` as a DeePMD system: an npy folder, or a group of an HDF5 file
(``data.hdf5#/name``, the layout DeePMD-kit and dpdata's ``deepmd/hdf5`` read), with
optional tensor labels — e.g. a model's predictions, so that they feed DeePMD-kit tools
(``dp test``, training) directly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.errors import DataError
from model.keys import ATOMIC_LABEL, GLOBAL_LABEL, TENSOR_DIM
from model.system import System
from model.system_store import split_hdf5


def _arrays(system: System, kind: str | None, sel_type: list[int] | None) -> dict[str, np.ndarray]:
    nf, nat = system.nframes, system.natoms
    out = {"coord.npy": np.asarray(system.coord, dtype=np.float64).reshape(nf, nat * 3)}
    if system.box is not None and system.periodic:
        out["box.npy"] = np.asarray(system.box, dtype=np.float64).reshape(nf, 9)
    if kind is None:
        return out
    dim = TENSOR_DIM[kind]
    if system.global_label is not None:
        out[f"{GLOBAL_LABEL[kind]}.npy"] = np.asarray(system.global_label, dtype=np.float64).reshape(nf, dim)
    if system.atomic_label is not None:
        atomic = np.asarray(system.atomic_label, dtype=np.float64)  # [nf, nat, dim]
        if sel_type is not None:  # DeePMD-kit's layout: only the atoms of sel_type, in file order
            atomic = atomic[:, np.isin(system.atype, sel_type)]
        out[f"{ATOMIC_LABEL[kind]}.npy"] = atomic.reshape(nf, -1)
    return out


def write_system(dest: str | Path, system: System, *, kind: str | None = None,
                 sel_type: list[int] | None = None, set_size: int = 5000) -> str:
    """Write ``system`` (its labels as ``kind`` labels) to a folder or ``file.hdf5#/group``.
    Atomic labels are written for the atoms of ``sel_type`` only when it is given (the
    layout DeePMD-kit's tensor data uses), else for all atoms. Returns the system path."""
    if system.type_names is None:
        raise DataError("cannot write a system without type names (type_map.raw)", path=str(dest))
    arrays = _arrays(system, kind, sel_type)
    nf = system.nframes
    sets = [(f"set.{i:03d}", slice(start, start + set_size)) for i, start in enumerate(range(0, nf, set_size))]
    hdf5 = split_hdf5(dest)
    if hdf5 is None:
        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "type.raw").write_text("\n".join(map(str, system.atype.tolist())) + "\n")
        (folder / "type_map.raw").write_text("\n".join(system.type_names) + "\n")
        if not system.periodic:
            (folder / "nopbc").touch()
        for name, frames in sets:
            (folder / name).mkdir(exist_ok=True)
            for file, arr in arrays.items():
                np.save(folder / name / file, arr[frames])
        return str(folder)
    import h5py

    h5file, group = hdf5
    h5file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(h5file, "a") as f:
        if group in f:
            del f[group]
        g = f.create_group(group) if group else f
        g.create_dataset("type.raw", data=system.atype.astype(np.int64))
        g.create_dataset("type_map.raw", data=np.array(system.type_names, dtype="S"))
        if not system.periodic:
            g.create_dataset("nopbc", data=True)
        for name, frames in sets:
            s = g.create_group(name)
            for key, arr in arrays.items():
                s.create_dataset(key, data=arr[frames])
    return f"{h5file}#/{group}" if group else str(h5file)


def write_prediction_system(dest: str | Path, predictions: str | Path, coord: np.ndarray, atype: np.ndarray,
                            box: np.ndarray | None, *, type_map: list[str], kind: str,
                            sel_type: list[int]) -> str:
    """The frames with a model's predictions (the .npz of ``dptensor predict``) as their
    labels: ``dipole.npy``/``atomic_dipole.npy`` (or the polarizability pair), the atomic
    ones for the atoms of ``sel_type``, as DeePMD-kit's tensor data hold them."""
    from model.keys import PRED_ATOMIC, PRED_GLOBAL

    with np.load(predictions, allow_pickle=False) as npz:
        glob, atomic = npz[PRED_GLOBAL], npz[PRED_ATOMIC]
    system = System(path=str(dest), atype=np.asarray(atype, dtype=np.int64), coord=np.asarray(coord),
                    box=None if box is None else np.asarray(box), global_label=glob, atomic_label=atomic,
                    type_names=list(type_map))
    return write_system(dest, system, kind=kind, sel_type=sel_type)
