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
class PolarBlocks:
    """The packed output layer (matrix [H, M1(M1+1)/2], bias) in the block layout."""

    size: int  # b, a divisor of M1
    w_off: Tensor  # [H, n_off·b²] off-diagonal blocks I < J, each row-major
    b_off: Tensor  # [n_off·b²]
    w_diag: Tensor  # [H, nb·b(b+1)/2] diagonal blocks, packed upper triangles, halved
    b_diag: Tensor  # [nb·b(b+1)/2]
    diag_index: Tensor  # [nb·b²] column of w_diag of each entry of the whole diagonal blocks
    block_i: Tensor  # [n_off] block row of each off-diagonal block
    block_j: Tensor  # [n_off] block column


def block_size(m1: int, target: int = BLOCK_TARGET) -> int:
    """The divisor of M1 closest to ``target`` (the larger one on a tie)."""
    return min((d for d in range(1, m1 + 1) if m1 % d == 0), key=lambda d: (abs(d - target), -d))


def polar_blocks(matrix: Tensor, bias: Tensor, unpack: Tensor, size: int | None = None) -> PolarBlocks:
    """Re-lay the packed layer out in blocks. unpack [M1²]: packed column of each (m, n)."""
    m1 = round(unpack.numel() ** 0.5)
    b = size or block_size(m1)
    nb, dev = m1 // b, matrix.device
    full = unpack.view(m1, m1).to(dev)
    local = torch.arange(b, device=dev)
    bi, bj = torch.triu_indices(nb, nb, offset=1, device=dev)  # [n_off] each
    rows, cols = bi[:, None] * b + local, bj[:, None] * b + local  # [n_off, b]
    off = full[rows[:, :, None], cols[:, None, :]].reshape(-1)  # [n_off·b²] packed columns
    iu = torch.triu_indices(b, b, device=dev)  # [2, b(b+1)/2]
    starts = torch.arange(nb, device=dev)[:, None] * b
    diag = full[starts + iu[0], starts + iu[1]].reshape(-1)  # [nb·b(b+1)/2]
    pos = torch.zeros(b, b, dtype=torch.long, device=dev)  # packed position inside one block
    pos[iu[0], iu[1]] = torch.arange(iu.shape[1], device=dev)
    pos[iu[1], iu[0]] = torch.arange(iu.shape[1], device=dev)
    diag_index = (torch.arange(nb, device=dev)[:, None] * iu.shape[1] + pos.view(1, -1)).reshape(-1)
    return PolarBlocks(size=b, w_off=matrix[:, off].contiguous(), b_off=bias[off].contiguous(),
                       w_diag=(0.5 * matrix[:, diag]).contiguous(), b_diag=0.5 * bias[diag],
                       diag_index=diag_index, block_i=bi, block_j=bj)


def blocked_polar(hidden: Tensor, blocks: PolarBlocks, scale: Tensor, g: Tensor, chunk: int = 256) -> Tensor:
    """hidden [n, H] → α [n, 3, 3] = scale · grᵀ A gr; g [n, M1, 3]; scale [] the type's
    scale (applied to α: 9 numbers, not M1²); rows in chunks so that a chunk's outputs
    stay in cache."""
    m1, b = g.shape[1], blocks.size
    nb, n_off = m1 // b, blocks.block_i.numel()
    outs = []
    for c0 in range(0, hidden.shape[0], chunk):
        h, gc = hidden[c0:c0 + chunk], g[c0:c0 + chunk]
        c = h.shape[0]
        gb = gc.view(c, nb, b, 3)
        s = gc.new_zeros(c, 3, 3)
        if n_off:
            a_off = torch.addmm(blocks.b_off, h, blocks.w_off).view(c * n_off, b, b)  # A_IJ, I < J
            y = torch.bmm(a_off, gb.index_select(1, blocks.block_j).view(c * n_off, b, 3))  # A_IJ g_J
            g_i = gb.index_select(1, blocks.block_i).view(c, n_off * b, 3)
            s = torch.bmm(g_i.transpose(1, 2), y.view(c, n_off * b, 3))  # Σ g_Iᵀ A_IJ g_J
        half = torch.addmm(blocks.b_diag, h, blocks.w_diag)  # [c, nb·b(b+1)/2]
        a_diag = torch.gather(half, 1, blocks.diag_index.expand(c, -1)).view(c * nb, b, b)  # A_II / 2
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
