"""The inference kernel of the full polar head, beside the readable formula in
``model/fitting.py`` (α = grᵀ A gr with A symmetric, held packed). Selected explicitly by
``TensorFitting.forward(..., differentiable=False)``, under ``torch.no_grad``.

α = S + Sᵀ − grᵀ diag(U) gr with S = grᵀ (U gr) and U the packed upper triangle: row m of
U is contiguous in the packed layout, so U gr is M1 batched row products and no M1×M1
matrix is formed; rows go in chunks so the intermediates stay in cache. On a GPU that
design is launch-bound (M1 tiny products per chunk); ``dense_polar`` unpacks A once per
large chunk and needs two batched products.
"""

from __future__ import annotations

import torch
from torch import Tensor


def packed_polar(hidden: Tensor, matrix: Tensor, bias: Tensor, scale: Tensor, g: Tensor, row_offsets: list[int],
                 pack_diag: Tensor, chunk: int = 256) -> Tensor:
    """hidden [n, H] → α [n, 3, 3]. matrix [H, M1(M1+1)/2] and bias the packed output layer;
    scale [] the type's scale; g [n, M1, 3]; row_offsets: packed row m is
    [row_offsets[m], row_offsets[m + 1]); pack_diag [M1] packed position of (m, m)."""
    m1, offs = g.shape[1], row_offsets
    outs = []
    for c0 in range(0, hidden.shape[0], chunk):
        packed = torch.addmm(bias, hidden[c0:c0 + chunk], matrix) * scale  # [c, M1(M1+1)/2]
        gc = g[c0:c0 + chunk]  # [c, M1, 3]
        ugr = torch.cat([torch.bmm(packed[:, None, offs[m]:offs[m + 1]], gc[:, m:, :])
                         for m in range(m1)], dim=1)  # [c, M1, 3] = U gr
        s = torch.bmm(gc.transpose(1, 2), ugr)
        d = torch.bmm(gc.transpose(1, 2), gc * packed[:, pack_diag, None])
        outs.append(s + s.transpose(1, 2) - d)
    return torch.cat(outs) if outs else g.new_zeros(0, 3, 3)


DENSE_POLAR_ELEMENTS = 1 << 27  # rows × M1² per chunk: ≤ 1 GiB of float64 for the unpacked A


def dense_polar(hidden: Tensor, matrix: Tensor, bias: Tensor, scale: Tensor, g: Tensor, unpack: Tensor) -> Tensor:
    """The GPU form of ``packed_polar``: hidden [n, H] → α [n, 3, 3] = scale · grᵀ A gr with
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
