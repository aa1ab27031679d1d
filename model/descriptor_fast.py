"""The inference kernels of se_e2_a, beside the readable formula in ``model/descriptor.py``
(which is also the differentiable path). Selected explicitly by
``DescriptorSeA.forward(env, differentiable=False)``, always under ``torch.no_grad``: the
embedding nets run block by block so each layer's activations stay in cache, and
T = Σ R̃ᵀ G is contracted block by block, never holding the full [P, M1] G.

The blocked contraction runs tanh nets in *z-space* (``ZNet``): every layer's output is
y = α − 2z with α a constant vector, since tanh(a) = 1 − 2σ(−2a) and the residuals add
whole layers. The constants fold into the next layer's weights, so a layer is one matmul,
one in-place sigmoid and the in-place residual: no 1 − 2u pass. At the end
T = (Σ R̃)ᵀ α − 2 Σ R̃ᵀ z, with Σ R̃ one small sum per centre.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from model.nets import MLP, derived_from
from model.tanh_mlp import add_residual_

if TYPE_CHECKING:
    from model.descriptor import DescriptorSeA, EnvPairs, Segment

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


# σ(ONE) is exactly 1.0 in float64 (1 + e^−50 rounds to 1): the pre-activation of the
# ones column a layer hands to the next, whose matrix then carries its bias as a last row
ONE = 50.0


@dataclass(frozen=True)
class ZLayer:
    matrix: Tensor  # [in (+1), out (+1)] folded: z_prev (or the net's input) → −2·(pre-activation); with
    # ``bias`` None its last row is the bias (the input's ones column); a last column makes the ones column
    bias: Tensor | None  # [out (+1)], None when folded into the matrix
    idt: Tensor | None  # [out (+1)]
    residual: bool
    width: int  # outputs without the ones column
    width_in: int  # inputs without the ones column


@dataclass(frozen=True)
class ZNet:
    """A tanh MLP without output layer in z-space: output y = alpha − 2·z. Every layer but
    the last hands a ones column to the next, so a layer is one plain matmul (no pass
    that copies the bias into every output row), the in-place sigmoid and the residual."""

    layers: list[ZLayer]
    alpha: Tensor  # [M1]

    def forward_into(self, x: Tensor, out: Tensor) -> Tensor:
        """z of the rows x [rows, 1], written into ``out`` [rows, M1]."""
        z, prev = self.forward_split(x, out)
        if prev is not None:
            add_residual_(z, prev[:, :self.layers[-1].width_in])
        return z

    def forward_split(self, x: Tensor, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """z of the rows x [rows, 1] without the last layer's residual, written into ``out``
        [rows, M1], and that residual's input (the previous layer's z with its ones column;
        None without a residual): a contraction R̃ᵀ z can take the residual as R̃ᵀ z_prev on
        the narrower input instead of a pass over [rows, M1]."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            dest = out if i == last else None
            if layer.bias is None:
                a = torch.mm(x, layer.matrix, out=dest)
            elif x.shape[1] == 1:  # 1-wide input: an outer product, no GEMM
                a = torch.addcmul(layer.bias, x, layer.matrix, out=dest)
            else:
                a = torch.addmm(layer.bias, x, layer.matrix, out=dest)
            a = torch.sigmoid_(a)  # u = σ(−2·pre-activation)
            if layer.idt is not None:
                a.mul_(layer.idt)
            if i == last:
                return a, x if layer.residual else None
            if layer.residual:
                add_residual_(a[:, :layer.width], x[:, :layer.width_in])
            x = a
        raise ValueError("a z-space net has at least one layer")


def z_net(net: MLP, n_layers: int | None = None) -> ZNet:
    """Fold y_prev = α − 2 z_prev into each layer: −2(y_prev W + b) = z_prev (4W) − 2(b + αW);
    the layer's z = σ(·)[·idt] [+ z_prev | (z_prev, z_prev)], its α = [idt | 1] [+ α_prev].
    Then the ones columns: a layer after the first takes its bias as the matrix's last row;
    a layer before the last gets an output column of constant pre-activation ONE.
    ``n_layers``: the first n layers only (a fitting net's hidden layers)."""
    folded: list[tuple[Tensor, Tensor, Tensor | None, bool]] = []
    alpha = None
    for dense in itertools.islice(net.layers, n_layers):
        w, b = dense.matrix.detach(), dense.bias.detach()
        if alpha is None:  # the net's input itself
            mat, bias = -2.0 * w, -2.0 * b
        else:
            mat, bias = 4.0 * w, -2.0 * (b + alpha @ w)
        residual = dense.residual and alpha is not None
        idt = None if dense.idt is None else dense.idt.detach()
        own = torch.ones_like(b) if idt is None else idt
        if residual:
            assert alpha is not None
            own = own + (alpha if w.shape[1] == w.shape[0] else torch.cat([alpha, alpha]))
        folded.append((mat, bias, idt, residual))
        alpha = own
    assert alpha is not None
    layers = []
    for i, (mat, bias, idt, residual) in enumerate(folded):
        width_in, width = mat.shape
        if i > 0:  # the input's last column is ones: the bias is the matrix's last row
            mat = torch.cat([mat, bias[None, :]])
        if i < len(folded) - 1:  # hand a ones column to the next layer
            one_col = mat.new_zeros(mat.shape[0], 1)
            if i > 0:
                one_col[-1] = ONE
            mat = torch.cat([mat, one_col], dim=1)
            bias = torch.cat([bias, bias.new_full((1,), ONE)])
            idt = None if idt is None else torch.cat([idt, idt.new_ones(1)])
        layers.append(ZLayer(mat.contiguous(), None if i > 0 else bias.contiguous(), idt, residual, width, width_in))
    return ZNet(layers, alpha)


def z_net_of(desc: DescriptorSeA, k: int) -> ZNet:
    """Net k in z-space, rebuilt when its weights change (an optimizer step or a load bumps
    their version; a cast moves their storage)."""
    net = desc.net(k)
    return derived_from(desc.znet_cache, k, list(net.parameters()), lambda: z_net(net))


def segment_blocks(env: EnvPairs, block: int) -> Iterator[tuple[Segment, int, int, int, int]]:
    """(segment, b0, b1, p0, p1) for blocks of whole centres of one segment, about ``block``
    pairs each: centres [b0, b1) of ``env.block_centre``, pairs [p0, p1). Shared by the
    single model's and the committee's blocked contraction."""
    for seg in env.segments:
        c = seg.count
        step = max(1, block // c)  # centres per block
        for b0 in range(seg.block_start, seg.block_stop, step):
            b1 = min(b0 + step, seg.block_stop)
            p0 = seg.start + (b0 - seg.block_start) * c
            yield seg, b0, b1, p0, p0 + (b1 - b0) * c


def distinct_rows(env: EnvPairs, group: int, p0: int, p1: int) -> Tensor:
    """Row of the group's distinct-value table for each pair in [p0, p1)."""
    first = env.offsets[group]
    return env.distinct[group][1][p0 - first:p1 - first]


def blocked_descriptor(desc: DescriptorSeA, env: EnvPairs, rn: Tensor, mean: Tensor, std: Tensor,
                       pad_r: Tensor) -> tuple[Tensor, Tensor]:
    """D [nC, M1·M2] and gr [nC, M1, 3] of large inference batches: G in blocks of whole
    centres of one segment, contracted while in cache (tanh nets in z-space: Σ R̃ᵀ z), then
    every per-centre constant term — the nets' α, the padded slots — and the 1/Σsel added
    in one matrix product. T and D are written into per-thread scratch buffers (fresh ones
    of this size would be fresh memory, page-faulted on every call): D and gr are valid
    until this thread's next call."""
    m1, block, n_c, nt = desc.m1, block_rows(rn), env.n_centres, desc.ntypes
    use_z = desc.activation == "tanh"
    groups = [g for g in range(nt * nt) if env.offsets[g + 1] > env.offsets[g]]
    nets = {g: z_net_of(desc, desc.net_index(g)) if use_z else desc.net_of_group(g) for g in groups}
    scale = 1.0 / desc.nnei

    # T starts as every per-centre constant term, one matrix product written into a scratch
    # buffer (no zero fill): coefficients [nC, 4·groups + nt²] (Σ R̃ over each group's
    # pairs; padded slots per group) times rows [4·groups + nt², 4·M1] (α in component k's
    # columns; R̃pad ⊗ G(s_pad)).
    pad_g = pad_embeddings(desc, pad_r, env)  # [nt², M1]
    z_groups = groups if use_z else []
    coef = rn.new_zeros(n_c, 4 * len(z_groups) + nt * nt)
    rows = rn.new_zeros(4 * len(z_groups) + nt * nt, 4, m1)
    for i, g in enumerate(z_groups):
        net = nets[g]
        assert isinstance(net, ZNet)
        a, b = env.offsets[g], env.offsets[g + 1]
        coef[:, 4 * i:4 * i + 4].index_add_(0, env.centre[a:b], rn[a:b])
        rows[4 * i:4 * i + 4] = _alpha_rows(net.alpha)
    coef[:, 4 * len(z_groups):] = desc.pad_weights(env)
    rows[4 * len(z_groups):] = pad_r[:, :, None] * pad_g[:, None, :]
    # T = weight · (Σ R̃ᵀ z + constants / weight), z-space: G = α − 2z, weight = −2/Σsel (plain
    # nets: G, 1/Σsel); the weight applied once at the end (index_add_ with alpha is a slow path)
    weight = -2.0 * scale if use_z else scale
    t = scratch(desc, -3, 4 * n_c, rn).view(n_c, 4, m1)
    torch.mm(coef, rows.view(-1, 4 * m1).mul_(scale / weight), out=t.view(n_c, 4 * m1))

    # then Σ R̃ᵀ z (or Σ R̃ᵀ G) block by block, each block's G made and contracted in cache
    distinct_g = {}
    for g, (values, _) in env.distinct.items():
        table = scratch(desc, g, values.shape[0], rn)
        s = ((values - mean[g, 0]) / std[g, 0])[:, None]
        for c in range(0, s.shape[0], block):
            nets[g].forward_into(s[c:c + block], table[c:c + block])
        distinct_g[g] = table
    for seg, b0, b1, p0, p1 in segment_blocks(env, block):
        net, c = nets[seg.group], seg.count
        prev = None
        if seg.group in distinct_g:
            emb = distinct_g[seg.group].index_select(0, distinct_rows(env, seg.group, p0, p1))
        elif isinstance(net, ZNet):
            emb, prev = net.forward_split(rn[p0:p1, :1], scratch(desc, -1, p1 - p0, rn))
        else:
            emb = net(rn[p0:p1, :1], differentiable=False)
        r_t = rn[p0:p1].view(b1 - b0, c, 4).transpose(1, 2)  # [b, 4, c]
        part = torch.bmm(r_t, emb.view(b1 - b0, c, m1))  # [b, 4, M1]
        if prev is not None:  # the last layer's residual, contracted on its narrower input
            assert isinstance(net, ZNet)
            inner = torch.bmm(r_t, prev.view(b1 - b0, c, -1)).view((b1 - b0) * 4, -1)
            add_residual_(part.view(-1, m1), inner[:, :net.layers[-1].width_in])
        t.index_add_(0, env.block_centre[b0:b1], part)
    t.mul_(weight)

    d = torch.bmm(t.transpose(1, 2), t[:, :, :desc.m2], out=scratch(desc, -2, n_c * desc.m2, t).view(n_c, m1, desc.m2))
    return d.view(n_c, m1 * desc.m2), t[:, 1:4, :].transpose(1, 2)


def _alpha_rows(alpha: Tensor) -> Tensor:
    """[4, 4, M1]: row k holds α in component k's columns (Σ R̃_k α adds to T_k only)."""
    return torch.eye(4, dtype=alpha.dtype, device=alpha.device)[:, :, None] * alpha[None, None, :]


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
