"""The tensor model: neighbour list → environment → descriptor → fitting → reduce."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model.config import ModelConfig
from model.descriptor import DescriptorSeA, EnvPairs, environment
from model.errors import ConfigError
from model.fitting import TensorFitting
from model.neighbor import build_neighbor_list
from model.search_budget import DEFAULT_MAX_CANDIDATES

DTYPES = {"default": torch.float64, "float64": torch.float64, "float32": torch.float32}


@dataclass
class TensorOutput:
    atomic: Tensor  # [nf, nat, 3|9], zeros for atoms outside sel_type
    global_: Tensor  # [nf, 3|9], sum over atoms


@dataclass
class Centres:
    """The atoms that carry the tensor, sorted by (type, index) so that each type is a
    contiguous block of columns."""

    index: Tensor  # [nc] atom indices
    types: Tensor  # [nc] their types
    slices: list[tuple[int, int, int]]  # (type, start, stop) column blocks


class TensorModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.type_map is None:
            raise ConfigError("type_map must be known to build a model", path="model.type_map")
        if not isinstance(config.descriptor.sel, list):
            raise ConfigError("sel must be resolved to a list before building a model", path="model.descriptor.sel")
        self.config = config
        self.type_map = list(config.type_map)
        self.ntypes = len(self.type_map)
        self.kind = config.fitting_net.type
        self.sel_type = config.sel_type(self.ntypes)
        if not self.sel_type:
            raise ConfigError("no atom type is selected (sel_type / atom_exclude_types exclude every type)",
                              path="model.fitting_net.sel_type")
        desc, fit = config.descriptor, config.fitting_net
        self.rcut = float(desc.rcut)
        self.sel: list[int] = [int(n) for n in desc.sel]
        # neighbour candidates one centre may be compared with (periodic images × atoms);
        # the service sets it from its settings, the CLI from --max-search-candidates
        self.max_search_candidates = DEFAULT_MAX_CANDIDATES
        gen_d = torch.Generator().manual_seed(desc.seed) if desc.seed is not None else None
        gen_f = torch.Generator().manual_seed(fit.seed) if fit.seed is not None else None
        self.descriptor = DescriptorSeA(
            ntypes=self.ntypes, sel=self.sel, rcut=desc.rcut, rcut_smth=desc.rcut_smth, neuron=list(desc.neuron),
            axis_neuron=desc.axis_neuron, resnet_dt=desc.resnet_dt, type_one_side=desc.type_one_side,
            activation=desc.activation_function, dtype=DTYPES[desc.precision], generator=gen_d,
        )
        self.fitting = TensorFitting(
            kind=self.kind, ntypes=self.ntypes, sel_type=self.sel_type, dim_descrpt=self.descriptor.dim_out,
            m1=self.descriptor.m1, neuron=list(fit.neuron), resnet_dt=fit.resnet_dt,
            activation=fit.activation_function, dtype=DTYPES[fit.precision], fit_diag=fit.fit_diag,
            scale=fit.scale, generator=gen_f,
        )

    @property
    def dim(self) -> int:
        return self.fitting.dim_tensor

    @property
    def dtype(self) -> torch.dtype:
        return self.descriptor.dtype

    def set_precision(self, dtype: torch.dtype) -> TensorModel:
        """Run descriptor and fitting in ``dtype`` (float64 or float32)."""
        self.to(dtype)
        self.descriptor.dtype = dtype
        self.fitting.dtype = dtype
        return self

    def centres(self, atype: Tensor) -> Centres:
        """atype [nat] → the atoms of sel_type, grouped by type."""
        blocks, slices, start = [], [], 0
        for t in self.sel_type:
            idx = torch.nonzero(atype == t).flatten()
            if idx.numel():
                blocks.append(idx)
                slices.append((t, start, start + idx.numel()))
                start += idx.numel()
        index = torch.cat(blocks) if blocks else atype.new_zeros(0)
        return Centres(index=index, types=atype[index], slices=slices)

    def environment(self, coord: Tensor, atype: Tensor, box: Tensor | None, centres: Centres) -> EnvPairs:
        """Neighbour search + environment rows (no parameters, no gradient)."""
        nf = coord.shape[0]
        nl = build_neighbor_list(coord, atype, box, centres.index, self.rcut, self.sel, self.max_search_candidates)
        centre_type = centres.types.repeat(nf)  # [nf·nc]
        d = self.descriptor
        return environment(nl, centre_type, self.ntypes, d.rcut_smth, d.rcut, d.dtype)

    def forward_env(self, env: EnvPairs, centres: Centres, nf: int, nat: int, *,
                    differentiable: bool = True) -> TensorOutput:
        """``differentiable``: the autograd-ready kernels (training, derivatives at
        inference); False: the inference kernels, run without a graph whatever the caller's
        grad mode. The mode is chosen here, explicitly, never from torch.is_grad_enabled()."""
        if not differentiable:
            with torch.no_grad():
                return self._forward_env(env, centres, nf, nat, False)
        return self._forward_env(env, centres, nf, nat, True)

    def _forward_env(self, env: EnvPairs, centres: Centres, nf: int, nat: int, differentiable: bool) -> TensorOutput:
        nc = centres.index.shape[0]
        d, gr = self.descriptor(env, differentiable=differentiable)  # [nf·nc, M1·M2], [nf·nc, M1, 3]
        fdtype = self.fitting.dtype
        per_centre = self.fitting(d.view(nf, nc, -1).to(fdtype), gr.view(nf, nc, -1, 3).to(fdtype),
                                  centres.slices, differentiable=differentiable)  # [nf, nc, dim]
        atomic = per_centre.new_zeros(nf, nat, self.dim).index_copy(1, centres.index, per_centre)
        return TensorOutput(atomic=atomic, global_=atomic.sum(dim=1))

    def forward(self, coord: Tensor, atype: Tensor, box: Tensor | None = None, *,
                differentiable: bool = True) -> TensorOutput:
        """coord [nf, nat, 3] Å, atype [nat] model types, box [nf, 3, 3] or None (no PBC).
        ``differentiable=False`` for plain predictions: the fast inference kernels."""
        nf, nat, _ = coord.shape
        centres = self.centres(atype)
        if centres.index.numel() == 0:
            zeros = coord.new_zeros(nf, nat, self.dim, dtype=self.fitting.dtype)
            return TensorOutput(atomic=zeros, global_=zeros.sum(dim=1))
        coord = coord.to(self.dtype)
        box = box.to(self.dtype) if box is not None else None
        env = self.environment(coord, atype, box, centres)
        return self.forward_env(env, centres, nf, nat, differentiable=differentiable)
