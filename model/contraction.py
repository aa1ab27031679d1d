"""T = (Σ_pairs R̃ᵀ G + Σ_pad R̃padᵀ G(s_pad)) / Σsel from the embedding nets' outputs, as one
autograd node (the differentiable path of ``DescriptorSeA.forward``).

The pairs are sorted by (group, count, centre) (``EnvPairs``), so a segment of centres with
equal counts in a group is a contiguous run of net output rows: its part of T is one
batched matmul read straight from the nets' output, and its part of ∂L/∂G one batched
matmul written straight into the nets' output gradient. No zero-padded [nC·width, M1]
layout is built: on a CPU that layout's memory traffic (written, read, its gradient
written and gathered back, ~5 MB each for the polar example) cost more than the products.
Recorded op by op, autograd would add a pass per segment; here the backward is one batched
matmul per segment and one small gather.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Part:
    """One net call of one group: rows [0, n) are its pairs (or its distinct values), row n
    (when ``with_pad``) is the group's padded slot. Its pairs are [start, stop) of EnvPairs."""

    group: int
    n: int
    with_pad: bool
    start: int
    stop: int
    distinct: Tensor | None  # [stop − start] index of each pair's value among the n rows


@dataclass
class Run:
    """Centres [b0, b1) of ``Layout.block_centre`` that have ``count`` pairs each in one
    part, pairs [p0, p1) of that part (relative to its start)."""

    part: int
    count: int
    p0: int
    p1: int
    b0: int
    b1: int


@dataclass
class Layout:
    """The parameter-free structure of the contraction of one environment."""

    parts: list[Part]
    runs: list[Run]
    block_centre: Tensor  # [n_blocks] centre of each block of pairs
    n_centres: int
    pad_r: Tensor  # [nt², 4] normalised row of a padded slot, per group
    pad_weights: Tensor  # [nC, nt²] padded slots of each centre per group
    nnei: int  # Σsel


def _pairs(part: Part, emb: Tensor) -> Tensor:
    """G of the part's pairs, in pair order [stop − start, M1]."""
    return emb[:part.n] if part.distinct is None else emb[:part.n].index_select(0, part.distinct)


class SegmentContraction(torch.autograd.Function):
    """t [nC, 4, M1] from the normalised rows ``rn`` [P, 4] and the nets' outputs, one per
    ``layout.parts`` entry. ``rn`` may carry a graph (derivatives with respect to positions)."""

    @staticmethod
    def forward(ctx: Any, layout: Layout, rn: Tensor, *embs: Tensor) -> Tensor:
        m1 = embs[0].shape[1]
        nt2 = layout.pad_r.shape[0]
        pad_g = embs[0].new_zeros(nt2, m1)  # [nt², M1] G(s_pad), zero for groups without pads
        pairs = []
        for part, emb in zip(layout.parts, embs, strict=True):
            if part.with_pad:
                pad_g[part.group] = emb[part.n]
            pairs.append(_pairs(part, emb))
        blocks = rn.new_empty(layout.block_centre.shape[0], 4, m1)  # [n_blocks, 4, M1]
        for run in layout.runs:
            a, nb, c = layout.parts[run.part].start, run.b1 - run.b0, run.count
            r_t = rn[a + run.p0:a + run.p1].view(nb, c, 4).transpose(1, 2)  # [nb, 4, c]
            torch.bmm(r_t, pairs[run.part][run.p0:run.p1].view(nb, c, m1), out=blocks[run.b0:run.b1])
        t = rn.new_zeros(layout.n_centres, 4, m1).index_add_(0, layout.block_centre, blocks)
        pad_term = (layout.pad_r[:, :, None] * pad_g[:, None, :]).reshape(nt2, 4 * m1)  # [nt², 4·M1]
        t = (t + (layout.pad_weights @ pad_term).view(-1, 4, m1)) / layout.nnei
        ctx.layout = layout
        ctx.shapes = [e.shape for e in embs]
        ctx.save_for_backward(rn, *(pairs if ctx.needs_input_grad[1] else ()))
        return t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dt: Tensor) -> tuple[Tensor | None, ...]:
        layout: Layout = ctx.layout
        rn, *pairs = ctx.saved_tensors
        m1 = dt.shape[2]
        ds = dt / layout.nnei  # [nC, 4, M1]
        ds_blocks = ds.index_select(0, layout.block_centre)  # [n_blocks, 4, M1]
        # ∂L/∂G of the pairs: written into the nets' output gradients (pair order), or into a
        # buffer summed onto the distinct values
        d_embs = [dt.new_empty(shape) for shape in ctx.shapes]
        d_pairs = [d[:p.n] if p.distinct is None else dt.new_empty(p.stop - p.start, m1)
                   for p, d in zip(layout.parts, d_embs, strict=True)]
        d_rn = torch.zeros_like(rn) if ctx.needs_input_grad[1] else None
        for run in layout.runs:
            a, nb, c = layout.parts[run.part].start, run.b1 - run.b0, run.count
            r = rn[a + run.p0:a + run.p1].view(nb, c, 4)
            torch.bmm(r, ds_blocks[run.b0:run.b1], out=d_pairs[run.part][run.p0:run.p1].view(nb, c, m1))
            if d_rn is not None:  # ∂L/∂R̃ = G ∂L/∂Tᵀ
                g = pairs[run.part][run.p0:run.p1].view(nb, c, m1)
                torch.bmm(g, ds_blocks[run.b0:run.b1].transpose(1, 2), out=d_rn[a + run.p0:a + run.p1].view(nb, c, 4))
        nt2 = layout.pad_r.shape[0]
        # ∂L/∂G(s_pad)_g = Σ_c w_cg Σ_k R̃pad_gk ∂L/∂T_ck
        d_pad = (layout.pad_weights.t() @ ds.reshape(-1, 4 * m1)).view(nt2, 4, m1)
        d_pad = torch.bmm(layout.pad_r[:, None, :], d_pad)[:, 0]  # [nt², M1]
        for part, d_emb, d_p in zip(layout.parts, d_embs, d_pairs, strict=True):
            if part.distinct is not None:
                d_emb[:part.n].zero_().index_add_(0, part.distinct, d_p)
            if part.with_pad:
                d_emb[part.n] = d_pad[part.group]
        grads = [d if need else None for d, need in zip(d_embs, ctx.needs_input_grad[2:], strict=True)]
        return (None, d_rn, *grads)
