"""A TensorModel → DeePMD-kit 3.x's backend-independent model tree.

The tree is what ``dp convert-backend`` reads and writes (``.dp``/``.yaml``, see
``model.dpmodel_file``): a ``Model`` node (``@class``/``@version``, ``type_map``, atom
exclusions, ``out_bias``/``out_std``) holding a ``se_e2_a`` ``Descriptor`` (per-slot
``davg``/``dstd`` [nt, Σsel, 4], embedding ``NetworkCollection``) and a dipole/polar
``Fitting`` (one ``FittingNetwork`` per type, ``bias_atom_e``; polar: ``scale`` [nt, 1],
``constant_matrix`` [nt]). Arrays are numpy leaves under ``@variables`` keys; the file
writers turn them into HDF5 datasets or inline lists.

Two of our storage choices are undone on the way out: the polar output layer is held as
the packed symmetric half (unpacked to the full, symmetric M1×M1), and the diagonal shift
is held as shift·scale (written as DeePMD-kit's ``out_bias`` diagonal, whose mean DeePMD-kit
multiplies by scale again). Fitting nets of excluded types, which we never build, are
written as zeros: DeePMD-kit masks their output.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.fitting import triu_pack_indices
from model.nets import MLP
from model.tensor_model import TensorModel

NET_LAYER_VERSION = 2
FITTING_VERSION = {"dipole": 4, "polar": 5}
DESCRIPTOR_VERSION = 2
MODEL_VERSION = 2


def _precision(dtype: torch.dtype) -> str:
    return "float64" if dtype == torch.float64 else "float32"


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def _layer(w: np.ndarray, b: np.ndarray, idt: np.ndarray | None, activation: str, resnet: bool,
           precision: str) -> dict[str, Any]:
    return {"@class": "Layer", "@version": NET_LAYER_VERSION, "bias": True, "use_timestep": idt is not None,
            "activation_function": activation, "resnet": resnet, "precision": precision, "trainable": True,
            "@variables": {"w": w, "b": b, "idt": idt}}


def _hidden_layers(net: MLP, activation: str, precision: str) -> list[dict[str, Any]]:
    return [_layer(_np(layer.matrix), _np(layer.bias), None if layer.idt is None else _np(layer.idt),
                   activation, True, precision)
            for layer in list(net.layers)[: net.n_hidden]]


def _embeddings(model: TensorModel, precision: str) -> dict[str, Any]:
    d = model.descriptor
    networks = []
    for net in d.embeddings:
        assert isinstance(net, MLP)
        networks.append({"@class": "EmbeddingNetwork", "@version": 2, "in_dim": 1,
                         "neuron": list(model.config.descriptor.neuron), "activation_function": d.activation,
                         "resnet_dt": model.config.descriptor.resnet_dt, "bias": True, "precision": precision,
                         "layers": _hidden_layers(net, d.activation, precision)})
    return {"@class": "NetworkCollection", "@version": 1, "ndim": 1 if d.type_one_side else 2,
            "ntypes": model.ntypes, "network_type": "embedding_network", "networks": networks}


def _per_slot(stat: torch.Tensor, sel: list[int]) -> np.ndarray:
    """[nt, nt, 4] per (centre type, neighbour type) → [nt, Σsel, 4] per neighbour slot."""
    return np.concatenate([np.repeat(_np(stat[:, tj:tj + 1]), n, axis=1) for tj, n in enumerate(sel)], axis=1)


def _descriptor(model: TensorModel) -> dict[str, Any]:
    cfg, d = model.config.descriptor, model.descriptor
    precision = _precision(d.dtype)
    return {
        "@class": "Descriptor", "type": "se_e2_a", "@version": DESCRIPTOR_VERSION,
        "rcut": float(cfg.rcut), "rcut_smth": float(cfg.rcut_smth), "sel": list(model.sel),
        "neuron": list(cfg.neuron), "axis_neuron": cfg.axis_neuron, "resnet_dt": cfg.resnet_dt,
        "set_davg_zero": cfg.set_davg_zero, "activation_function": d.activation, "precision": precision,
        "embeddings": _embeddings(model, precision),
        "env_mat": {"rcut": float(cfg.rcut), "rcut_smth": float(cfg.rcut_smth), "protection": 0.0,
                    "use_exp_switch": False},
        "exclude_types": [], "env_protection": 0.0,
        "@variables": {"davg": _per_slot(d.davg, model.sel), "dstd": _per_slot(d.dstd, model.sel)},
        "type_map": list(model.type_map), "trainable": True, "type_one_side": d.type_one_side, "spin": None,
    }


def _unpack(packed: np.ndarray, m1: int) -> np.ndarray:
    """[..., M1(M1+1)/2] packed upper triangle → [..., M1²] full symmetric matrix."""
    mn, nm = (i.numpy() for i in triu_pack_indices(m1))
    full = np.zeros((*packed.shape[:-1], m1 * m1), dtype=packed.dtype)
    full[..., mn] = packed
    full[..., nm] = packed
    return full


def _fitting_networks(model: TensorModel, precision: str) -> list[dict[str, Any]]:
    fit, cfg = model.fitting, model.config.fitting_net
    out_dim = fit.m1 * fit.m1 if fit.packed else fit.m1
    networks = []
    for t in range(model.ntypes):
        if t in model.sel_type:
            net = fit.nets[str(t)]
            assert isinstance(net, MLP)
            layers = _hidden_layers(net, fit_activation(model), precision)
            last = net.layers[net.n_hidden]
            w, b = _np(last.matrix), _np(last.bias)
            if fit.packed:
                w, b = _unpack(w, fit.m1), _unpack(b, fit.m1)
        else:  # excluded type: never built here, masked out by DeePMD-kit
            template = fit.nets[str(model.sel_type[0])]
            assert isinstance(template, MLP)
            layers = [_zeros_like_layer(lay) for lay in _hidden_layers(template, fit_activation(model), precision)]
            w = np.zeros((cfg.neuron[-1], out_dim), dtype=layers[0]["@variables"]["w"].dtype)
            b = np.zeros(out_dim, dtype=w.dtype)
        layers.append(_layer(w, b, None, "none", False, precision))
        networks.append({"@class": "FittingNetwork", "@version": 1, "in_dim": model.descriptor.dim_out,
                         "out_dim": out_dim, "neuron": list(cfg.neuron), "activation_function": fit_activation(model),
                         "resnet_dt": cfg.resnet_dt, "precision": precision, "bias_out": True, "layers": layers})
    return networks


def _zeros_like_layer(layer: dict[str, Any]) -> dict[str, Any]:
    variables = {k: None if v is None else np.zeros_like(v) for k, v in layer["@variables"].items()}
    return {**layer, "@variables": variables}


def fit_activation(model: TensorModel) -> str:
    return model.config.fitting_net.activation_function


def excluded_types(model: TensorModel) -> list[int]:
    return [t for t in range(model.ntypes) if t not in model.sel_type]


def _fitting(model: TensorModel) -> dict[str, Any]:
    fit, cfg, kind = model.fitting, model.config.fitting_net, model.kind
    precision = _precision(fit.dtype)
    bias = _np(fit.bias_atom_e)
    if fit.packed:
        bias = _unpack(bias, fit.m1)
    node: dict[str, Any] = {
        "@class": "Fitting", "@version": FITTING_VERSION[kind], "var_name": kind, "ntypes": model.ntypes,
        "dim_descrpt": model.descriptor.dim_out, "neuron": list(cfg.neuron), "resnet_dt": cfg.resnet_dt,
        "numb_fparam": 0, "numb_aparam": 0, "dim_case_embd": 0, "default_fparam": None,
        "activation_function": fit_activation(model), "precision": precision, "mixed_types": False,
        "nets": {"@class": "NetworkCollection", "@version": 1, "ndim": 1, "ntypes": model.ntypes,
                 "network_type": "fitting_network", "networks": _fitting_networks(model, precision)},
        "rcond": None, "exclude_types": excluded_types(model),
        "@variables": {"bias_atom_e": bias, "case_embd": None, "fparam_avg": None, "fparam_inv_std": None,
                       "aparam_avg": None, "aparam_inv_std": None},
        "type_map": list(model.type_map), "tot_ener_zero": False, "trainable": [True] * (len(cfg.neuron) + 1),
        "layer_name": None, "use_aparam_as_mask": False, "spin": None, "type": kind,
        "embedding_width": fit.m1,
    }
    if kind == "dipole":
        node.update(r_differentiable=True, c_differentiable=True)
    else:
        node.update(fit_diag=fit.fit_diag, shift_diag=_has_shift(model))
        node["@variables"]["scale"] = _np(fit.scale).astype(np.float64).reshape(-1, 1)
        node["@variables"]["constant_matrix"] = np.zeros(model.ntypes)
    return node


def _has_shift(model: TensorModel) -> bool:
    """Whether the diagonal shift is applied: as configured, or wherever it is nonzero
    (the model adds whatever it holds, so the export must too)."""
    if model.kind != "polar":
        return False
    return model.config.fitting_net.shift_diag or bool((model.fitting.shift_diag != 0).any())


def _out_bias(model: TensorModel) -> np.ndarray:
    """[1, nt, dim]: DeePMD-kit adds mean(diag(out_bias[t]))·scale[t]·I to polar atoms of
    type t (dipole models ignore it); ours holds that product, so divide scale back out."""
    bias = np.zeros((1, model.ntypes, model.dim))
    fit = model.fitting
    if _has_shift(model):
        scale, shift = _np(fit.scale).astype(np.float64), _np(fit.shift_diag).astype(np.float64)
        per_type = np.divide(shift, scale, out=np.zeros_like(shift), where=scale != 0)
        for k in (0, 4, 8):  # xx, yy, zz
            bias[0, :, k] = per_type
    return bias


def model_def_script(model: TensorModel) -> dict[str, Any]:
    """The model section of a DeePMD-kit input that builds this architecture."""
    cfg = model.config.to_json()
    fit = cfg["fitting_net"]
    fit.pop("sel_type", None)  # said once, as DeePMD-kit 3 does: atom_exclude_types
    for key in ("seed",):
        fit.pop(key, None)
        cfg["descriptor"].pop(key, None)
    cfg["descriptor"]["sel"] = list(model.sel)
    cfg["atom_exclude_types"] = excluded_types(model)
    if model.kind == "polar":
        fit["scale"] = _np(model.fitting.scale).astype(np.float64).tolist()
    return cfg


def to_dpmodel(model: TensorModel, *, software_version: str) -> dict[str, Any]:
    """The whole serialized-model document (top level of a .dp/.yaml file)."""
    root = {
        "type_map": list(model.type_map), "atom_exclude_types": excluded_types(model), "pair_exclude_types": [],
        "rcond": None, "preset_out_bias": None,
        "@variables": {"out_bias": _out_bias(model), "out_std": np.ones((1, model.ntypes, model.dim))},
        "@class": "Model", "@version": MODEL_VERSION, "type": "standard",
        "descriptor": _descriptor(model), "fitting": _fitting(model),
    }
    return {"backend": "dptensor", "software": "dptensor", "version": software_version,
            "time": str(datetime.datetime.now(tz=datetime.UTC)), "model": root,
            "model_def_script": model_def_script(model), "@variables": {}}


def dptensor_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dptensor")
    except PackageNotFoundError:
        return "unknown"


def export_model(model: TensorModel, path: str | Path) -> Path:
    """Write ``model`` as DeePMD-kit's serialized model: ``.dp`` (HDF5) or ``.yaml``."""
    from model.dpmodel_file import write_dpmodel

    return write_dpmodel(path, to_dpmodel(model, software_version=dptensor_version()))
