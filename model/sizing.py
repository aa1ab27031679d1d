"""How big a model an input.json asks for, before anything is built (torch-free: the api
checks job sizes at submission with it). Counts the same layers the model builds."""

from __future__ import annotations

from itertools import pairwise

from model.config import ModelConfig

# float64 weights + gradient + Adam's two moments
TRAINING_BYTES_PER_PARAMETER = 4 * 8


def _mlp_parameters(sizes: list[int], resnet_dt: bool, linear_out: int | None = None) -> int:
    """Dense layers in → … (+ a linear output layer): matrix, bias, and a timestep where a
    residual connection exists (out = in or 2·in), as model.nets.Dense."""
    total = 0
    for n_in, n_out in pairwise(sizes):
        total += n_in * n_out + n_out
        if resnet_dt and n_out in (n_in, 2 * n_in):
            total += n_out
    if linear_out is not None:
        total += sizes[-1] * linear_out + linear_out
    return total


def count_parameters(cfg: ModelConfig, ntypes: int) -> int:
    """Trainable parameters of the model ``cfg`` builds for ``ntypes`` atom types."""
    d, f = cfg.descriptor, cfg.fitting_net
    nets = ntypes if d.type_one_side else ntypes * ntypes
    embedding = nets * _mlp_parameters([1, *d.neuron], d.resnet_dt)
    m1 = d.neuron[-1]
    dim_out = m1 * (m1 + 1) // 2 if f.type == "polar" and not f.fit_diag else m1
    fitting = len(cfg.sel_type(ntypes)) * _mlp_parameters([m1 * d.axis_neuron, *f.neuron], f.resnet_dt, dim_out)
    return embedding + fitting


def training_activation_bytes(cfg: ModelConfig, nnei: int, batch_atoms: int) -> int:
    """Estimated bytes of one training step's activations (kept for the backward pass) for
    a batch of ``batch_atoms`` atoms (frames × atoms per frame), each with up to ``nnei``
    neighbours (the sum of sel): the embedding net's layers for every (atom, neighbour)
    pair dominate. An upper estimate (sel bounds the neighbours): the water example with
    rcut 6 Å was measured at ~20 MB of resident memory per 192-atom frame, ~38 MB estimated."""
    d, f = cfg.descriptor, cfg.fitting_net
    m1 = d.neuron[-1]
    per_pair = 4 + sum(d.neuron)  # [s, x/r, y/r, z/r] and the embedding net's outputs
    per_atom = nnei * per_pair + m1 * (4 + d.axis_neuron) + sum(f.neuron)
    return 8 * batch_atoms * per_atom  # float64
