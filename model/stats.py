"""Statistics from training data: environment davg/dstd, polar diagonal shift, auto sel."""

from __future__ import annotations

import math

import numpy as np
import torch

from model.data import System
from model.descriptor import environment
from model.neighbor import build_neighbor_list
from model.tensor_model import TensorModel


def stat_frames(system: System, nbatch: int, batch_size: int) -> np.ndarray:
    """Deterministic, evenly spread frame indices: ``nbatch`` batches worth of frames."""
    n = min(system.nframes, nbatch * batch_size)
    return np.unique(np.linspace(0, system.nframes - 1, n).round().astype(np.int64))


def _frames(system: System, idx: np.ndarray, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    coord = torch.as_tensor(system.coord[idx], dtype=dtype)
    box = None if system.box is None else torch.as_tensor(system.box[idx], dtype=dtype)
    return coord, box


def auto_sel(systems: list[System], ntypes: int, rcut: float, factor: float = 1.1) -> list[int]:
    """DeePMD-kit's sel "auto": max neighbours per type in the data × factor, rounded up to 4."""
    max_count = torch.zeros(ntypes, dtype=torch.long)
    huge = [10**6] * ntypes
    for system in systems:
        coord, box = _frames(system, np.arange(system.nframes), torch.float64)
        atype = torch.as_tensor(system.atype)
        nl = build_neighbor_list(coord, atype, box, torch.arange(system.natoms), rcut, huge)
        max_count = torch.maximum(max_count, nl.counts.amax(0))
    return [int(4 * math.ceil(int(c) * factor / 4)) for c in max_count]


def descriptor_stats(model: TensorModel, systems: list[System], frames: list[np.ndarray],
                     protect: float, set_davg_zero: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """davg/dstd [nt, nt, 4] per centre type over all Σsel slots, padding (zeros) included:
    davg = (mean r̃₀, 0, 0, 0), dstd = (std r̃₀, s, s, s) with s the pooled angular std."""
    d = model.descriptor
    nt, nnei = model.ntypes, d.nnei
    sums = torch.zeros(nt, 4, dtype=torch.float64)  # Σ r0, Σ r0², Σ a, Σ a²
    n_slots = torch.zeros(nt, dtype=torch.float64)
    for system, idx in zip(systems, frames, strict=True):
        coord, box = _frames(system, idx, torch.float64)
        atype = torch.as_tensor(system.atype)
        centres = model.centres(atype)
        if centres.index.numel() == 0:
            continue
        nl = build_neighbor_list(coord, atype, box, centres.index, model.rcut, model.sel)
        env = environment(nl, centres.types.repeat(len(idx)), nt, d.rcut_smth, d.rcut, torch.float64)
        ti = env.group % nt  # [P] centre type of each pair
        r0, ang = env.rij[:, 0], env.rij[:, 1:]
        rows = torch.stack([r0, r0 * r0, ang.sum(1), (ang * ang).sum(1)], dim=1)  # [P, 4]
        sums.index_add_(0, ti, rows)
        n_slots.index_add_(0, centres.types, torch.full((centres.types.numel(),), float(nnei * len(idx)),
                                                      dtype=torch.float64))
    davg = torch.zeros(nt, 4, dtype=torch.float64)
    dstd = torch.ones(nt, 4, dtype=torch.float64)
    seen = n_slots > 0
    n = n_slots[seen]
    mean_r = sums[seen, 0] / n
    std_r = (sums[seen, 1] / n - mean_r**2).clamp(min=0).sqrt()
    mean_a = sums[seen, 2] / (3 * n)
    std_a = (sums[seen, 3] / (3 * n) - mean_a**2).clamp(min=0).sqrt()
    if not set_davg_zero:
        davg[seen, 0] = mean_r
    dstd[seen, 0] = std_r.clamp(min=protect)
    dstd[seen, 1:] = std_a.clamp(min=protect)[:, None]
    # Statistics depend on the centre type only; repeat over neighbour-type blocks.
    return davg[:, None, :].expand(nt, nt, 4).clone(), dstd[:, None, :].expand(nt, nt, 4).clone()


def polar_diag_shift(systems: list[System], frames: list[np.ndarray], sel_type: list[int],
                     ntypes: int) -> np.ndarray:
    """Per type: mean of the diagonal of that type's mean atomic polarizability; types with
    no atomic label get a least-squares fit of the global labels' trace/3 to atom counts."""
    shift = np.zeros(ntypes)
    known: dict[int, float] = {}
    for t in sel_type:
        values = [s.atomic_label[idx][:, s.atype == t] for s, idx in zip(systems, frames, strict=True)
                  if s.atomic_label is not None and (s.atype == t).any()]
        if values:
            diag = np.concatenate([v.reshape(-1, 9) for v in values])[:, [0, 4, 8]]
            known[t] = float(diag.mean())
    unknown = [t for t in sel_type if t not in known]
    if unknown:
        rows, rhs = [], []
        for s, idx in zip(systems, frames, strict=True):
            if s.global_label is None:
                continue
            counts = np.array([(s.atype == t).sum() for t in sel_type], dtype=np.float64)
            target = s.global_label[idx][:, [0, 4, 8]].mean(1)  # [n] trace/3 per frame
            target = target - sum(counts[i] * known.get(t, 0.0) for i, t in enumerate(sel_type))
            rows.append(np.repeat(counts[[sel_type.index(t) for t in unknown]][None], len(idx), axis=0))
            rhs.append(target)
        if rows:
            sol = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0]
            known.update({t: float(v) for t, v in zip(unknown, sol, strict=True)})
    for t, v in known.items():
        shift[t] = v
    return shift
