"""Dipole derivatives: Born effective charges / atomic polar tensors Z*ᵢ = ∂M/∂rᵢ by autograd.

Convention: ``Z[f, i, a, b] = ∂M_a / ∂r_{i,b}`` (row: dipole component, column: displacement),
in units of e (dipole e·Å per Å). Under a rotation R, Z*ᵢ → R Z*ᵢ Rᵀ.

The model's environment is built as for inference, then rebuilt *differentiably*: each
neighbour pair's vector r_j + L − r_i (L the periodic image's lattice vector, fixed) is
formed from the positions that require grad, so ∂M/∂r flows through the smooth
environment rows, the embedding nets and the fitting's rotation matrix. The neighbour
search itself is not differentiated (the list is piecewise constant in the positions; the
smooth cutoff makes its pairs enter and leave with zero weight).

Total dipoles (``dipole_mode``):
- ``global``: M = Σ_sel μ_i (the model's dipole). It depends on relative positions only, so
  Σᵢ Z*ᵢ = 0 — the acoustic sum rule of a neutral system — to rounding;
- ``wannier``: M = Σ_a Z_a r_a + q_W Σ_sel (r_i + Δ_i), so Z*ᵢ = (Z_i + q_W [i ∈ sel])·1 +
  q_W ∂(Σ Δ)/∂rᵢ and Σᵢ Z*ᵢ = (Σ Z_a + q_W n_sel)·1 = total charge × 1.

A committee (model.committee): every member's Z* by its own autograd pass; Z* is their mean
(the derivative of the committee's mean dipole, so the sum rule holds as for one model),
``z_std`` the population std over members per element (ddof = 0, as the other committee
outputs), ``member_z`` each member's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from model.descriptor import environment
from model.errors import ConfigError
from model.neighbor import NeighborList, build_neighbor_list
from model.tensor_model import TensorModel

if TYPE_CHECKING:
    from model.committee import Predictor

F64 = NDArray[np.float64]
FRAME_ATOMS = 256  # atoms per autograd chunk


@dataclass
class BornCharges:
    z: F64  # [nf, nat, 3, 3] ∂M_a/∂r_{i,b}, e
    dipole: F64  # [nf, 3] the total dipole that was differentiated, e·Å
    total_charge: float  # e: what Σᵢ Z*ᵢ must equal (× 1)
    dipole_mode: str
    member_z: F64 | None = None  # [K, nf, nat, 3, 3] a committee's members (z is their mean)

    @property
    def committee_size(self) -> int:
        return 1 if self.member_z is None else int(self.member_z.shape[0])

    @property
    def z_std(self) -> F64 | None:
        """[nf, nat, 3, 3] std over a committee's members (ddof = 0); None for one model."""
        return None if self.member_z is None else self.member_z.std(axis=0)

    @property
    def sum_rule(self) -> F64:
        """[nf, 3, 3] Σᵢ Z*ᵢ."""
        return self.z.sum(axis=1)

    @property
    def sum_rule_violation(self) -> F64:
        """[nf] max |Σᵢ Z*ᵢ − Q·1| (0 for a model that obeys the acoustic sum rule)."""
        return np.abs(self.sum_rule - self.total_charge * np.eye(3)).reshape(len(self.z), -1).max(axis=1)

    def report(self) -> dict[str, object]:
        out: dict[str, object] = {
            "convention": "Z[i, a, b] = ∂M_a/∂r_{i,b} (e)", "dipole_mode": self.dipole_mode,
            "total_charge": self.total_charge, "acoustic_sum_rule": "Σ_i Z*_i = total charge × 1",
            "sum_rule_max_violation": float(self.sum_rule_violation.max())}
        if self.z_std is not None:
            out.update(committee_size=self.committee_size, z_std_max=float(self.z_std.max()),
                       committee="Z* is the members' mean, z_std their std (ddof 0)")
        return out


def _pair_atoms(nl: NeighborList, coord: Tensor, box: Tensor | None, centre_atoms: Tensor
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(frame, centre atom, neighbour atom, lattice shift) of every pair: the neighbour is the
    atom whose position differs from centre + vec by a lattice vector (zero without a box)."""
    nc = centre_atoms.shape[0]
    frame = torch.div(nl.centre, nc, rounding_mode="floor")  # [P]
    i = centre_atoms.index_select(0, nl.centre % nc)  # [P]
    target = coord[frame, i] + nl.vec  # [P, 3] position of the neighbour's image
    diff = target[:, None, :] - coord[frame]  # [P, nat, 3] image − each atom
    if box is not None:
        b = box[frame]  # [P, 3, 3] rows are cell vectors
        frac = torch.linalg.solve(b.transpose(1, 2)[:, None], diff[..., None]).squeeze(-1)  # [P, nat, 3]
        shift_frac = torch.round(frac)
        miss = ((frac - shift_frac)[..., None, :] @ b[:, None]).squeeze(-2).norm(dim=-1)  # [P, nat]
    else:
        shift_frac = torch.zeros_like(diff)
        miss = diff.norm(dim=-1)
    j = miss.argmin(dim=1)  # [P]
    if not bool((miss.gather(1, j[:, None]) < 1e-6).all()):
        raise RuntimeError("could not match neighbour pairs to atoms (overlapping atoms?)")
    shift = diff[torch.arange(j.shape[0]), j] if box is not None else torch.zeros_like(target)
    return frame, i, j, shift


def model_dipole_jacobian(model: TensorModel, coord: F64, atype: Sequence[int], box: F64 | None = None
                          ) -> tuple[F64, F64]:
    """(global dipole [nf, 3], ∂M/∂r [nf, nat, 3, 3]) of a dipole model, by autograd."""
    if model.kind != "dipole":
        raise ConfigError(f"Born charges need a dipole model; this one predicts {model.kind}", path="model")
    device = next(model.parameters()).device
    dtype = model.dtype
    atype_t = torch.as_tensor(np.asarray(atype), dtype=torch.long, device=device)
    coord_t = torch.tensor(np.asarray(coord, dtype=np.float64), dtype=dtype, device=device)
    nf, nat, _ = coord_t.shape
    box_t = None if box is None else torch.tensor(np.asarray(box), dtype=dtype, device=device)
    centres = model.centres(atype_t)
    if centres.index.numel() == 0:
        return np.zeros((nf, 3)), np.zeros((nf, nat, 3, 3))
    with torch.enable_grad():  # explicitly: callers may be under inference/no_grad
        nl = build_neighbor_list(coord_t, atype_t, box_t, centres.index, model.rcut, model.sel,
                                 model.max_search_candidates)
        frame, i, j, shift = _pair_atoms(nl, coord_t, box_t, centres.index)
        x = coord_t.clone().requires_grad_(True)
        vec = x[frame, j] + shift - x[frame, i]  # [P, 3], differentiable
        nl_diff = NeighborList(centre=nl.centre, ntype=nl.ntype, vec=vec, counts=nl.counts,
                               n_centres=nl.n_centres, n_dropped=nl.n_dropped)
        d = model.descriptor
        env = environment(nl_diff, centres.types.repeat(nf), model.ntypes, d.rcut_smth, d.rcut, d.dtype,
                          differentiable=True)
        dipole = model.forward_env(env, centres, nf, nat, differentiable=True).global_  # [nf, 3], autograd kernels
        rows = [torch.autograd.grad(dipole[:, a].sum(), x, retain_graph=a < 2)[0] for a in range(3)]
    jac = torch.stack(rows, dim=2)  # [nf, nat, 3 (a), 3 (b)]
    return dipole.detach().double().cpu().numpy(), jac.double().cpu().numpy()


def _jacobian(model: TensorModel, coord: F64, atype: Sequence[int], box: F64 | None) -> tuple[F64, F64]:
    """model_dipole_jacobian over all frames, a few at a time."""
    step = max(1, FRAME_ATOMS // coord.shape[1])  # bounds the pair-matching memory (pairs × atoms)
    parts = [model_dipole_jacobian(model, coord[f:f + step], atype, None if box is None else box[f:f + step])
             for f in range(0, coord.shape[0], step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def born_charges(model: Predictor, coord: F64, atype: Sequence[int], box: F64 | None = None, *,
                 dipole_mode: str = "global", charges: Sequence[float] | None = None,
                 q_w: float | None = None) -> BornCharges:
    """Born charges of frames [nf, nat, 3] (Å) for the model's dipole (``global``) or the
    Wannier-centroid total dipole (``wannier``: per-atom ionic ``charges`` and ``q_w``). A
    committee gives its members' mean and keeps each member's (``member_z``, ``z_std``)."""
    from model.committee import Committee

    if dipole_mode not in ("global", "wannier"):
        raise ConfigError(f"must be 'global' or 'wannier', got {dipole_mode!r}", path="dipole_mode")
    if dipole_mode == "wannier" and (charges is None or q_w is None):
        raise ConfigError("the Wannier dipole needs the ionic charges and q_w", path="ionic_charges")
    coord = np.asarray(coord, dtype=np.float64).reshape(len(coord), -1, 3)
    members = [model.member(i) for i in range(model.size)] if isinstance(model, Committee) else [model]
    per = [_jacobian(m, coord, atype, box) for m in members]
    member_dipole = np.stack([p[0] for p in per])  # [K, nf, 3]
    member_jac = np.stack([p[1] for p in per])  # [K, nf, nat, 3, 3]
    keep = isinstance(model, Committee)  # a committee of one still reports its spread (zero)
    if dipole_mode == "global":
        return BornCharges(member_jac.mean(0), member_dipole.mean(0), 0.0, "global", member_jac if keep else None)
    assert charges is not None and q_w is not None
    z_ion = np.asarray(charges, dtype=np.float64)
    sel = np.isin(np.asarray(atype), model.sel_type)
    diag = z_ion + q_w * sel  # [nat]
    member_z = q_w * member_jac + diag[None, None, :, None, None] * np.eye(3)  # [K, nf, nat, 3, 3]
    dipole = np.einsum("i,fib->fb", diag, coord) + q_w * member_dipole.mean(0)
    return BornCharges(member_z.mean(0), dipole, float(diag.sum()), "wannier", member_z if keep else None)


def charges_per_atom(symbols: Sequence[str], by_element: Mapping[str, float]) -> list[float]:
    missing = sorted(set(symbols) - set(by_element))
    if missing:
        raise ConfigError(f"no charge for element(s) {missing}", path="ionic_charges")
    return [float(by_element[s]) for s in symbols]
