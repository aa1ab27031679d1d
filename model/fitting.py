"""Dipole and polarizability fitting heads: one MLP per selected atom type.

dipole: μ = F(D) · gr                        (1×M1 · M1×3)
polar:  α = grᵀ · sym(F(D)·scale) · gr + shift·I   (fit_diag: F(D) is the diagonal)

Full (not fit_diag) polar heads: only the symmetric part of the M1×M1 output reaches α,
so the output layer's parameters *are* that symmetric part, packed as the M1(M1+1)/2
upper-triangle columns (row-major). DeePMD-kit's [H, M1²] weights are symmetrised and
packed on load — the same function — and training the packed matrix with Adam follows
the same dynamics for everything that reaches the output (Adam is scale-invariant; the
antisymmetric part never moves). It halves the largest matmul and its optimizer state.

This module is the readable formula and the differentiable path; the inference kernel of
the full polar head is ``model/fitting_fast.py``, chosen by ``forward(..., differentiable=False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model.descriptor_fast import ZNet, z_net
from model.fitting_fast import (
    POLAR_CHUNK,
    BlockLayout,
    PolarBlocks,
    block_layout,
    blocked_polar,
    dense_polar,
    polar_blocks,
)
from model.nets import MLP, VersionKey, derived_from


def triu_pack_indices(m1: int) -> tuple[Tensor, Tensor]:
    """For packed column p ↔ (m, n), m ≤ n: the flat indices m·M1+n and n·M1+m."""
    iu = torch.triu_indices(m1, m1)
    return iu[0] * m1 + iu[1], iu[1] * m1 + iu[0]


def pack_symmetric(full: Tensor, m1: int) -> Tensor:
    """[..., M1²] → [..., M1(M1+1)/2]: the upper triangle of the symmetrised matrix."""
    mn, nm = triu_pack_indices(m1)
    return 0.5 * (full[..., mn] + full[..., nm])


class SymmetricContraction(torch.autograd.Function):
    """α = grᵀ A gr for the symmetric A held packed [n, M1(M1+1)/2], with a hand-written
    backward: autograd through the unpacking gather and two small-n batched matmuls
    materialises several [n, M1, M1] tensors per step; with A symmetric, ∂L/∂A = gr S grᵀ
    (S the symmetrised upstream gradient) is the only one needed."""

    @staticmethod
    def forward(ctx: Any, packed: Tensor, g: Tensor, scale: Tensor, unpack: Tensor, upper: Tensor,
                weight: Tensor) -> Tensor:
        """scale · grᵀ A gr. packed [n, K], g [n, M1, 3], scale [] (a constant); unpack [M1²]
        packed column of each (m, n); upper [K] flat index m·M1+n of each packed column;
        weight [K] 2 off the diagonal, 1 on it."""
        n, m1 = g.shape[0], g.shape[1]
        # gather with an expanded index: index_select along dim 1 is ~7× slower on CPU
        a = torch.gather(packed, 1, unpack.expand(n, -1)).view(n, m1, m1)  # [n, M1, M1] symmetric
        g_t = g.transpose(1, 2).contiguous()  # [n, 3, M1]
        y = torch.bmm(g_t, a)  # [n, 3, M1] = grᵀ A = (A gr)ᵀ
        ctx.save_for_backward(g, g_t, y, scale, upper, weight)
        return torch.bmm(y, g) * scale  # [n, 3, 3]; scaling α, not A: 9 numbers, not M1²

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:
        g, g_t, y, scale, upper, weight = ctx.saved_tensors
        s = (0.5 * scale) * (grad + grad.transpose(1, 2))  # [n, 3, 3]
        d_packed = d_g = None
        if ctx.needs_input_grad[0]:
            # ∂L/∂A = gr S grᵀ; a packed off-diagonal entry stands for A_mn and A_nm: 2×.
            full = torch.bmm(torch.bmm(g, s), g_t)  # [n, M1, M1]
            d_packed = torch.gather(full.view(g.shape[0], -1), 1, upper.expand(g.shape[0], -1)).mul_(weight)
        if ctx.needs_input_grad[1]:
            d_g = 2.0 * torch.bmm(y.transpose(1, 2), s)  # ∂L/∂gr = 2 A gr S
        return d_packed, d_g, None, None, None, None


@dataclass(frozen=True)
class ZHead:
    """A tanh fitting net for inference: the hidden layers in z-space (``ZNet``: output
    y = α − 2z, each bias a weight row against a ones column, no fresh activations), the
    output layer folded onto z: out = z (−2W) + (b + αW + bias_atom_e)."""

    hidden: ZNet
    matrix: Tensor  # [H, out]
    bias: Tensor  # [out]
    blocks: PolarBlocks | None  # the full polar head's CPU block layout of (matrix, bias)

    def __call__(self, h: Tensor) -> Tensor:
        """z of the hidden layers, [n, H]."""
        return self.hidden.forward_into(h, h.new_empty(h.shape[0], self.matrix.shape[0]))


class TensorFitting(nn.Module):
    bias_atom_e: Tensor  # [nt, dim_out]
    scale: Tensor  # [nt]
    shift_diag: Tensor  # [nt]
    pack_diag: Tensor  # [M1] packed position of (m, m)
    unpack: Tensor  # [M1²] packed column of each (m, n)

    def __init__(self, *, kind: str, ntypes: int, sel_type: list[int], dim_descrpt: int, m1: int,
                 neuron: list[int], resnet_dt: bool, activation: str, dtype: torch.dtype,
                 fit_diag: bool = True, scale: float | list[float] = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.kind, self.ntypes, self.sel_type, self.m1 = kind, ntypes, list(sel_type), m1
        self.fit_diag = fit_diag if kind == "polar" else False
        self.packed = kind == "polar" and not self.fit_diag
        self.dtype = dtype
        self.dim_out = m1 * (m1 + 1) // 2 if self.packed else m1
        # Nets only for the selected types; keys are the type indices.
        self.nets = nn.ModuleDict({
            str(t): MLP([dim_descrpt, *neuron], activation=activation, resnet_dt=resnet_dt, dtype=dtype,
                        linear_out=self.dim_out, generator=generator)
            for t in sel_type
        })
        scales = [float(scale)] * ntypes if not isinstance(scale, list) else [float(s) for s in scale]
        # Per-type output bias (DeePMD-kit's bias_atom_e), applied before the scale.
        self.register_buffer("bias_atom_e", torch.zeros(ntypes, self.dim_out, dtype=dtype))
        self.register_buffer("scale", torch.tensor(scales, dtype=dtype))
        # polar: constant added to the diagonal of each atom's α (already multiplied by scale).
        self.register_buffer("shift_diag", torch.zeros(ntypes, dtype=dtype))
        self.row_offsets = [0]  # packed row m is [row_offsets[m], row_offsets[m + 1])
        for m in range(m1):
            self.row_offsets.append(self.row_offsets[-1] + m1 - m)
        self.register_buffer("pack_diag", torch.tensor(self.row_offsets[:-1]), persistent=False)
        iu = torch.triu_indices(m1, m1)
        unpack = torch.zeros(m1, m1, dtype=torch.long)
        unpack[iu[0], iu[1]] = torch.arange(iu.shape[1])
        unpack[iu[1], iu[0]] = torch.arange(iu.shape[1])
        self.register_buffer("unpack", unpack.reshape(-1), persistent=False)
        self.register_buffer("upper", triu_pack_indices(m1)[0], persistent=False)
        # type → (weights' versions, block layout) of the CPU inference kernel (fitting_fast)
        self.block_cache: dict[int, tuple[VersionKey, PolarBlocks]] = {}
        self.layouts: dict[torch.device, BlockLayout] = {}
        # type → (weights' versions, the net in z-space with its output layer folded), inference
        self.z_cache: dict[int, tuple[VersionKey, ZHead]] = {}
        weight = torch.full((iu.shape[1],), 2.0, dtype=dtype)
        weight[self.row_offsets[:-1]] = 1.0
        self.register_buffer("upper_weight", weight, persistent=False)
        if self.packed:
            # Initialise like the symmetric part of DeePMD-kit's i.i.d. [H, M1²] layer: its
            # weights have spread 1/√(H + M1²) (not 1/√(H + packed width)), and
            # (W_mn + W_nm)/2 has 1/√2 of it off the diagonal.
            off_diag = torch.ones(self.dim_out, dtype=dtype)
            off_diag[self.pack_diag] = 0.0
            factor = 1.0 - off_diag * (1.0 - 0.5**0.5)
            hidden = neuron[-1]
            width = ((hidden + self.dim_out) / (hidden + m1 * m1)) ** 0.5
            with torch.no_grad():
                for net in self.nets.values():
                    assert isinstance(net, MLP)
                    net.layers[-1].matrix.mul_(factor * width)
                    net.layers[-1].bias.mul_(factor)

    @property
    def dim_tensor(self) -> int:
        return 3 if self.kind == "dipole" else 9

    def forward(self, d: Tensor, gr: Tensor, type_slices: list[tuple[int, int, int]], *,
                differentiable: bool = True) -> Tensor:
        """d [nf, nc, M1·M2], gr [nf, nc, M1, 3]; centres sorted by type, type t in columns
        [a, b) of ``type_slices`` (t, a, b). Returns the per-centre tensor [nf, nc, 3|9].
        ``differentiable``: autograd-ready kernels; False: inference ones (under no_grad)."""
        nf = d.shape[0]
        outs = []
        for t, a, b in type_slices:
            n = nf * (b - a)
            h = d[:, a:b].reshape(n, -1)
            g = gr[:, a:b].reshape(n, self.m1, 3)  # [n, M1, 3]
            net = self.nets[str(t)]
            assert isinstance(net, MLP)
            head = None if differentiable else self._z_head(t, net)
            if self.kind == "dipole":
                o = self._output(net, head, h, t, differentiable)  # [n, M1]
                out = torch.bmm(o[:, None, :], g)[:, 0]  # [n, 3]
            else:
                if self.fit_diag:
                    o = self._output(net, head, h, t, differentiable) * self.scale[t]  # [n, M1]
                    x = torch.bmm(g.transpose(1, 2), g * o[:, :, None])  # grᵀ diag(o) gr
                elif head is not None and head.blocks is not None and not g.is_cuda:
                    x = blocked_polar(head(h), head.blocks, self.scale[t], g)
                else:
                    x = self._full_polar(net, h, g, t, differentiable)
                x = x + self.shift_diag[t] * torch.eye(3, dtype=x.dtype, device=x.device)
                out = x.reshape(n, 9)
            outs.append(out.view(nf, b - a, -1))
        return torch.cat(outs, dim=1)

    def _output(self, net: MLP, head: ZHead | None, h: Tensor, t: int, differentiable: bool) -> Tensor:
        """The net's output plus type t's bias_atom_e, [n, out]: by the folded ``ZHead`` when given."""
        if head is None:
            return net(h, differentiable=differentiable) + self.bias_atom_e[t]
        return torch.addmm(head.bias, head(h), head.matrix)

    def _full_polar(self, net: MLP, h: Tensor, g: Tensor, t: int, differentiable: bool,
                    chunk: int = POLAR_CHUNK) -> Tensor:
        """grᵀ · A · gr with A the symmetric M1×M1 output, held packed (upper triangle U)."""
        last = net.layers[-1]
        hidden = net.hidden(h, differentiable=differentiable)  # [n, H]
        bias = last.bias + self.bias_atom_e[t]
        if differentiable:
            # Training batches are small: unpack with one gather; the backward is written by
            # hand. (A block-layout form with its own backward measured 1.4-3× slower here:
            # its b×b batched products and dim-1 scatters cost more than the one gather.)
            packed = torch.addmm(bias, hidden, last.matrix)  # [n, M1(M1+1)/2]
            out = SymmetricContraction.apply(packed, g, self.scale[t], self.unpack, self.upper, self.upper_weight)
            assert isinstance(out, Tensor)
            return out
        if g.is_cuda:  # few large launches; the block products suit a CPU's caches
            return dense_polar(hidden, last.matrix, bias, self.scale[t], g, self.unpack)
        return blocked_polar(hidden, self._polar_blocks(t, last.matrix, last.bias), self.scale[t], g, chunk)

    def _z_head(self, t: int, net: MLP) -> ZHead | None:
        """Type t's net as a ``ZHead`` (tanh nets with hidden layers; else None), rebuilt when
        any of its weights or the output bias change (an optimizer step, a load, a cast)."""
        if net.activation != "tanh" or net.n_hidden == 0 or len(net.layers) == net.n_hidden:
            return None

        def build() -> ZHead:
            hidden = z_net(net, net.n_hidden)
            last = net.layers[net.n_hidden]
            w = last.matrix.detach()
            matrix = (-2.0 * w).contiguous()
            bias = last.bias.detach() + hidden.alpha @ w + self.bias_atom_e[t]
            blocks = polar_blocks(matrix, bias, self.layout(w)) if self.packed and not w.is_cuda else None
            return ZHead(hidden, matrix, bias, blocks)

        return derived_from(self.z_cache, t, [*net.parameters(), self.bias_atom_e], build)

    def layout(self, like: Tensor) -> BlockLayout:
        """The block layout of the packed output on ``like``'s device (built once)."""
        lay = self.layouts.get(like.device)
        if lay is None:
            lay = self.layouts[like.device] = block_layout(self.m1, device=like.device)
        return lay

    def _polar_blocks(self, t: int, matrix: Tensor, bias: Tensor) -> PolarBlocks:
        """The block layout of type t's output layer, rebuilt when the weights change
        (an optimizer step or a load bumps their version; a cast moves their storage)."""
        return derived_from(self.block_cache, t, [matrix, bias, self.bias_atom_e],
                            lambda: polar_blocks(matrix, bias + self.bias_atom_e[t], self.layout(matrix)))
