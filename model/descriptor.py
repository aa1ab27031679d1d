"""se_e2_a: smooth environment matrix, embedding nets, D = Tᵀ T<.

Only real neighbours go through the embedding nets. Every padded slot of a (centre type,
neighbour type) block normalises to the same row, so the padded slots contribute one
precomputed term times their count — the same function as pushing all Σsel slots through
the nets, as DeePMD-kit does, at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.neighbor import NeighborList
from model.nets import MLP


@dataclass
class Segment:
    """A run of pairs of one group whose centres all have ``count`` pairs in that group."""

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
    centre_type: Tensor  # [nC]
    counts: Tensor  # [nC, ntypes] real neighbours per type

    @property
    def n_centres(self) -> int:
        return int(self.centre_type.shape[0])


def smooth_weight(r: Tensor, rcut_smth: float, rcut: float) -> Tensor:
    """sw(r) = u³(−6u² + 15u − 10) + 1 with u = (r − rcut_smth)/(rcut − rcut_smth) clamped to [0, 1]."""
    u = (r.clamp(rcut_smth, rcut) - rcut_smth) / (rcut - rcut_smth)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def environment(nl: NeighborList, centre_type: Tensor, ntypes: int, rcut_smth: float, rcut: float,
                dtype: torch.dtype) -> EnvPairs:
    """Parameter-free part of the descriptor (depends on coordinates only)."""
    with torch.no_grad():
        vec = nl.vec.to(dtype)  # [P, 3]
        r = vec.norm(dim=-1, keepdim=True)  # [P, 1]
        sw = smooth_weight(r, rcut_smth, rcut)
        rij = torch.cat([sw / r, sw * vec / (r * r)], dim=-1)  # [P, 4]
        group = centre_type[nl.centre] + ntypes * nl.ntype  # [P]
        count = nl.counts[nl.centre, nl.ntype]  # [P] pairs of this centre in this group
        max_count = int(nl.counts.max()) + 1 if nl.counts.numel() else 1
        run = group * max_count + count
        order = torch.argsort(run * max(nl.n_centres, 1) + nl.centre, stable=True)
        run, centre = run[order], nl.centre[order]
        keys, lengths = torch.unique_consecutive(run, return_counts=True)
        segments, blocks = [], []
        pos = blk = 0
        for key, length in zip(keys.tolist(), lengths.tolist(), strict=True):
            cnt = key % max_count
            n_blocks = length // cnt
            blocks.append(centre[pos:pos + length:cnt])
            segments.append(Segment(count=cnt, start=pos, stop=pos + length, block_start=blk,
                                    block_stop=blk + n_blocks))
            pos += length
            blk += n_blocks
        sizes = torch.bincount(group, minlength=ntypes * ntypes).tolist()
        offsets = [0]
        for n in sizes:
            offsets.append(offsets[-1] + n)
        return EnvPairs(
            rij=rij[order], group=group[order], offsets=offsets, segments=segments,
            block_centre=torch.cat(blocks) if blocks else centre, centre_type=centre_type, counts=nl.counts,
        )


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

    @property
    def dim_out(self) -> int:
        return self.m1 * self.m2

    def _net_ranges(self, offsets: list[int]) -> list[tuple[int, int, int]]:
        """(net index, start, stop) over the group-sorted pairs; one call per net."""
        nt = self.ntypes
        if self.type_one_side:  # groups tj·nt … tj·nt + nt − 1 share net tj and are contiguous
            return [(tj, offsets[tj * nt], offsets[tj * nt + nt]) for tj in range(nt)]
        return [(g, offsets[g], offsets[g + 1]) for g in range(nt * nt)]

    def _net(self, k: int) -> MLP:
        net = self.embeddings[k]
        assert isinstance(net, MLP)
        return net

    def _group_stats(self) -> tuple[Tensor, Tensor]:
        """davg/dstd indexed by group g = ti + nt·tj: [nt², 4]."""
        nt = self.ntypes
        return self.davg.transpose(0, 1).reshape(nt * nt, 4), self.dstd.transpose(0, 1).reshape(nt * nt, 4)

    def forward(self, env: EnvPairs) -> tuple[Tensor, Tensor]:
        """Returns D [nC, M1·M2] and the rotation matrix gr [nC, M1, 3]."""
        nt, m1, n_c = self.ntypes, self.m1, env.n_centres
        mean, std = self._group_stats()  # [nt², 4]
        rn = (env.rij - mean[env.group]) / std[env.group]  # [P, 4]
        s = rn[:, :1]  # [P, 1] embedding input
        parts = [self._net(k)(s[a:b]) for k, a, b in self._net_ranges(env.offsets) if b > a]
        g = torch.cat(parts) if parts else rn.new_zeros(0, m1)  # [P, M1]

        # T = Σ_pairs R̃ᵀ G over real neighbours: one batched matmul per segment of centres
        # with equal pair counts.
        t = rn.new_zeros(n_c, 4, m1)
        for seg in env.segments:
            n, c = seg.block_stop - seg.block_start, seg.count
            part = torch.bmm(rn[seg.start:seg.stop].view(n, c, 4).transpose(1, 2),
                             g[seg.start:seg.stop].view(n, c, m1))  # [n, 4, M1]
            t.index_add_(0, env.block_centre[seg.block_start:seg.block_stop], part)

        # Padded slots: all equal (−davg/dstd) within a group; add count × R̃padᵀ G(s_pad).
        pad_r = -mean / std  # [nt², 4]
        net_of_group = torch.arange(nt * nt) // nt if self.type_one_side else torch.arange(nt * nt)
        pad_g = torch.cat([self._net(int(k))(pad_r[gi:gi + 1, :1]) for gi, k in enumerate(net_of_group)])
        pad_term = (pad_r[:, :, None] * pad_g[:, None, :]).reshape(nt * nt, 4 * m1)  # [nt², 4·M1]
        npad = (self.sel_t - env.counts.to(rn.dtype))  # [nC, nt] padded slots per neighbour type
        cols = env.centre_type[:, None] + nt * torch.arange(nt, device=rn.device)[None, :]  # [nC, nt]
        weights = rn.new_zeros(n_c, nt * nt).scatter_(1, cols, npad)
        t = (t + (weights @ pad_term).view(n_c, 4, m1)) / self.nnei

        d = torch.bmm(t.transpose(1, 2), t[:, :, : self.m2]).reshape(n_c, m1 * self.m2)  # [nC, M1·M2]
        gr = t[:, 1:4, :].transpose(1, 2)  # [nC, M1, 3]
        return d, gr
