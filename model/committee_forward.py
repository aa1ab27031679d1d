"""K members of one architecture evaluated together: weights stacked along a leading
member axis, one pass over the data.

The neighbour search and environment rows depend on coordinates only, so they are built
once for all members. Every net layer is then one batched matmul over [K, rows, in]
(``torch.baddbmm``) instead of K separate calls, and the descriptor contraction and the
fitting heads carry the member axis along. Inference only: no autograd path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.descriptor import EnvPairs
from model.descriptor_fast import block_rows, distinct_rows, segment_blocks
from model.nets import ACTIVATIONS, MLP
from model.tensor_model import Centres, TensorModel

# Rows of one unpacked [rows, M1, M1] block of a full polarizability head.
POLAR_CHUNK = 256


@dataclass
class StackedLayer:
    matrix: Tensor  # [K, in, out]
    bias: Tensor  # [K, 1, out]
    idt: Tensor | None  # [K, 1, out]
    residual: bool
    linear: bool  # the plain output layer: no activation, no timestep, no residual


class StackedMLP:
    """One MLP per member, evaluated as a single batched net: x [K, rows, in] → [K, rows, out]."""

    def __init__(self, nets: list[MLP]) -> None:
        first = nets[0]
        self.activation = ACTIVATIONS[first.activation]
        self.layers: list[StackedLayer] = []
        for i, layer in enumerate(first.layers):
            members = [net.layers[i] for net in nets]
            self.layers.append(StackedLayer(
                matrix=torch.stack([m.matrix.detach() for m in members]),
                bias=torch.stack([m.bias.detach() for m in members])[:, None, :],
                idt=None if layer.idt is None else torch.stack([m.idt.detach() for m in members if m.idt is not None])[:, None, :],
                residual=layer.residual, linear=i >= first.n_hidden))

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            if x.shape[-1] == 1:  # the embedding net's 1-wide input: an outer product
                a = torch.addcmul(layer.bias, x, layer.matrix)
            else:
                a = torch.baddbmm(layer.bias, x, layer.matrix)  # [K, rows, out]
            if layer.linear:
                x = a
                continue
            y = self.activation(a)
            if layer.idt is not None:
                y = y * layer.idt
            if layer.residual:
                y = y + (x if y.shape[-1] == x.shape[-1] else torch.cat([x, x], dim=-1))
            x = y
        return x


def _mlp(module: object) -> MLP:
    assert isinstance(module, MLP)
    return module


class StackedDescriptor:
    """se_e2_a of K members over one shared environment."""

    def __init__(self, models: list[TensorModel]) -> None:
        descs = [m.descriptor for m in models]
        d = descs[0]
        self.ntypes, self.m1, self.m2, self.nnei = d.ntypes, d.m1, d.m2, d.nnei
        self.sel_t = d.sel_t
        self.net_of = d.net_index
        self.nets = [StackedMLP([desc.net(k) for desc in descs]) for k in range(len(d.embeddings))]
        stats = [desc.group_stats() for desc in descs]
        self.mean = torch.stack([s[0] for s in stats])  # [K, nt², 4]
        self.std = torch.stack([s[1] for s in stats])  # [K, nt², 4]

    def __call__(self, env: EnvPairs) -> tuple[Tensor, Tensor]:
        """D [K, nC, M1·M2] and gr [K, nC, M1, 3]."""
        nt, m1, n_c = self.ntypes, self.m1, env.n_centres
        k = self.mean.shape[0]
        rn = (env.rij[None] - self.mean[:, env.group]) / self.std[:, env.group]  # [K, P, 4]
        t = rn.new_zeros(k, n_c, 4, m1)
        tables = {}
        for g, (values, _) in env.distinct.items():  # pairs i→j and j→i share one embedding
            s = (values[None, :, None] - self.mean[:, g, None, :1]) / self.std[:, g, None, :1]  # [K, nv, 1]
            tables[g] = self.nets[self.net_of(g)](s)  # [K, nv, M1]
        for seg, b0, b1, p0, p1 in segment_blocks(env, block_rows(rn)):
            net, c = self.nets[self.net_of(seg.group)], seg.count
            if seg.group in tables:
                emb = tables[seg.group].index_select(1, distinct_rows(env, seg.group, p0, p1))  # [K, rows, M1]
            else:
                emb = net(rn[:, p0:p1, :1])
            nb = b1 - b0
            part = torch.bmm(rn[:, p0:p1].reshape(k * nb, c, 4).transpose(1, 2),
                             emb.reshape(k * nb, c, m1))  # [K·nb, 4, M1]
            t.index_add_(1, env.block_centre[b0:b1], part.view(k, nb, 4, m1))

        # Padded slots: all equal within a group; add count × R̃padᵀ G(s_pad).
        pad_r = -self.mean / self.std  # [K, nt², 4]
        present = sorted({ti + nt * tj for ti in env.present_types for tj in range(nt)})
        pad_g = rn.new_zeros(k, nt * nt, m1)
        for g in present:
            pad_g[:, g] = self.nets[self.net_of(g)](pad_r[:, g:g + 1, :1])[:, 0]
        pad_term = (pad_r[..., None] * pad_g[:, :, None, :]).reshape(k, nt * nt, 4 * m1)
        npad = self.sel_t - env.counts.to(rn.dtype)  # [nC, nt]
        cols = env.centre_type[:, None] + nt * torch.arange(nt, device=rn.device)[None, :]
        weights = rn.new_zeros(n_c, nt * nt).scatter_(1, cols, npad)  # [nC, nt²]
        t = (t + torch.matmul(weights, pad_term).view(k, n_c, 4, m1)) / self.nnei

        d = torch.matmul(t.transpose(-1, -2), t[..., : self.m2]).reshape(k, n_c, m1 * self.m2)
        gr = t[:, :, 1:4, :].transpose(-1, -2)  # [K, nC, M1, 3]
        return d, gr


class StackedFitting:
    """Dipole / polarizability heads of K members."""

    def __init__(self, models: list[TensorModel]) -> None:
        fits = [m.fitting for m in models]
        f = fits[0]
        self.kind, self.m1, self.fit_diag, self.packed = f.kind, f.m1, f.fit_diag, f.packed
        self.nets = {t: StackedMLP([_mlp(fit.nets[t]) for fit in fits]) for t in f.nets}
        self.bias = torch.stack([fit.bias_atom_e for fit in fits])  # [K, nt, out]
        self.scale = torch.stack([fit.scale for fit in fits])  # [K, nt]
        self.shift = torch.stack([fit.shift_diag for fit in fits])  # [K, nt]
        self.unpack = f.unpack  # [M1²]

    def __call__(self, d: Tensor, gr: Tensor, slices: list[tuple[int, int, int]]) -> Tensor:
        """d [K, nf, nc, M1·M2], gr [K, nf, nc, M1, 3] → per-centre tensors [K, nf, nc, 3|9]."""
        k, nf = d.shape[0], d.shape[1]
        m1 = self.m1
        outs = []
        for t, a, b in slices:
            n = nf * (b - a)
            h = d[:, :, a:b].reshape(k, n, -1)
            g = gr[:, :, a:b].reshape(k * n, m1, 3)
            o = self.nets[str(t)](h) + self.bias[:, t, None, :]  # [K, n, out]
            if self.kind == "dipole":
                out = torch.bmm(o.reshape(k * n, 1, m1), g)[:, 0]  # [K·n, 3]
            else:
                o = o * self.scale[:, t, None, None]
                if self.fit_diag:
                    x = torch.bmm(g.transpose(1, 2), g * o.reshape(k * n, m1, 1))
                else:
                    x = self._full_polar(o.reshape(k * n, -1), g)
                eye = torch.eye(3, dtype=x.dtype, device=x.device)
                x = x.view(k, n, 3, 3) + self.shift[:, t, None, None, None] * eye
                out = x.reshape(k * n, 9)
            outs.append(out.view(k, nf, b - a, -1))
        return torch.cat(outs, dim=2)

    def _full_polar(self, packed: Tensor, g: Tensor) -> Tensor:
        """grᵀ A gr for A unpacked from its upper triangle, in row blocks (A is M1×M1 a row)."""
        m1 = self.m1
        outs = []
        for c0 in range(0, packed.shape[0], POLAR_CHUNK):
            pc, gc = packed[c0:c0 + POLAR_CHUNK], g[c0:c0 + POLAR_CHUNK]
            a = torch.gather(pc, 1, self.unpack.expand(pc.shape[0], -1)).view(-1, m1, m1)
            outs.append(torch.bmm(gc.transpose(1, 2), torch.bmm(a, gc)))
        return torch.cat(outs) if outs else g.new_zeros(0, 3, 3)


class StackedModel:
    """The forward of K same-architecture members in one pass: per-member atomic tensors."""

    def __init__(self, models: list[TensorModel]) -> None:
        self.first = models[0]
        self.descriptor = StackedDescriptor(models)
        self.fitting = StackedFitting(models)

    def __call__(self, coord: Tensor, atype: Tensor, box: Tensor | None) -> Tensor:
        """coord [nf, nat, 3] → atomic tensors of every member [K, nf, nat, 3|9]."""
        model = self.first
        nf, nat, _ = coord.shape
        k = self.descriptor.mean.shape[0]
        centres: Centres = model.centres(atype)
        if centres.index.numel() == 0:
            return coord.new_zeros(k, nf, nat, model.dim, dtype=model.fitting.dtype)
        coord = coord.to(model.dtype)
        box = box.to(model.dtype) if box is not None else None
        env = model.environment(coord, atype, box, centres)
        nc = centres.index.shape[0]
        d, gr = self.descriptor(env)  # [K, nf·nc, M1·M2], [K, nf·nc, M1, 3]
        fdtype = model.fitting.dtype
        per_centre = self.fitting(d.view(k, nf, nc, -1).to(fdtype), gr.view(k, nf, nc, -1, 3).to(fdtype),
                                  centres.slices)  # [K, nf, nc, dim]
        return per_centre.new_zeros(k, nf, nat, model.dim).index_copy(2, centres.index, per_centre)
