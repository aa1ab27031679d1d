"""Neighbour lists for periodic (triclinic) and non-periodic frames, batched over frames.

Selection follows DeePMD-kit: keep the Σsel nearest neighbours of any type, then per type
the first ``sel[t]`` of those (by distance); under PBC every periodic image inside rcut is
its own neighbour. The result is a flat list of kept (centre, neighbour) pairs — the
descriptor only ever touches real neighbours; padded slots are accounted for by count.

Two search strategies, same result:
* brute force over all atoms (and the few periodic images that can be in range), batched
  over frames — fastest for the usual few-hundred-atom frames;
* a cell list, frame by frame, for large frames (cost linear in the number of atoms).

Before either runs, ``model.search_budget.plan_search`` estimates the candidates per
centre from the cells' widths (O(1) per frame), picks the cheaper path and refuses a
search over the budget (thin periodic cells), so no input can make a search unbounded.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from model.search_budget import DEFAULT_MAX_CANDIDATES, SearchPlan, check_magnitude, plan_search

# Above this many atoms a frame is searched with the cell list (tests lower it).
CELL_LIST_MIN_ATOMS = 1500
# Cap on candidate pairs held at once (rows × candidates), bounds the memory of a search.
MAX_CANDIDATES = 8_000_000


class NeighborWarning(UserWarning):
    """Neighbours inside rcut were dropped because a type exceeded its ``sel``."""


@dataclass
class NeighborList:
    """Kept neighbour pairs of ``n_centres`` centres (flattened over frames: frame * nc + c)."""

    centre: Tensor  # [P] int64, flat centre index (pairs of one centre are contiguous)
    ntype: Tensor  # [P] int64, neighbour type
    vec: Tensor  # [P, 3] r_j - r_i (Å)
    counts: Tensor  # [n_centres, ntypes] int64, kept neighbours per type
    n_centres: int
    n_dropped: int  # neighbours inside rcut dropped by sel


def perpendicular_widths(box: Tensor) -> Tensor:
    """Distance between opposite faces of each cell: volume / |a_l × a_m|. [nf, 3, 3] → [nf, 3]"""
    a, b, c = box[:, 0], box[:, 1], box[:, 2]
    vol = torch.abs(torch.linalg.det(box))  # [nf]
    areas = torch.stack(
        [torch.linalg.cross(b, c).norm(dim=-1), torch.linalg.cross(c, a).norm(dim=-1),
         torch.linalg.cross(a, b).norm(dim=-1)], dim=-1)
    return vol[:, None] / areas


def _shift_grid(reach: list[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    ranges = [range(-m, m + 1) for m in reach]
    return torch.tensor(list(itertools.product(*ranges)), device=device, dtype=dtype)  # [S, 3]


def _type_counts(mask: Tensor, ctype: Tensor, ntypes: int) -> Tensor:
    """Per row, how many masked candidates of each type: [R, C] → [R, ntypes]."""
    if ctype.shape[0] == 1 or ctype.stride(0) == 0:  # one type row shared by all rows: a matmul
        onehot = torch.nn.functional.one_hot(ctype[0], ntypes).to(torch.float32)  # [C, nt]
        return (mask.to(torch.float32) @ onehot).round_().long()
    return torch.stack([(mask & (ctype == t)).sum(1) for t in range(ntypes)], dim=1)


def _select(
    vec: Tensor, ctype: Tensor, valid: Tensor, rcut: float, sel: list[int], r2: Tensor | None = None,
) -> tuple[Tensor, Tensor, int]:
    """Apply the cutoff and DeePMD-kit's two-stage sel rule to candidate pairs.

    vec [R, C, 3] (unused when ``r2`` [R, C] is given), ctype [R, C] (candidate types),
    valid [R, C] (real candidate, not self). Returns kept [R, C] bool, counts [R, ntypes]
    of kept pairs, and the number of dropped in-range pairs.
    """
    if r2 is None:
        r2 = vec[..., 0] * vec[..., 0] + vec[..., 1] * vec[..., 1] + vec[..., 2] * vec[..., 2]  # [R, C]
    in_range = valid & (r2 < rcut * rcut)
    counts_in = _type_counts(in_range, ctype, len(sel))  # [R, nt]
    sel_t = torch.tensor(sel, device=r2.device)
    nsel = sum(sel)
    if not bool(((counts_in > sel_t).any(-1) | (counts_in.sum(-1) > nsel)).any()):
        return in_range, counts_in, 0
    # Some centre overflows: rank candidates by distance, keep the Σsel nearest, then
    # per type the first sel[t] of those.
    r2_in = torch.where(in_range, r2, torch.full_like(r2, math.inf))
    order = torch.argsort(r2_in, dim=-1, stable=True)  # [R, C]
    sorted_type = ctype.gather(-1, order)
    stage1 = in_range.gather(-1, order) & (torch.arange(order.shape[1], device=r2.device) < nsel)
    keep_sorted = torch.zeros_like(stage1)
    for t, limit in enumerate(sel):
        of_type = stage1 & (sorted_type == t)
        keep_sorted |= of_type & (of_type.cumsum(1) <= limit)
    kept = torch.zeros_like(in_range).scatter(-1, order, keep_sorted)
    counts = _type_counts(kept, ctype, len(sel))
    dropped = int(in_range.sum()) - int(kept.sum())
    return kept, counts, dropped


def _brute_force(coord: Tensor, atype: Tensor, box: Tensor | None, centres: Tensor, rcut: float,
                 sel: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """All atoms × the periodic images that can lie within rcut. Returns kept, counts,
    vec [nf, 3, nc, C] (component planes per frame: reductions over a size-3 last axis are
    slow), ctype [R, C] (a broadcast view), dropped."""
    nf, nat, _ = coord.shape
    nc = centres.shape[0]
    if box is None:
        ct = coord.transpose(1, 2).contiguous()  # [nf, 3, nat]; strided rows make the broadcast pass ~1.6x slower
        planes = ct[:, :, None, :] - ct[:, :, centres, None]  # [nf, 3, nc, nat]
        cand_atom = torch.arange(nat, device=coord.device)
        self_cand = centres
    else:
        # Fractional differences wrapped to [-0.5, 0.5]; an image n can be in range only if
        # |df_k + n_k| · w_k < rcut, hence |n_k| <= floor(rcut / w_k + 0.5).
        frac = torch.linalg.solve(box.transpose(1, 2), coord.transpose(1, 2)).contiguous()  # [nf, 3, nat]
        dfrac = frac[:, :, None, :] - frac[:, :, centres, None]  # [nf, 3, nc, nat]
        dfrac -= torch.round(dfrac)
        # Cartesian component k = Σ_l df_l box[l, k]: one product, not nine scaled passes
        planes = torch.bmm(box.transpose(1, 2), dfrac.view(nf, 3, nc * nat)).view(nf, 3, nc, nat)
        reach = torch.floor(rcut / perpendicular_widths(box) + 0.5).amax(0).long().tolist()
        shifts = _shift_grid(reach, coord.device, coord.dtype)  # [S, 3]
        nshift = shifts.shape[0]
        if nshift > 1:
            shift_cart = (shifts @ box).transpose(1, 2)  # [nf, 3, S]
            planes = (planes[..., None] + shift_cart[:, :, None, None, :]).reshape(nf, 3, nc, nat * nshift)
        cand_atom = torch.arange(nat, device=coord.device).repeat_interleave(nshift)
        zero = int(((shifts == 0).all(-1)).nonzero()[0])
        self_cand = centres * nshift + zero
    ncand = planes.shape[3]
    valid = torch.ones(nc, ncand, dtype=torch.bool, device=coord.device)
    valid[torch.arange(nc, device=coord.device), self_cand] = False
    r2 = planes[:, 0] * planes[:, 0]  # [nf, nc, C]
    r2.addcmul_(planes[:, 1], planes[:, 1]).addcmul_(planes[:, 2], planes[:, 2])
    ctype = atype[cand_atom].expand(nf * nc, ncand)
    kept, counts, dropped = _select(planes, ctype, valid.repeat(nf, 1), rcut, sel, r2=r2.view(nf * nc, ncand))
    return kept, counts, planes, ctype, dropped


def _cell_list(coord: Tensor, atype: Tensor, box: Tensor | None, centres: Tensor, rcut: float,
               sel: list[int]) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """One frame (coord [nat, 3]) through a cell list. Cells are at least rcut wide, so a
    stencil of ±reach cells (with its periodic shift) covers every pair in range. Returns
    the same as _brute_force (vec [1, 3, nc, C])."""
    device, dtype = coord.device, coord.dtype
    nat = coord.shape[0]
    if box is not None:
        frac = torch.linalg.solve(box.T, coord.T).T  # [nat, 3]
        frac = frac - torch.floor(frac)
        widths = perpendicular_widths(box[None])[0]
        nbins = torch.clamp(torch.floor(widths / rcut), min=1).long()
        reach = torch.ceil(rcut / (widths / nbins)).long()
        pos = frac @ box  # wrapped Cartesian positions
        bin3 = torch.minimum((frac * nbins).long(), nbins - 1)
    else:
        lo = coord.amin(0)
        span = coord.amax(0) - lo
        nbins = torch.clamp(torch.floor(span / rcut), min=1).long()
        reach = torch.ones(3, dtype=torch.long, device=device)
        pos = coord
        bin3 = torch.minimum(((coord - lo) / span.clamp(min=1e-12) * nbins).long(), nbins - 1)
    nb = nbins.tolist()
    ncell = nb[0] * nb[1] * nb[2]
    cell = (bin3[:, 0] * nb[1] + bin3[:, 1]) * nb[2] + bin3[:, 2]  # [nat]
    order = torch.argsort(cell, stable=True)
    per_cell = torch.bincount(cell, minlength=ncell)
    start = torch.cumsum(per_cell, 0) - per_cell
    mmax = int(per_cell.max())
    table = torch.full((ncell, mmax), -1, dtype=torch.long, device=device)  # atoms of each cell
    rank = torch.arange(nat, device=device) - start[cell[order]]
    table[cell[order], rank] = order

    stencil = _shift_grid(reach.tolist(), device, torch.long)  # [S, 3] cell offsets
    nb_t = torch.tensor(nb, device=device)
    cbin = bin3[centres]  # [nc, 3]
    target = cbin[:, None, :] + stencil[None]  # [nc, S, 3] unwrapped cell coordinates
    if box is not None:
        image = torch.div(target, nb_t, rounding_mode="floor")  # periodic image of that cell
        target = target - image * nb_t
        inside = torch.ones(target.shape[:2], dtype=torch.bool, device=device)
        shift_cart = image.to(dtype) @ box  # [nc, S, 3]
    else:
        inside = ((target >= 0) & (target < nb_t)).all(-1)
        target = target.clamp(min=torch.zeros_like(nb_t), max=nb_t - 1)
        shift_cart = torch.zeros(target.shape, dtype=dtype, device=device)
    tcell = (target[..., 0] * nb[1] + target[..., 1]) * nb[2] + target[..., 2]  # [nc, S]
    cand = table[tcell]  # [nc, S, mmax]
    valid = (cand >= 0) & inside[..., None]
    is_self = (cand == centres[:, None, None]) & (stencil == 0).all(-1)[None, :, None]
    valid &= ~is_self
    # (wrapped cell, image) is a bijection of the unwrapped target cell: in small periodic
    # cells a stencil reaches the same cell several times, each time as a different image.
    nc = tcell.shape[0]
    cand_safe = cand.clamp(min=0)
    vec = (pos[cand_safe] + shift_cart[:, :, None, :] - pos[centres][:, None, None, :]).reshape(nc, -1, 3)
    ctype = atype[cand_safe].reshape(nc, -1)
    kept, counts, dropped = _select(vec, ctype, valid.reshape(nc, -1), rcut, sel)
    return kept, counts, vec.permute(2, 0, 1)[None], ctype, dropped


def _plan(coord: Tensor, box: Tensor | None, rcut: float, max_candidates: int) -> SearchPlan:
    """Bounds first (two reductions), then the path and its cost from the thinnest widths."""
    nat = coord.shape[1]
    if coord.numel():
        check_magnitude("coordinates", float(coord.abs().amax()))
    if box is None:
        return plan_search(nat, None, rcut, max_candidates, cell_list_min_atoms=CELL_LIST_MIN_ATOMS)
    check_magnitude("cell", float(box.abs().amax()))
    widths = perpendicular_widths(box).amin(0).double().cpu().numpy()  # [3]
    return plan_search(nat, widths, rcut, max_candidates, cell_list_min_atoms=CELL_LIST_MIN_ATOMS)


def build_neighbor_list(
    coord: Tensor, atype: Tensor, box: Tensor | None, centres: Tensor, rcut: float, sel: list[int],
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> NeighborList:
    """Neighbours of ``centres`` (atom indices, same for every frame) in frames of one system.

    coord [nf, nat, 3], atype [nat], box [nf, 3, 3] (rows = cell vectors) or None for
    non-periodic frames. Works on any device; no gradient flows through the search.
    ``max_candidates`` bounds the candidates compared with one centre (periodic images ×
    atoms); a thinner cell raises ``SearchTooCostly`` (a DataError) before any work.
    """
    with torch.no_grad():
        nf, nat, _ = coord.shape
        nc = int(centres.shape[0])
        plan = _plan(coord, box, rcut, max_candidates)
        pieces: list[tuple[Tensor, Tensor, Tensor, Tensor, int]] = []
        if plan.cell_list:
            chunk = max(1, MAX_CANDIDATES // max(27 * 64, plan.candidates))
            for f in range(nf):  # large frames: per-frame work dominates the loop overhead
                for c0 in range(0, nc, chunk):
                    pieces.append(_cell_list(coord[f], atype, None if box is None else box[f],
                                             centres[c0:c0 + chunk], rcut, sel))
        else:
            # whole frames per piece, sized as if every frame had at least 27 images
            images = math.prod(plan.images) if box is not None else 1
            # many images (thin cells) go in smaller pieces: memory, not speed, matters there
            cap = MAX_CANDIDATES if images <= 27 else MAX_CANDIDATES // 4
            per_frame = max(1, nc * nat * (max(27, images) if box is not None else 1))
            if per_frame <= cap:
                step = cap // per_frame
                for f0 in range(0, nf, step):
                    pieces.append(_brute_force(coord[f0:f0 + step], atype,
                                               None if box is None else box[f0:f0 + step], centres, rcut, sel))
            else:  # one frame is too much at once: its centres in pieces
                chunk = max(1, cap // plan.candidates)
                for f in range(nf):
                    for c0 in range(0, nc, chunk):
                        pieces.append(_brute_force(coord[f:f + 1], atype, None if box is None else box[f:f + 1],
                                                   centres[c0:c0 + chunk], rcut, sel))
        return _flatten(pieces, nf * nc, len(sel))


def _flatten(pieces: list[tuple[Tensor, Tensor, Tensor, Tensor, int]], n_centres: int,
             ntypes: int) -> NeighborList:
    centres_, ntypes_, vecs, counts_ = [], [], [], []
    offset, dropped = 0, 0
    for kept, counts, vec, ctype, drop in pieces:
        flat = kept.reshape(-1).nonzero().squeeze(1)  # row-major: pairs of a centre contiguous
        ncand = kept.shape[1]
        centres_.append(torch.div(flat, ncand, rounding_mode="floor") + offset)
        types = ctype[0] if ctype.stride(0) == 0 else None
        ntypes_.append(types.index_select(0, flat % ncand) if types is not None
                       else ctype.reshape(-1).index_select(0, flat))
        # vec [nf, 3, nc, C]: pair (f·nc + i)·C + j's component k sits at flat + (2f + k)·nc·C
        plane = vec.shape[2] * vec.shape[3]
        at = flat + torch.div(flat, plane, rounding_mode="floor") * (2 * plane)
        at = (at[:, None] + plane * torch.arange(3, device=at.device)).view(-1)
        vecs.append(vec.contiguous().view(-1).index_select(0, at).view(-1, 3))  # [P, 3]
        counts_.append(counts)
        offset += kept.shape[0]
        dropped += drop
    assert offset == n_centres
    counts = torch.cat(counts_)
    if dropped:
        warnings.warn(
            f"{dropped} neighbour(s) inside rcut were dropped because a type exceeded its sel; "
            "increase descriptor.sel", NeighborWarning, stacklevel=3)
    return NeighborList(
        centre=torch.cat(centres_), ntype=torch.cat(ntypes_), vec=torch.cat(vecs),
        counts=counts, n_centres=n_centres, n_dropped=dropped,
    )
