"""DeePMD-kit 3.x's serialized model tree (``.dp``/``.yaml``) → a TensorModel.

The inverse of ``model.dpmodel_export``, for trees written by us or by DeePMD-kit
(``dp convert-backend model.pth model.dp``). Every node is checked — class, version,
required keys, array shapes — and a problem is a CheckpointError naming the JSON path
(``model.descriptor.@variables.davg``), so a malformed file can never half-load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.config import ModelConfig, parse_section
from model.deepmd_compat import block_constant, load_checked_state
from model.dpmodel_file import read_dpmodel
from model.errors import CheckpointError, ConfigError
from model.fitting import pack_symmetric
from model.tensor_model import TensorModel

# (@class, type) → newest @version we read (DeePMD-kit 3.2.0's writers)
MAX_VERSION = {"Model": 2, "Descriptor": 3, "Fitting:dipole": 4, "Fitting:polar": 5, "NetworkCollection": 1,
               "EmbeddingNetwork": 2, "FittingNetwork": 1, "Layer": 2}


class _Tree:
    """Checked access to the document, with the JSON path in every message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, message: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {path}: {message}")

    def node(self, parent: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = self.get(parent, key, path)
        if not isinstance(value, dict):
            raise self.fail(f"{path}.{key}", f"expected an object, found {type(value).__name__}")
        return value

    def get(self, parent: dict[str, Any], key: str, path: str) -> Any:
        if key not in parent:
            raise self.fail(path, f"required key {key!r} is missing")
        return parent[key]

    def array(self, parent: dict[str, Any], key: str, path: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = self.get(parent, key, path)
        if not isinstance(value, np.ndarray):
            raise self.fail(f"{path}.{key}", f"expected an array, found {type(value).__name__}")
        if value.shape != shape:
            raise self.fail(f"{path}.{key}", f"has shape {value.shape}, expected {shape}")
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))

    def versioned(self, node: dict[str, Any], cls: str, path: str, kind: str | None = None) -> None:
        found = node.get("@class")
        if found != cls:
            raise self.fail(path, f"@class is {found!r}, expected {cls!r}")
        key = f"{cls}:{kind}" if kind else cls
        version = node.get("@version", 1)
        if not isinstance(version, int) or version < 1:
            raise self.fail(f"{path}.@version", f"{version!r} is not a version number")
        if version > MAX_VERSION[key]:
            raise self.fail(f"{path}.@version", f"{version} is newer than this dptensor reads "
                            f"(up to {MAX_VERSION[key]}): written by a newer DeePMD-kit")


def _config(tree: _Tree, model: dict[str, Any], desc: dict[str, Any], fit: dict[str, Any]) -> ModelConfig:
    kind = fit.get("type") or fit.get("var_name")
    if desc.get("type") not in ("se_e2_a", "se_a"):
        raise tree.fail("model.descriptor.type", f"{desc.get('type')!r} is not supported (only se_e2_a)")
    if kind not in ("dipole", "polar"):
        raise tree.fail("model.fitting.type", f"{kind!r} is not a tensor model (dipole or polar)")
    descriptor = {k: tree.get(desc, k, "model.descriptor") for k in (
        "sel", "rcut", "rcut_smth", "neuron", "axis_neuron", "resnet_dt", "type_one_side", "activation_function",
        "precision")}
    descriptor.update(type="se_e2_a", set_davg_zero=bool(desc.get("set_davg_zero", False)),
                      exclude_types=desc.get("exclude_types", []), env_protection=desc.get("env_protection", 0.0))
    fitting = {k: tree.get(fit, k, "model.fitting") for k in ("neuron", "resnet_dt", "activation_function",
                                                             "precision")}
    fitting.update(type=kind, **{k: fit.get(k, 0) for k in ("numb_fparam", "numb_aparam", "dim_case_embd")})
    type_map = tree.get(model, "type_map", "model")
    if kind == "polar":
        fitting.update(fit_diag=bool(tree.get(fit, "fit_diag", "model.fitting")),
                       shift_diag=bool(tree.get(fit, "shift_diag", "model.fitting")))
        nt = len(type_map) if isinstance(type_map, list) else 0
        scale = tree.array(tree.node(fit, "@variables", "model.fitting"), "scale", "model.fitting.@variables",
                           (nt, 1))
        fitting["scale"] = scale.flatten().tolist()
    excluded = sorted({*model.get("atom_exclude_types", []), *fit.get("exclude_types", [])})
    raw = {"type_map": type_map, "descriptor": descriptor, "fitting_net": fitting, "atom_exclude_types": excluded,
           "pair_exclude_types": model.get("pair_exclude_types", [])}
    try:
        return parse_section(raw, ModelConfig, path="model")
    except ConfigError as exc:
        raise CheckpointError(f"{tree.source}: unsupported or invalid model: {exc}") from None


def _networks(tree: _Tree, collection: dict[str, Any], path: str, count: int, ndim: int) -> list[dict[str, Any]]:
    tree.versioned(collection, "NetworkCollection", path)
    if collection.get("ndim") != ndim:
        raise tree.fail(f"{path}.ndim", f"is {collection.get('ndim')!r}, expected {ndim}")
    networks = tree.get(collection, "networks", path)
    if not isinstance(networks, list) or len(networks) != count:
        raise tree.fail(f"{path}.networks", f"expected a list of {count} networks")
    return networks


def _net_state(tree: _Tree, net: dict[str, Any], path: str, cls: str, prefix: str, activation: str,
               n_hidden: int, has_output: bool) -> dict[str, torch.Tensor]:
    """Layers of one network → our MLP keys (shapes are checked against the model later)."""
    tree.versioned(net, cls, path)
    layers = tree.get(net, "layers", path)
    if not isinstance(layers, list) or len(layers) != n_hidden + has_output:
        raise tree.fail(f"{path}.layers", f"expected {n_hidden + has_output} layers")
    state = {}
    for i, layer in enumerate(layers):
        where = f"{path}.layers[{i}]"
        if not isinstance(layer, dict):
            raise tree.fail(where, "expected an object")
        tree.versioned(layer, "Layer", where)
        output = i == n_hidden
        act = str(layer.get("activation_function", "")).lower()
        want = ("none", "linear") if output else (activation,)
        if act not in want or bool(layer.get("resnet", not output)) == output or layer.get("bias") is False:
            raise tree.fail(where, f"activation {act!r} / resnet {layer.get('resnet')!r} is not a "
                            f"{'linear output' if output else activation + ' residual'} layer")
        variables = tree.node(layer, "@variables", where)
        for ours, theirs in (("matrix", "w"), ("bias", "b"), ("idt", "idt")):
            value = variables.get(theirs)
            if value is None:
                continue
            if not isinstance(value, np.ndarray):
                raise tree.fail(f"{where}.@variables.{theirs}", "expected an array")
            state[f"{prefix}.layers.{i}.{ours}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    return state


def model_from_document(document: dict[str, Any], source: str = "model") -> TensorModel:
    tree = _Tree(source)
    if not isinstance(document, dict):
        raise tree.fail("", "not a model document")
    model_node = tree.node(document, "model", "")
    tree.versioned(model_node, "Model", "model")
    if model_node.get("type", "standard") != "standard":
        raise tree.fail("model.type", f"{model_node.get('type')!r} models are not supported (only 'standard')")
    desc = tree.node(model_node, "descriptor", "model")
    fit = tree.node(model_node, "fitting", "model")
    config = _config(tree, model_node, desc, fit)
    tree.versioned(desc, "Descriptor", "model.descriptor")
    tree.versioned(fit, "Fitting", "model.fitting", kind=config.fitting_net.type)
    model = TensorModel(config)
    nt, sel = model.ntypes, model.sel
    dvars = tree.node(desc, "@variables", "model.descriptor")
    state: dict[str, torch.Tensor] = {
        "descriptor.davg": block_constant(tree.array(dvars, "davg", "model.descriptor.@variables", (nt, sum(sel), 4)),
                                          sel, f"{source}: model.descriptor.@variables.davg"),
        "descriptor.dstd": block_constant(tree.array(dvars, "dstd", "model.descriptor.@variables", (nt, sum(sel), 4)),
                                          sel, f"{source}: model.descriptor.@variables.dstd"),
    }
    one_side = config.descriptor.type_one_side
    emb_path = "model.descriptor.embeddings"
    embeddings = _networks(tree, tree.node(desc, "embeddings", "model.descriptor"), emb_path,
                           nt if one_side else nt * nt, 1 if one_side else 2)
    n_emb = len(config.descriptor.neuron)
    for k, net in enumerate(embeddings):
        state.update(_net_state(tree, net, f"{emb_path}.networks[{k}]", "EmbeddingNetwork",
                                f"descriptor.embeddings.{k}", model.descriptor.activation, n_emb, False))
    fit_path = "model.fitting.nets"
    fit_nets = _networks(tree, tree.node(fit, "nets", "model.fitting"), fit_path, nt, 1)
    fitting = model.fitting
    out_dim = fitting.m1 * fitting.m1 if fitting.packed else fitting.m1
    fvars = tree.node(fit, "@variables", "model.fitting")
    bias = tree.array(fvars, "bias_atom_e", "model.fitting.@variables", (nt, out_dim))
    state["fitting.bias_atom_e"] = pack_symmetric(bias, fitting.m1) if fitting.packed else bias
    n_fit = len(config.fitting_net.neuron)
    for t in model.sel_type:  # nets of excluded types never reach the output
        net_state = _net_state(tree, fit_nets[t], f"{fit_path}.networks[{t}]", "FittingNetwork",
                               f"fitting.nets.{t}", config.fitting_net.activation_function, n_fit, True)
        if fitting.packed:  # only the symmetric part of the M1×M1 output matters: keep it packed
            for leaf in ("matrix", "bias"):
                key = f"fitting.nets.{t}.layers.{n_fit}.{leaf}"
                if key in net_state and net_state[key].shape[-1] == out_dim:
                    net_state[key] = pack_symmetric(net_state[key], fitting.m1)
        state.update(net_state)
    state["fitting.scale"] = fitting.scale.detach().clone()
    state["fitting.shift_diag"] = torch.zeros(nt, dtype=torch.float64)
    if model.kind == "polar" and config.fitting_net.shift_diag:
        out_bias = tree.array(tree.node(model_node, "@variables", "model"), "out_bias", "model.@variables", (1, nt, 9))
        constant = tree.array(fvars, "constant_matrix", "model.fitting.@variables", (nt,))
        diag_mean = out_bias[0].reshape(nt, 3, 3).diagonal(dim1=1, dim2=2).mean(-1)  # [nt]
        state["fitting.shift_diag"] = (diag_mean + constant) * fitting.scale.double()
    return load_checked_state(model, state, source)


def load_dpmodel(path: str | Path) -> TensorModel:
    """A DeePMD-kit .dp/.yaml model file → a TensorModel (not yet in eval mode)."""
    return model_from_document(read_dpmodel(path), str(path))
