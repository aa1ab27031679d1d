"""Dipole and polarizability fitting heads: one MLP per selected atom type.

dipole: μ = F(D) · gr                        (1×M1 · M1×3)
polar:  α = grᵀ · sym(F(D)·scale) · gr + shift·I   (fit_diag: F(D) is the diagonal)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.nets import MLP


class TensorFitting(nn.Module):
    def __init__(self, *, kind: str, ntypes: int, sel_type: list[int], dim_descrpt: int, m1: int,
                 neuron: list[int], resnet_dt: bool, activation: str, dtype: torch.dtype,
                 fit_diag: bool = True, scale: float | list[float] = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.kind, self.ntypes, self.sel_type, self.m1 = kind, ntypes, list(sel_type), m1
        self.fit_diag = fit_diag if kind == "polar" else False
        self.dtype = dtype
        self.dim_out = m1 * m1 if kind == "polar" and not fit_diag else m1
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

    @property
    def dim_tensor(self) -> int:
        return 3 if self.kind == "dipole" else 9

    def forward(self, d: Tensor, gr: Tensor, type_slices: list[tuple[int, int, int]]) -> Tensor:
        """d [nf, nc, M1·M2], gr [nf, nc, M1, 3]; centres sorted by type, type t in columns
        [a, b) of ``type_slices`` (t, a, b). Returns the per-centre tensor [nf, nc, 3|9]."""
        nf = d.shape[0]
        outs = []
        for t, a, b in type_slices:
            n = nf * (b - a)
            h = d[:, a:b].reshape(n, -1)
            g = gr[:, a:b].reshape(n, self.m1, 3)  # [n, M1, 3]
            o = self.nets[str(t)](h) + self.bias_atom_e[t]  # [n, dim_out]
            if self.kind == "dipole":
                out = torch.bmm(o[:, None, :], g)[:, 0]  # [n, 3]
            else:
                o = o * self.scale[t]
                if self.fit_diag:
                    x = torch.bmm(g.transpose(1, 2), g * o[:, :, None])  # grᵀ diag(o) gr
                else:
                    x = torch.bmm(g.transpose(1, 2), torch.bmm(o.view(n, self.m1, self.m1), g))
                    x = 0.5 * (x + x.transpose(1, 2))  # grᵀ (o + oᵀ)/2 gr
                x = x + self.shift_diag[t] * torch.eye(3, dtype=x.dtype, device=x.device)
                out = x.reshape(n, 9)
            outs.append(out.view(nf, b - a, -1))
        return torch.cat(outs, dim=1)
