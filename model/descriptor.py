"""se_e2_a: smooth environment matrix, embedding nets, D = Tᵀ T<.

This module is the readable formula, and the differentiable path (training, derivatives
at inference); the inference kernels beside it (blocked embedding, contraction in cache)
are in ``model/descriptor_fast.py``, chosen by ``forward(env, differentiable=False)``.

Only real neighbours go through the embedding nets. Every padded slot of a (centre type,
neighbour type) block normalises to the same row, so the padded slots contribute one
precomputed term times their count — the same function as pushing all Σsel slots through
the nets, as DeePMD-kit does, at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor, nn

from model.contraction import Layout, Part, Run, SegmentContraction
from model.descriptor_fast import ZNet, blocked, blocked_descriptor
from model.neighbor import NeighborList
from model.nets import MLP, VersionKey, version_key

# nC·width·M1 (≈ the elements of the whole G) above which inference is blocked. On a CPU
# the whole G is worth holding only while it stays near a core's L2 (2 MiB = 262 144
# float64 here): above, blocked is faster (192-atom water, 8 frames: dipole 1.24x, polar
# 1.54x; bench/bench_contraction.py), below it is not (one dipole frame: 0.86x). On a GPU
# launches cost more than cache misses: dense up to a larger G.
DENSE_CONTRACTION_MAX = 500_000
DENSE_CONTRACTION_MAX_CUDA = 2_000_000


@dataclass
class Segment:
    """A run of pairs of one group whose centres all have ``count`` pairs in that group."""

    group: int
    count: int
    start: int  # pair range [start, stop)
    stop: int
    block_start: int  # range of these centres in EnvPairs.block_centre
    block_stop: int


@dataclass
class EnvPairs:
    """Environment rows of the kept neighbour pairs, sorted by (group, count, centre), so
    that the pairs of one centre are contiguous and centres with equal counts are adjacent:
    T = Σ R̃ᵀ G is then one batched matmul per segment, with no padding."""

    rij: Tensor  # [P, 4] sw(r)·(1/r, x/r², y/r², z/r²), not normalised
    group: Tensor  # [P] centre_type + ntypes · neighbour_type (DeePMD-kit's two-side net index)
    offsets: list[int]  # pairs of group g are [offsets[g], offsets[g + 1])
    segments: list[Segment]
    block_centre: Tensor  # [n_blocks] centre of each block of pairs
    centre: Tensor  # [P] centre of each pair
    centre_type: Tensor  # [nC]
    counts: Tensor  # [nC, ntypes] real neighbours per type
    # Groups whose centre and neighbour types are equal hold every pair twice (i→j and
    # j→i have the same r, hence the same embedding): group → (distinct r̃₀ values, index
    # of each pair's value).
    distinct: dict[int, tuple[Tensor, Tensor]]
    # derived constants of a descriptor (normalised rows, the contraction's layout), kept while a
    # training batch's environment is reused (``DescriptorSeA.constants``)
    memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_centres(self) -> int:
        return int(self.centre_type.shape[0])

    @property
    def width(self) -> int:
        """Most pairs of one centre."""
        return int(self.counts.sum(1).max()) if self.counts.numel() else 0

    @cached_property
    def present_types(self) -> list[int]:
        """The centre types that occur."""
        return [int(t) for t in torch.unique(self.centre_type).tolist()]


@dataclass
class EnvConstants:
    """Inputs of the contraction that depend on the environment and the statistics only."""

    rn: Tensor  # [P, 4] normalised environment rows
    pad_r: Tensor  # [nt², 4] the normalised row of a padded slot, per group
    mean: Tensor  # [nt², 4]
    std: Tensor  # [nt², 4]
    dense: DenseInputs | None = None  # for the contraction of the whole G (SegmentContraction)


@dataclass
class DenseInputs:
    inputs: list[Tensor]  # net input [n (+1), 1] of each ``layout.parts`` entry
    layout: Layout


def smooth_weight(r: Tensor, rcut_smth: float, rcut: float) -> Tensor:
    """sw(r) = u³(−6u² + 15u − 10) + 1 with u = (r − rcut_smth)/(rcut − rcut_smth) clamped to [0, 1]."""
    u = (r.clamp(rcut_smth, rcut) - rcut_smth) / (rcut - rcut_smth)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def pair_order(nl: NeighborList, centre_type: Tensor, nt: int, max_count: int) -> tuple[Tensor, Tensor]:
    """The stable sort of the pairs by run key (group, count): order [P] and the sorted keys
    [P], group = centre type + nt · neighbour type, key = group · max_count + count. The search
    emits the centres in order, each one's pairs together, and every pair of a (centre,
    neighbour type) cell has its cell's key; so only the nC·nt cells are sorted, and a pair
    keeps its rank in its cell — its rank among its type's pairs less those of earlier
    centres. The same order as argsort(key, stable=True) over the P pairs, in linear passes."""
    counts = nl.counts.view(-1)  # [nC·nt] pairs per cell
    types = torch.arange(nt, device=counts.device)
    cell_key = ((centre_type[:, None] + nt * types) * max_count + nl.counts).view(-1)  # [nC·nt]
    cell_order = torch.argsort(cell_key, stable=True)
    lengths = counts.index_select(0, cell_order)
    start = torch.empty_like(counts).index_copy_(0, cell_order, torch.cumsum(lengths, 0) - lengths)
    earlier = (torch.cumsum(nl.counts, 0) - nl.counts).view(-1)  # the cell type's pairs of earlier centres
    rank = torch.zeros_like(nl.ntype)  # [P] rank among the pairs of its type
    for t in range(nt):
        of_type = nl.ntype == t
        rank = torch.where(of_type, torch.cumsum(of_type, 0) - 1, rank)
    dest = (start - earlier).index_select(0, nl.centre * nt + nl.ntype) + rank
    order = torch.empty_like(dest).index_copy_(0, dest, torch.arange(dest.numel(), device=dest.device))
    return order, torch.repeat_interleave(cell_key.index_select(0, cell_order), lengths)


def environment(nl: NeighborList, centre_type: Tensor, ntypes: int, rcut_smth: float, rcut: float,
                dtype: torch.dtype, *, differentiable: bool = False) -> EnvPairs:
    """Parameter-free part of the descriptor (depends on coordinates only). ``differentiable``:
    the rows keep the graph of ``nl.vec`` (derivatives with respect to positions, e.g. Born
    charges) and no rows are shared between pairs (the sharing is not differentiable)."""
    with contextlib.nullcontext() if differentiable else torch.no_grad():
        nt = ntypes
        max_count = int(nl.counts.max()) + 1 if nl.counts.numel() else 1
        order, run = pair_order(nl, centre_type, nt, max_count)
        group = torch.div(run, max_count, rounding_mode="floor")  # [P] sorted
        centre = nl.centre.index_select(0, order)
        vec = nl.vec.index_select(0, order).to(dtype)  # [P, 3]
        r = vec.norm(dim=-1, keepdim=True)  # [P, 1]
        sw_r = smooth_weight(r, rcut_smth, rcut) / r
        rij = torch.cat([sw_r, vec * (sw_r / r)], dim=-1)  # [P, 4] sw·(1/r, x/r², y/r², z/r²)
        keys, lengths = torch.unique_consecutive(run, return_counts=True)
        segments, blocks = [], []
        pos = blk = 0
        for key, length in zip(keys.tolist(), lengths.tolist(), strict=True):
            cnt = key % max_count
            n_blocks = length // cnt
            blocks.append(centre[pos:pos + length:cnt])
            segments.append(Segment(group=key // max_count, count=cnt, start=pos, stop=pos + length,
                                    block_start=blk, block_stop=blk + n_blocks))
            pos += length
            blk += n_blocks
        offsets = [0]
        for n in torch.bincount(group, minlength=nt * nt).tolist():
            offsets.append(offsets[-1] + n)
        distinct = {}
        for g in range(0, nt * nt, nt + 1) if not differentiable else ():  # centre type = neighbour type
            a, b = offsets[g], offsets[g + 1]
            if b - a > 1:
                values, index = torch.unique(rij[a:b, 0], return_inverse=True)
                if values.numel() < 0.8 * (b - a):
                    distinct[g] = (values, index)
        return EnvPairs(
            rij=rij, group=group, offsets=offsets,
            segments=segments, block_centre=torch.cat(blocks) if blocks else centre, centre=centre,
            centre_type=centre_type, counts=nl.counts, distinct=distinct,
        )


def normalised_rows(env: EnvPairs, mean: Tensor, std: Tensor) -> Tensor:
    """(R − mean[g]) / std[g] [P, 4], group by group over the groups' contiguous pair ranges:
    gathering a [P, 4] mean and std by ``env.group`` cost several times the arithmetic."""
    ranges = [(g, a, b) for g, (a, b) in enumerate(itertools.pairwise(env.offsets)) if b > a]
    if env.rij.requires_grad:
        return torch.cat([(env.rij[a:b] - mean[g]) / std[g] for g, a, b in ranges]) if ranges else env.rij * 1.0
    rn = torch.empty_like(env.rij)
    for g, a, b in ranges:
        torch.sub(env.rij[a:b], mean[g], out=rn[a:b]).div_(std[g])
    return rn


class DescriptorSeA(nn.Module):
    davg: Tensor  # [nt, nt, 4] per (centre type, neighbour type)
    dstd: Tensor  # [nt, nt, 4]
    sel_t: Tensor  # [nt]

    def __init__(self, *, ntypes: int, sel: list[int], rcut: float, rcut_smth: float, neuron: list[int],
                 axis_neuron: int, resnet_dt: bool, type_one_side: bool, activation: str,
                 dtype: torch.dtype, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.ntypes, self.sel, self.rcut, self.rcut_smth = ntypes, list(sel), rcut, rcut_smth
        self.nnei = sum(sel)
        self.m1, self.m2 = neuron[-1], axis_neuron
        self.type_one_side = type_one_side
        self.activation = activation
        self.dtype = dtype
        nnet = ntypes if type_one_side else ntypes * ntypes
        self.embeddings = nn.ModuleList(
            MLP([1, *neuron], activation=activation, resnet_dt=resnet_dt, dtype=dtype, generator=generator)
            for _ in range(nnet)
        )
        # Statistics per (centre type, neighbour type): davg/dstd of the environment rows.
        self.register_buffer("davg", torch.zeros(ntypes, ntypes, 4, dtype=dtype))
        self.register_buffer("dstd", torch.ones(ntypes, ntypes, 4, dtype=dtype))
        self.register_buffer("sel_t", torch.tensor(sel, dtype=dtype), persistent=False)
        self.scratch = threading.local()  # per thread: predict runs chunks concurrently (descriptor_fast)
        # net index → (weights' versions, the net in z-space) for the blocked contraction
        self.znet_cache: dict[int, tuple[VersionKey, ZNet]] = {}

    @property
    def dim_out(self) -> int:
        return self.m1 * self.m2

    def net_index(self, g: int) -> int:
        """Group g = ti + nt·tj uses net tj (type_one_side) or net g (DeePMD-kit's index)."""
        return g // self.ntypes if self.type_one_side else g

    def net_of_group(self, g: int) -> MLP:
        return self.net(self.net_index(g))

    def _embed(self, consts: DenseInputs, differentiable: bool) -> list[Tensor]:
        """G of each part of the layout (a group's pairs or distinct values, then its pad
        row, in one net call: a separate call for the pads would add a dozen ops forward
        and back)."""
        out = []
        for part, s in zip(consts.layout.parts, consts.inputs, strict=True):
            net = self.net_of_group(part.group)
            out.append(net(s) if differentiable else blocked(net, s))  # [n (+1), M1]
        return out

    def constants(self, env: EnvPairs, *, dense: bool) -> EnvConstants:
        """The parameter-free inputs of the contraction, kept on ``env`` while the
        statistics are unchanged (a training batch reuses its environment for many steps);
        recomputed when the rows carry a graph (derivatives with respect to positions)."""
        key = version_key(self.davg, self.dstd)
        if key is None or env.rij.requires_grad:
            return self._constants(env, dense)
        hit = env.memo.get("sea")
        if hit is None or hit[0] != (key, dense):
            hit = env.memo["sea"] = ((key, dense), self._constants(env, dense))
        consts: EnvConstants = hit[1]
        return consts

    def _constants(self, env: EnvPairs, dense: bool) -> EnvConstants:
        nt, n_c = self.ntypes, env.n_centres
        mean, std = self.group_stats()  # [nt², 4]
        rn = normalised_rows(env, mean, std)  # [P, 4]
        pad_r = -mean / std  # [nt², 4] the normalised row of every padded slot of a group
        consts = EnvConstants(rn=rn, pad_r=pad_r, mean=mean, std=std)
        if not dense:
            return consts
        inputs: list[Tensor] = []
        parts: list[Part] = []
        part_of: dict[int, int] = {}
        with_pad = set(self.pad_groups(env))
        for g in range(nt * nt):  # net inputs per group: pairs (or distinct values), then the pad row
            a, b = env.offsets[g], env.offsets[g + 1]
            if b == a and g not in with_pad:
                continue
            if g in env.distinct:
                s = ((env.distinct[g][0] - mean[g, 0]) / std[g, 0])[:, None]
            else:
                s = rn[a:b, :1]
            n = s.shape[0]
            if g in with_pad:
                s = torch.cat([s, pad_r[g:g + 1, :1]])
            part_of[g] = len(parts)
            inputs.append(s)
            parts.append(Part(g, n, g in with_pad, a, b, env.distinct[g][1] if g in env.distinct else None))
        runs = [Run(part_of[sg.group], sg.count, sg.start - env.offsets[sg.group], sg.stop - env.offsets[sg.group],
                    sg.block_start, sg.block_stop) for sg in env.segments]
        layout = Layout(parts, runs, env.block_centre, n_c, pad_r, self.pad_weights(env), self.nnei)
        consts.dense = DenseInputs(inputs, layout)
        return consts

    def net(self, k: int) -> MLP:
        net = self.embeddings[k]
        assert isinstance(net, MLP)
        return net

    def pad_groups(self, env: EnvPairs) -> list[int]:
        """Groups whose padded slots are weighted: those of the centre types present."""
        nt = self.ntypes
        return sorted(ti + nt * tj for ti in env.present_types for tj in range(nt))

    def pad_weights(self, env: EnvPairs) -> Tensor:
        """[nC, nt²] padded slots of each centre per group (zero outside its centre type)."""
        nt = self.ntypes
        npad = self.sel_t - env.counts.to(self.sel_t.dtype)  # [nC, nt] padded slots per neighbour type
        cols = env.centre_type[:, None] + nt * torch.arange(nt, device=npad.device)[None, :]  # [nC, nt]
        return npad.new_zeros(env.n_centres, nt * nt).scatter_(1, cols, npad)

    def group_stats(self) -> tuple[Tensor, Tensor]:
        """davg/dstd indexed by group g = ti + nt·tj: [nt², 4]."""
        nt = self.ntypes
        return self.davg.transpose(0, 1).reshape(nt * nt, 4), self.dstd.transpose(0, 1).reshape(nt * nt, 4)

    def forward(self, env: EnvPairs, *, differentiable: bool = True) -> tuple[Tensor, Tensor]:
        """Returns D [nC, M1·M2] and the rotation matrix gr [nC, M1, 3]. ``differentiable``
        selects the autograd-ready kernels; False the inference ones (under torch.no_grad)."""
        m1, n_c = self.m1, env.n_centres

        # T = Σ_pairs R̃ᵀ G over real neighbours. Differentiable or small: all G at once, one
        # batched matmul per segment of equal counts, one autograd node. Large inference
        # batches: G block by block, contracted while the block is in cache — the full
        # [P, M1] G would be hundreds of MB of memory traffic.
        limit = DENSE_CONTRACTION_MAX_CUDA if env.rij.is_cuda else DENSE_CONTRACTION_MAX
        dense = n_c * env.width * m1 <= limit or differentiable
        c = self.constants(env, dense=dense)
        if not dense:
            return blocked_descriptor(self, env, c.rn, c.mean, c.std, c.pad_r)
        assert c.dense is not None
        embs = self._embed(c.dense, differentiable)  # per part [n (+1), M1]
        t = SegmentContraction.apply(c.dense.layout, c.rn, *embs)  # [nC, 4, M1]
        assert isinstance(t, Tensor)

        d = torch.bmm(t.transpose(1, 2), t[:, :, : self.m2]).reshape(n_c, m1 * self.m2)  # [nC, M1·M2]
        gr = t[:, 1:4, :].transpose(1, 2)  # [nC, M1, 3]
        return d, gr
