"""Names shared across the library: label files, tensor kinds, array keys of result files.

Every array key is listed with its shape; ``nf`` frames, ``nat`` atoms, ``dim`` = 3 (dipole)
or 9 (polarizability, row-major xx xy xz yx yy yz zx zy zz).
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["dipole", "polar"]

TENSOR_DIM: dict[str, int] = {"dipole": 3, "polar": 9}

# DeePMD-kit label file stems (set.*/<stem>.npy) per kind.
GLOBAL_LABEL: dict[str, str] = {"dipole": "dipole", "polar": "polarizability"}  # [nf, dim]
ATOMIC_LABEL: dict[str, str] = {  # [nf, nsel*dim] or [nf, nat*dim]
    "dipole": "atomic_dipole",
    "polar": "atomic_polarizability",
}
# A frequent misnaming; accepted with a warning when the proper file is absent.
ATOMIC_LABEL_ALIAS: dict[str, str] = {"dipole": "atom_dipole", "polar": "atom_polarizability"}

# Keys of the predictions file written by ``dptensor predict`` (numpy .npz, float64).
PRED_GLOBAL = "global"  # [nf, dim]  sum over atoms
PRED_ATOMIC = "atomic"  # [nf, nat, dim]  zeros for atoms outside sel_type
PRED_ATYPE = "atype"  # [nat]  model type index of each atom
PRED_TYPE_MAP = "type_map"  # [ntypes]  str
PRED_KIND = "kind"  # []  "dipole" | "polar"
# Committee predictions add (``global`` / ``atomic`` are then the members' mean):
PRED_GLOBAL_STD = "global_std"  # [nf, dim]  std over members, per component
PRED_ATOMIC_STD = "atomic_std"  # [nf, nat, dim]
PRED_DEVI_GLOBAL = "devi_global"  # [nf]  ‖global_std‖
PRED_DEVI_ATOMIC_MAX = "devi_atomic_max"  # [nf]  max over atoms of ‖atomic_std‖
PRED_MEMBER_GLOBAL = "member_global"  # [K, nf, dim]  each member's global tensor
PRED_COMMITTEE_SIZE = "committee_size"  # []  K

# Most members a committee may have (here, torch-free, so the web api validates with it).
MAX_COMMITTEE_MEMBERS = 64


def tensor_dim(kind: str) -> int:
    return TENSOR_DIM[kind]
