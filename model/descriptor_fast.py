"""The inference kernels of se_e2_a, beside the readable formula in ``model/descriptor.py``
(which is also the differentiable path). Selected explicitly by
``DescriptorSeA.forward(env, differentiable=False)``, always under ``torch.no_grad``: the
embedding nets run block by block so each layer's activations stay in cache, and
T = Σ R̃ᵀ G is contracted block by block, never holding the full [P, M1] G.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from model.nets import MLP

if TYPE_CHECKING:
    from model.descriptor import DescriptorSeA, EnvPairs

EMBED_BLOCK = 2048
GPU_BLOCK = 1 << 20  # rows per block on a GPU: there, launches cost more than cache misses


def block_rows(x: Tensor) -> int:
    """Rows per block for tensors on ``x``'s device."""
    return GPU_BLOCK if x.is_cuda else EMBED_BLOCK


def blocked(net: MLP, s: Tensor) -> Tensor:
    """net(s) in blocks of ``block_rows`` rows: the nets are narrow, so on a CPU whole-array
    layers would be bound by memory traffic."""
    block = block_rows(s)
    if s.shape[0] <= block:
        return net(s, differentiable=False)
    return torch.cat([net(s[c:c + block], differentiable=False) for c in range(0, s.shape[0], block)])


def scratch(desc: DescriptorSeA, key: int, rows: int, like: Tensor) -> Tensor:
    """A reusable [rows, M1] buffer: fresh multi-MB allocations would page-fault on
    every inference call."""
    cache: dict[int, Tensor] = desc.scratch.__dict__.setdefault("buffers", {})
    buf = cache.get(key)
    if buf is None or buf.shape[0] < rows or buf.dtype != like.dtype or buf.device != like.device:
        buf = torch.empty(max(rows, 1024), desc.m1, dtype=like.dtype, device=like.device)
        cache[key] = buf
    return buf[:rows]


def contract_blocked(desc: DescriptorSeA, env: EnvPairs, rn: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Σ_pairs R̃ᵀ G per centre [nC, 4, M1], computing G in blocks of whole centres of one
    segment."""
    m1, block = desc.m1, block_rows(rn)
    t = rn.new_zeros(env.n_centres, 4, m1)
    distinct_g = {}
    for g, (values, _) in env.distinct.items():
        table = scratch(desc, g, values.shape[0], rn)
        s = ((values - mean[g, 0]) / std[g, 0])[:, None]
        for c in range(0, s.shape[0], block):
            desc.net_of_group(g).forward_into(s[c:c + block], table[c:c + block])
        distinct_g[g] = table
    for seg in env.segments:
        net, c = desc.net_of_group(seg.group), seg.count
        step = max(1, block // c)  # centres per block
        for b0 in range(seg.block_start, seg.block_stop, step):
            b1 = min(b0 + step, seg.block_stop)
            p0 = seg.start + (b0 - seg.block_start) * c
            p1 = p0 + (b1 - b0) * c
            if seg.group in distinct_g:
                first = env.offsets[seg.group]
                emb = distinct_g[seg.group].index_select(0, env.distinct[seg.group][1][p0 - first:p1 - first])
            else:
                emb = net(rn[p0:p1, :1], differentiable=False)
            part = torch.bmm(rn[p0:p1].view(b1 - b0, c, 4).transpose(1, 2), emb.view(b1 - b0, c, m1))
            t.index_add_(0, env.block_centre[b0:b1], part)
    return t


def pad_embeddings(desc: DescriptorSeA, pad_r: Tensor, env: EnvPairs) -> Tensor:
    """G(s_pad) [nt², M1] of the groups ``desc.pad_groups`` (other rows stay zero), one
    call per net."""
    by_net: dict[int, list[int]] = {}
    for g in desc.pad_groups(env):
        by_net.setdefault(desc.net_index(g), []).append(g)
    out = pad_r.new_zeros(desc.ntypes * desc.ntypes, desc.m1)
    for k, groups in by_net.items():
        rows = torch.tensor(groups, device=pad_r.device)
        out = out.index_copy(0, rows, desc.net(k)(pad_r.index_select(0, rows)[:, :1], differentiable=False))
    return out
