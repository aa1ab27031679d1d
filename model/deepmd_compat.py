"""Load DeePMD-kit (3.x, PyTorch backend) se_e2_a dipole/polar checkpoints.

Accepted: the slim files of ``shared/data/deepmd_reference`` ({"format", "model_params",
"state_dict", ...}) and DeePMD-kit's own training checkpoints (``model.ckpt-N.pt``:
{"model": {..., "_extra_state": {"model_params": ...}}, "optimizer": ...}). Frozen
TorchScript models (``.pth``) carry code, not weights, and are refused.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from model.config import ModelConfig, parse_section
from model.errors import CheckpointError, ConfigError
from model.fitting import pack_symmetric
from model.tensor_model import TensorModel

_NET_KEY = re.compile(r"^(descriptor\.sea|fitting_net)\.filter_layers\.networks\.(\d+)\.layers\.(\d+)\.(matrix|bias|idt)$")


def is_deepmd_checkpoint(ck: dict[str, Any]) -> bool:
    if str(ck.get("format", "")).startswith("deepmd-kit"):
        return True
    inner = ck.get("model")
    return isinstance(inner, dict) and isinstance(inner.get("_extra_state"), dict)


def _split(ck: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    if "model_params" in ck and "state_dict" in ck:
        return ck["model_params"], ck["state_dict"]
    inner = ck["model"]
    extra = inner["_extra_state"]
    if "model_params" not in extra:
        raise CheckpointError("DeePMD-kit checkpoint without model_params in _extra_state")
    return extra["model_params"], {k: v for k, v in inner.items() if isinstance(v, Tensor)}


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys relative to ``atomic_model.`` (drops 'model.Default.' and the '_networks' aliases)."""
    out = {}
    for key, value in state.items():
        if "atomic_model." not in key or "._networks." in key:
            continue
        out[key.split("atomic_model.", 1)[1]] = value
    if not out:
        raise CheckpointError("no 'atomic_model.*' tensors found: not a DeePMD-kit standard model checkpoint")
    return out


def config_from_params(params: dict[str, Any]) -> ModelConfig:
    desc = params.get("descriptor", {})
    if desc.get("type") not in ("se_e2_a", "se_a"):
        raise CheckpointError(f"descriptor type {desc.get('type')!r} is not supported (only se_e2_a)")
    try:  # parse_section drops the notes: these are defaults DeePMD-kit wrote, not user input
        return parse_section(params, ModelConfig, path="model_params")
    except ConfigError as exc:
        raise CheckpointError(f"unsupported DeePMD-kit model: {exc}") from None


def block_constant(stat: Tensor, sel: list[int], name: str) -> Tensor:
    """[nt, Σsel, 4] per-slot statistics → [nt, nt, 4] per (centre, neighbour-type) block
    (DeePMD-kit computes them per block; a file with other values is refused)."""
    blocks, start = [], 0
    for n in sel:
        block = stat[:, start:start + n]  # [nt, n, 4]
        if n and not torch.allclose(block, block[:, :1].expand_as(block), rtol=0, atol=0):
            raise CheckpointError(f"{name}: statistics vary within a neighbour-type block; not supported")
        blocks.append(block[:, 0] if n else torch.zeros_like(stat[:, 0]))
        start += n
    return torch.stack(blocks, dim=1)


def model_from_deepmd(ck: dict[str, Any]) -> TensorModel:
    params, raw_state = _split(ck)
    config = config_from_params(params)
    model = TensorModel(config)
    state = _strip_prefix(raw_state)
    sel = model.sel
    expected_nnei = sum(sel)
    try:
        mean, std = state["descriptor.sea.mean"], state["descriptor.sea.stddev"]
    except KeyError as exc:
        raise CheckpointError(f"missing tensor {exc.args[0]}") from None
    if mean.shape != (model.ntypes, expected_nnei, 4):
        raise CheckpointError(f"descriptor.sea.mean has shape {tuple(mean.shape)}, expected "
                              f"({model.ntypes}, {expected_nnei}, 4)")
    new_state: dict[str, Tensor] = {
        "descriptor.davg": block_constant(mean, sel, "descriptor.sea.mean"),
        "descriptor.dstd": block_constant(std, sel, "descriptor.sea.stddev"),
    }
    if "fitting_net.bias_atom_e" in state:
        new_state["fitting.bias_atom_e"] = state["fitting_net.bias_atom_e"]
    for key, value in state.items():
        m = _NET_KEY.match(key)
        if m is None:
            continue
        part, net, layer, leaf = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if part == "descriptor.sea":
            new_state[f"descriptor.embeddings.{net}.layers.{layer}.{leaf}"] = value
        elif net in model.sel_type:  # nets of excluded types never reach the output
            new_state[f"fitting.nets.{net}.layers.{layer}.{leaf}"] = value
    fit = model.fitting
    if fit.packed:  # only the symmetric part of the M1×M1 output matters: keep it, packed
        last = len(config.fitting_net.neuron)
        for key in [k for k in new_state if k.startswith("fitting.nets.") and f".layers.{last}." in k]:
            new_state[key] = pack_symmetric(new_state[key], fit.m1)
        if "fitting.bias_atom_e" in new_state:
            new_state["fitting.bias_atom_e"] = pack_symmetric(new_state["fitting.bias_atom_e"], fit.m1)
    own = model.state_dict()
    if model.kind == "polar" and config.fitting_net.shift_diag:
        out_bias = state.get("out_bias")
        if out_bias is None or out_bias.shape[-1] != 9:
            raise CheckpointError("polar model with shift_diag needs atomic_model.out_bias [1, ntypes, 9]")
        diag_mean = out_bias[0].reshape(-1, 3, 3).diagonal(dim1=1, dim2=2).mean(-1)  # [nt]
        new_state["fitting.shift_diag"] = diag_mean.to(fit.scale.dtype) * fit.scale
    else:
        new_state["fitting.shift_diag"] = own["fitting.shift_diag"]
    new_state["fitting.scale"] = own["fitting.scale"]
    return load_checked_state(model, new_state, "DeePMD-kit checkpoint")


def load_checked_state(model: TensorModel, state: dict[str, Tensor], source: str) -> TensorModel:
    """Load ``state`` (our keys) into ``model``: every key present, none extra, every shape
    right — or a CheckpointError naming the key, never torch's RuntimeError."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{source}: the tensors do not match the configuration: missing {missing[:8]}, "
                              f"unexpected {unexpected[:8]} (resnet_dt / timestep layers?)")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise CheckpointError(f"{source}: {key}: shape {tuple(value.shape)} in the file, expected "
                                  f"{tuple(own[key].shape)} for this configuration")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return model
