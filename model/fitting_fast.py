"""The inference kernels of the full polar head, beside the readable formula in
``model/fitting.py`` (α = grᵀ A gr with A symmetric, held packed). Selected explicitly by
``TensorFitting.forward(..., differentiable=False)``, under ``torch.no_grad``.

CPU (``blocked_polar``): the packed output columns are re-laid out once per weights
(``polar_blocks``) by b×b blocks of A: per block row I the strip right of the diagonal
(blocks J > I, whole, row-major) and the diagonal blocks as packed upper triangles
(halved), the bias as an extra row of the matrix. With U the upper part, α = S + Sᵀ,
S = grᵀ U gr, and a strip times the rows of gr below its block row is one batched product
reading both in place; no M1×M1 matrix is formed and there are no more matmul columns than
the packed layer (M1(M1+1)/2). The 100→5050 matmul itself dominates what is left.
On a GPU (``dense_polar``) A is unpacked once per large
chunk and needs two batched products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

BLOCK_TARGET = 20  # b: large enough for efficient batched products, small enough for few wasted columns
POLAR_CHUNK = 64  # rows per chunk: their [rows, M1(M1+1)/2] outputs stay in L2 (2.6 MB for M1 = 100)


@dataclass(frozen=True)
class BlockLayout:
    """Where the output columns of the CPU kernel sit in the packed upper triangle of a
    symmetric M1×M1 matrix (M1(M1+1)/2 columns, row-major). Depends on M1 and b only."""

    size: int  # b, a divisor of M1
    strips: Tensor  # [M1(M1−b)/2] packed column of each entry of the strips: strip I = rows of block I ×
    # columns of blocks J > I, row-major, strip after strip
    strip_starts: list[int]  # first column of strip I (nb entries: the last is the strips' end)
    diag: Tensor  # [nb·b(b+1)/2] packed column of each upper-triangle entry of the diagonal blocks
    diag_full: Tensor  # [nb·b²] position in ``diag`` of each entry of the whole diagonal blocks


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
    strips, starts = [], [0]
    for i in range(nb - 1):
        strips.append(packed[i * b:(i + 1) * b, (i + 1) * b:].reshape(-1))
        starts.append(starts[-1] + strips[-1].numel())
    iu = torch.triu_indices(b, b)  # [2, b(b+1)/2]
    offsets = torch.arange(nb)[:, None] * b
    diag = packed[offsets + iu[0], offsets + iu[1]].reshape(-1)
    pos = torch.zeros(b, b, dtype=torch.long)  # position of (i, j) in one block's packed triangle
    pos[iu[0], iu[1]] = torch.arange(iu.shape[1])
    pos[iu[1], iu[0]] = torch.arange(iu.shape[1])
    diag_full = (torch.arange(nb)[:, None] * iu.shape[1] + pos.view(1, -1)).reshape(-1)
    strip_cols = torch.cat(strips) if strips else torch.zeros(0, dtype=torch.long)
    return BlockLayout(size=b, strips=strip_cols.to(device), strip_starts=starts, diag=diag.to(device),
                       diag_full=diag_full.to(device))


@dataclass(frozen=True)
class PolarBlocks:
    """The packed output layer (matrix [H, M1(M1+1)/2], bias) in the block layout: one
    matrix [H + 1, M1(M1+1)/2], the strips' columns then the diagonal blocks' (halved), the
    bias as its last row (the kernel's input carries a column of ones: no pass that
    copies the bias into every output row)."""

    layout: BlockLayout
    weight: Tensor  # [H + 1, M1(M1+1)/2]


def polar_blocks(matrix: Tensor, bias: Tensor, layout: BlockLayout) -> PolarBlocks:
    """Re-lay the packed layer's columns out in blocks (once per weights, for inference)."""
    full = torch.cat([matrix, bias[None, :]])  # [H + 1, K]
    weight = torch.cat([full[:, layout.strips], 0.5 * full[:, layout.diag]], dim=1)
    return PolarBlocks(layout=layout, weight=weight.contiguous())


def blocked_polar(hidden: Tensor, blocks: PolarBlocks, scale: Tensor, g: Tensor, chunk: int = POLAR_CHUNK) -> Tensor:
    """hidden [n, H] → α [n, 3, 3] = scale · grᵀ A gr; g [n, M1, 3]; scale [] the type's
    scale (applied to α: 9 numbers, not M1²); rows in chunks so that a chunk's outputs
    stay in cache.

    A = U + Uᵀ with U the strictly-upper blocks plus the diagonal blocks' halved upper
    triangles, so α = S + Sᵀ with S = grᵀ U gr. The strip of block row I (columns of the
    blocks right of the diagonal) times the rows of gr below block I is one batched
    product reading both operands in place: y_I = U_I,>I gr_>I, then S = Σ_I gr_Iᵀ y_I."""
    lay = blocks.layout
    n, m1, b = g.shape[0], g.shape[1], lay.size
    nb = m1 // b
    diag0 = lay.strip_starts[-1]
    g = g.contiguous()  # gr arrives as a transposed view of T: one copy, then every block below is a view
    hidden = torch.cat([hidden, hidden.new_ones(n, 1)], dim=1)  # [n, H + 1]: the bias row's ones column
    outs = []
    for c0 in range(0, n, chunk):
        h, gc = hidden[c0:c0 + chunk], g[c0:c0 + chunk]  # [c, H + 1], [c, M1, 3]
        c = h.shape[0]
        a = torch.mm(h, blocks.weight)  # [c, K]
        # y_I = U_I,>I gr_>I per strip, each into its own contiguous buffer (a strided output
        # sends bmm to a per-item loop)
        y = gc.new_empty(nb - 1, c, b, 3)
        for i in range(nb - 1):
            strip = a[:, lay.strip_starts[i]:lay.strip_starts[i + 1]].view(c, b, m1 - (i + 1) * b)
            torch.bmm(strip, gc[:, (i + 1) * b:], out=y[i])
        half = a[:, diag0:]  # [c, nb·b(b+1)/2]
        a_diag = torch.gather(half, 1, lay.diag_full.expand(c, -1)).view(c * nb, b, b)  # A_II / 2
        y_d = torch.bmm(a_diag, gc.reshape(c * nb, b, 3)).view(c, m1, 3)  # + the strips: U gr
        y_d.view(c, nb, b, 3)[:, :nb - 1].add_(y.transpose(0, 1))
        s = torch.bmm(gc.transpose(1, 2), y_d)  # [c, 3, 3]
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
