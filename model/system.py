"""The one container of frames: coordinates, cells and (optionally) labels of one system.

Every reader returns a ``System``: DeePMD npy folders and HDF5 groups (``model.data``),
extended XYZ, LAMMPS dumps and ASE ``.traj`` files (``model.trajectory``). Atom types are
indices into ``type_names`` (the system's own names), or into the model's type_map once a
reader has mapped them (``load_system(..., type_map=...)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from model.errors import DataError

PBC = tuple[bool, bool, bool]


@dataclass(frozen=True)
class System:
    path: str  # where it was read from (a folder, "file.hdf5#/group" or a trajectory file)
    atype: NDArray[np.int64]  # [nat] type index of each atom
    coord: NDArray[np.float64]  # [nf, nat, 3] Å
    box: NDArray[np.float64] | None  # [nf, 3, 3] Å, rows are cell vectors; None: no cell
    global_label: NDArray[np.float64] | None = None  # [nf, dim]
    atomic_label: NDArray[np.float64] | None = None  # [nf, nat, dim], zeros outside sel_type
    type_names: list[str] | None = None  # name of each type index, when known
    # periodic directions; default: all three when there is a cell, none without
    pbc: PBC = field(default=(True, True, True))
    # what the reader accepted but a person should know (e.g. a label file read under an
    # old name): returned with the frames, never raised as a Python warning
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.box is None and any(self.pbc):
            object.__setattr__(self, "pbc", (False, False, False))

    @property
    def nframes(self) -> int:
        return int(self.coord.shape[0])

    @property
    def natoms(self) -> int:
        return int(self.coord.shape[1])

    @property
    def periodic(self) -> bool:
        """Periodic in all three directions (the only periodic case the model handles)."""
        return self.box is not None and all(self.pbc)

    @property
    def model_box(self) -> NDArray[np.float64] | None:
        """The cells to give the model: None unless periodic in all three directions."""
        return self.box if self.periodic else None

    @property
    def symbols(self) -> list[str]:
        if self.type_names is None:
            raise DataError("the atom types have no names (add a type_map.raw)", path=self.path)
        return [self.type_names[t] for t in self.atype.tolist()]

    def volumes_a3(self) -> NDArray[np.float64] | None:
        """|det cell| per frame (Å³), or None without a cell."""
        return None if self.box is None else np.abs(np.linalg.det(self.box))


def check_finite(arr: NDArray[np.float64], what: str, path: str, first_frame: int = 0) -> None:
    """NaN/inf anywhere in ``arr`` [nf, ...] → DataError naming the first bad frame
    (numbered from ``first_frame``: the whole system's numbering, not the file's)."""
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        raise DataError(f"frame {first_frame + int(np.argmax(bad))}: NaN or inf in the {what}", path=path)
