"""The inference kernels of the full polar head, beside the readable formula in
``model/fitting.py`` (α = grᵀ A gr with A symmetric, held packed). Selected explicitly by
``TensorFitting.forward(..., differentiable=False)``, under ``torch.no_grad``.

CPU (``blocked_polar``): the packed output columns are re-laid out once per weights
(``polar_blocks``) as b×b blocks of A: the off-diagonal blocks I < J whole, the diagonal
blocks as their packed upper triangles (halved). A row's outputs are then a handful of
batched b×b products: α = S + Sᵀ, S = Σ_{I<J} g_Iᵀ A_IJ g_J + Σ_I g_Iᵀ (A_II / 2) g_I, with
no M1×M1 matrix formed and no more matmul columns than the packed layer (M1(M1+1)/2).
The former row-by-row form (M1 tiny products per chunk) spent more time in the contraction
than in the 100→5050 matmul itself. On a GPU (``dense_polar``) A is unpacked once per large
chunk and needs two batched products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK_TARGET = 20  # b: large enough for efficient batched products, small enough for few wasted columns


@dataclass(frozen=True)
class BlockLayout:
    """Where the b×b blocks of a symmetric M1×M1 matrix sit in its packed upper triangle
    (M1(M1+1)/2 columns, row-major). Depends on M1 and b only."""

    size: int  # b, a divisor of M1
    off: Tensor  # [n_off·b²] packed column of each entry of the off-diagonal blocks I < J (row-major)
    diag: Tensor  # [nb·b(b+1)/2] packed column of each upper-triangle entry of the diagonal blocks
    diag_full: Tensor  # [nb·b²] position in ``diag`` of each entry of the whole diagonal blocks
    block_i: Tensor  # [n_off] block row of each off-diagonal block
    block_j: Tensor  # [n_off] block column


def block_size(m1: int, target: int = BLOCK_TARGET) -> int:
    """The divisor of M1 closest to ``target`` (the larger one on a tie)."""
    return min((d for d in range(1, m1 + 1) if m1 % d == 0), key=lambda d: (abs(d - target), -d))


def block_layout(m1: int, size: int | None = None, device: torch.device | None = None) -> BlockLayout:
    b = size or block_size(m1)
    nb = m1 // b
    iu_full = torch.triu_indices(m1, m1)
    packed = torch.zeros(m1, m1, dtype=torch.long)  # packed column of (m, n), both orders
    packed[iu_full[0], iu_full[1]] = torch.arange(iu_full.shape[1])
    packed[iu_full[1], iu_full[0]] = torch.arange(iu_full.shape[1])
    local = torch.arange(b)
    bi, bj = torch.triu_indices(nb, nb, offset=1)  # [n_off] each
    rows, cols = bi[:, None] * b + local, bj[:, None] * b + local  # [n_off, b]
    off = packed[rows[:, :, None], cols[:, None, :]].reshape(-1)
    iu = torch.triu_indices(b, b)  # [2, b(b+1)/2]
    starts = torch.arange(nb)[:, None] * b
    diag = packed[starts + iu[0], starts + iu[1]].reshape(-1)
    pos = torch.zeros(b, b, dtype=torch.long)  # position of (i, j) in one block's packed triangle
    pos[iu[0], iu[1]] = torch.arange(iu.shape[1])
    pos[iu[1], iu[0]] = torch.arange(iu.shape[1])
    diag_full = (torch.arange(nb)[:, None] * iu.shape[1] + pos.view(1, -1)).reshape(-1)
    return BlockLayout(size=b, off=off.to(device), diag=diag.to(device), diag_full=diag_full.to(device),
                       block_i=bi.to(device), block_j=bj.to(device))


@dataclass(frozen=True)
class PolarBlocks:
    """The packed output layer (matrix [H, M1(M1+1)/2], bias) in the block layout."""

    layout: BlockLayout
    w_off: Tensor  # [H, n_off·b²] off-diagonal blocks I < J, each row-major
    b_off: Tensor  # [n_off·b²]
    w_diag: Tensor  # [H, nb·b(b+1)/2] diagonal blocks, packed upper triangles, halved
    b_diag: Tensor  # [nb·b(b+1)/2]


def polar_blocks(matrix: Tensor, bias: Tensor, layout: BlockLayout) -> PolarBlocks:
    """Re-lay the packed layer's columns out in blocks (once per weights, for inference)."""
    return PolarBlocks(layout=layout, w_off=matrix[:, layout.off].contiguous(), b_off=bias[layout.off].contiguous(),
                       w_diag=(0.5 * matrix[:, layout.diag]).contiguous(), b_diag=0.5 * bias[layout.diag])


def blocked_polar(hidden: Tensor, blocks: PolarBlocks, scale: Tensor, g: Tensor, chunk: int = 256) -> Tensor:
    """hidden [n, H] → α [n, 3, 3] = scale · grᵀ A gr; g [n, M1, 3]; scale [] the type's
    scale (applied to α: 9 numbers, not M1²); rows in chunks so that a chunk's outputs
    stay in cache."""
    lay = blocks.layout
    m1, b = g.shape[1], lay.size
    nb, n_off = m1 // b, lay.block_i.numel()
    outs = []
    for c0 in range(0, hidden.shape[0], chunk):
        h, gc = hidden[c0:c0 + chunk], g[c0:c0 + chunk]
        c = h.shape[0]
        gb = gc.view(c, nb, b, 3)
        s = gc.new_zeros(c, 3, 3)
        if n_off:
            a_off = torch.addmm(blocks.b_off, h, blocks.w_off).view(c * n_off, b, b)  # A_IJ, I < J
            y = torch.bmm(a_off, gb.index_select(1, lay.block_j).view(c * n_off, b, 3))  # A_IJ g_J
            g_i = gb.index_select(1, lay.block_i).view(c, n_off * b, 3)
            s = torch.bmm(g_i.transpose(1, 2), y.view(c, n_off * b, 3))  # Σ g_Iᵀ A_IJ g_J
        half = torch.addmm(blocks.b_diag, h, blocks.w_diag)  # [c, nb·b(b+1)/2]
        a_diag = torch.gather(half, 1, lay.diag_full.expand(c, -1)).view(c * nb, b, b)  # A_II / 2
        y_d = torch.bmm(a_diag, gc.reshape(c * nb, b, 3)).view(c, m1, 3)
        s = torch.baddbmm(s, gc.transpose(1, 2), y_d)
        outs.append((s + s.transpose(1, 2)) * scale)
    return torch.cat(outs) if outs else g.new_zeros(0, 3, 3)


DENSE_POLAR_ELEMENTS = 1 << 27  # rows × M1² per chunk: ≤ 1 GiB of float64 for the unpacked A


def dense_polar(hidden: Tensor, matrix: Tensor, bias: Tensor, scale: Tensor, g: Tensor, unpack: Tensor) -> Tensor:
    """The GPU form of ``blocked_polar``: hidden [n, H] → α [n, 3, 3] = scale · grᵀ A gr with
    A [n, M1, M1] gathered from the packed output (unpack [M1²], packed column of (m, n))."""
    m1 = g.shape[1]
    chunk = max(1, DENSE_POLAR_ELEMENTS // (m1 * m1))
    outs = []
    for c0 in range(0, hidden.shape[0], chunk):
        packed = torch.addmm(bias, hidden[c0:c0 + chunk], matrix)  # [c, M1(M1+1)/2]
        a = packed.index_select(1, unpack).view(-1, m1, m1)  # [c, M1, M1] symmetric
        gc = g[c0:c0 + chunk]  # [c, M1, 3]
        outs.append(torch.bmm(gc.transpose(1, 2), torch.bmm(a, gc)) * scale)  # [c, 3, 3]
    return torch.cat(outs) if outs else g.new_zeros(0, 3, 3)
