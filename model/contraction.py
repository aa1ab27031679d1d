"""T = (Σ_pairs R̃ᵀ G + Σ_pad R̃padᵀ G(s_pad)) / Σsel from the embedding nets' outputs, as one
autograd node (the differentiable path of ``DescriptorSeA.forward``).

Each group's G rows are written into the zero-padded layout [nC·width, M1] and contracted
with one batched matmul. Recorded op by op, autograd adds a pass over that whole layout per
written group (the grad of the index_copy_ chain is cloned and zero-filled) and a zeroed
copy of the net output per slice (pairs, pad row), and computes ∂G with R̃ read transposed;
together these cost more than the contraction. Here the backward is one batched matmul
with R̃ [nC, width, 4] read contiguously and one gather per group straight into the
gradient of each net output, pad row included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Part:
    """One net call of one group: rows [0, n) are its pairs (or its distinct values), row n
    (when ``with_pad``) is the group's padded slot."""

    group: int
    n: int
    with_pad: bool
    rows: Tensor  # [pairs of the group] row of each pair in the padded layout
    distinct: Tensor | None  # [pairs of the group] index of each pair's value among the n rows


@dataclass
class Layout:
    """The parameter-free inputs of the contraction of one environment."""

    parts: list[Part]
    n_centres: int
    width: int
    gaps: Tensor  # rows of the padded layout that hold no pair (zero)
    pad_r: Tensor  # [nt², 4] normalised row of a padded slot, per group
    pad_weights: Tensor  # [nC, nt²] padded slots of each centre per group
    nnei: int  # Σsel


class DenseContraction(torch.autograd.Function):
    """t [nC, 4, M1] from ``rt`` = R̃ᵀ per centre [nC, 4, width] and the nets' outputs, one
    per ``layout.parts`` entry; ``r`` is the same R̃ as [nC, width, 4] (read by the backward).
    ``rt`` may carry a graph (derivatives with respect to positions)."""

    @staticmethod
    def forward(ctx: Any, layout: Layout, rt: Tensor, r: Tensor, *embs: Tensor) -> Tensor:
        n_c, width, m1 = layout.n_centres, layout.width, embs[0].shape[1]
        dense = embs[0].new_empty(n_c * width, m1)
        if layout.gaps.numel():
            dense.index_fill_(0, layout.gaps, 0.0)
        nt2 = layout.pad_r.shape[0]
        pad_g = embs[0].new_zeros(nt2, m1)  # [nt², M1] G(s_pad), zero for groups without pads
        for part, emb in zip(layout.parts, embs, strict=True):
            if part.with_pad:
                pad_g[part.group] = emb[part.n]
            if part.rows.numel():
                rows = emb[:part.n] if part.distinct is None else emb[:part.n].index_select(0, part.distinct)
                dense.index_copy_(0, part.rows, rows)
        t = torch.bmm(rt, dense.view(n_c, width, m1))  # [nC, 4, M1]
        pad_term = (layout.pad_r[:, :, None] * pad_g[:, None, :]).reshape(nt2, 4 * m1)  # [nt², 4·M1]
        t = (t + (layout.pad_weights @ pad_term).view(n_c, 4, m1)) / layout.nnei
        ctx.layout = layout
        ctx.shapes = [e.shape for e in embs]
        ctx.save_for_backward(r, dense if ctx.needs_input_grad[1] else None)
        return t

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dt: Tensor) -> tuple[Tensor | None, ...]:
        layout: Layout = ctx.layout
        r, dense = ctx.saved_tensors
        n_c, width, m1 = layout.n_centres, layout.width, dt.shape[2]
        ds = dt / layout.nnei  # [nC, 4, M1]
        d_rt = torch.bmm(ds, dense.view(n_c, width, m1).transpose(1, 2)) if ctx.needs_input_grad[1] else None
        d_dense = torch.bmm(r, ds).view(n_c * width, m1)  # ∂L/∂G of every slot of the layout
        nt2 = layout.pad_r.shape[0]
        # ∂L/∂G(s_pad)_g = Σ_c w_cg Σ_k R̃pad_gk ∂L/∂T_ck
        d_pad = (layout.pad_weights.t() @ ds.reshape(n_c, 4 * m1)).view(nt2, 4, m1)
        d_pad = torch.bmm(layout.pad_r[:, None, :], d_pad)[:, 0]  # [nt², M1]
        grads: list[Tensor | None] = []
        for part, shape, need in zip(layout.parts, ctx.shapes, ctx.needs_input_grad[3:], strict=True):
            if not need:
                grads.append(None)
                continue
            d_emb = dt.new_empty(shape)
            if part.distinct is not None:
                d_emb[:part.n].zero_().index_add_(0, part.distinct, d_dense.index_select(0, part.rows))
            elif part.n:
                torch.index_select(d_dense, 0, part.rows, out=d_emb[:part.n])
            if part.with_pad:
                d_emb[part.n] = d_pad[part.group]
            grads.append(d_emb)
        return (None, d_rt, None, *grads)
