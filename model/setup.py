"""From a validated input.json to data and a ready-to-train model (types, sel, statistics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.batching import resolve_batch_sizes
from model.config import DataConfig, InputConfig, ModelConfig
from model.data import System, find_systems, load_systems, open_store, resolve_system_path
from model.errors import ConfigError, DataError
from model.keys import ATOMIC_LABEL, GLOBAL_LABEL
from model.stats import auto_sel, descriptor_stats, polar_diag_shift, stat_frames
from model.tensor_model import TensorModel


@dataclass
class TrainingData:
    train: list[System]
    valid: list[System]
    train_batch: list[int]
    valid_batch: list[int]


def _type_map_from_data(data: DataConfig, base: Path) -> list[str]:
    for entry in data.system_list():
        for path in find_systems(resolve_system_path(entry, base)):
            with open_store(path) as store:
                if store.has("type_map.raw"):
                    return store.read_words("type_map.raw")
    raise ConfigError("model.type_map is not given and no training system has a type_map.raw", path="model.type_map")


def resolve_model_config(cfg: InputConfig, base: Path) -> ModelConfig:
    """Fill in what DeePMD-kit infers: type_map from the data (when absent)."""
    if cfg.model.type_map is not None:
        return cfg.model
    type_map = _type_map_from_data(cfg.training.training_data, base)
    return cfg.model.model_copy(update={"type_map": type_map})


def _check_labels(systems: list[System], kind: str, pref: float, pref_atomic: float, section: str) -> None:
    for s in systems:
        usable = (pref > 0 and s.global_label is not None) or (pref_atomic > 0 and s.atomic_label is not None)
        if not usable:
            have = [n for n, a in ((GLOBAL_LABEL[kind], s.global_label), (ATOMIC_LABEL[kind], s.atomic_label))
                    if a is not None]
            raise DataError(
                f"{section}: no label this loss uses (found {have or 'none'}; loss.pref={pref}, "
                f"loss.pref_atomic={pref_atomic}: a zero pref drops that label)", path=s.path)


def load_training_data(cfg: InputConfig, model_cfg: ModelConfig, base: Path) -> TrainingData:
    assert model_cfg.type_map is not None
    kind = model_cfg.fitting_net.type
    sel_type = model_cfg.sel_type(len(model_cfg.type_map))
    tr = cfg.training
    train = load_systems(tr.training_data.system_list(), base, kind=kind, type_map=model_cfg.type_map,
                         sel_type=sel_type)
    valid = []
    if tr.validation_data is not None:
        valid = load_systems(tr.validation_data.system_list(), base, kind=kind, type_map=model_cfg.type_map,
                             sel_type=sel_type)
    _check_labels(train, kind, cfg.loss.pref, cfg.loss.pref_atomic, "training_data")
    _check_labels(valid, kind, cfg.loss.pref, cfg.loss.pref_atomic, "validation_data")
    train_bs = resolve_batch_sizes(tr.training_data.batch_size, train, "training.training_data.batch_size")
    valid_bs = (resolve_batch_sizes(tr.validation_data.batch_size, valid, "training.validation_data.batch_size")
                if tr.validation_data is not None else [])
    return TrainingData(train=train, valid=valid, train_batch=train_bs, valid_batch=valid_bs)


def resolve_sel(model_cfg: ModelConfig, systems: list[System]) -> ModelConfig:
    sel = model_cfg.descriptor.sel
    if isinstance(sel, list):
        return model_cfg
    factor = float(sel.split(":", 1)[1]) if ":" in sel else 1.1
    assert model_cfg.type_map is not None
    resolved = auto_sel(systems, len(model_cfg.type_map), model_cfg.descriptor.rcut, factor)
    desc = model_cfg.descriptor.model_copy(update={"sel": resolved})
    return model_cfg.model_copy(update={"descriptor": desc})


def build_model(model_cfg: ModelConfig, data: TrainingData) -> TensorModel:
    """A fresh model with environment statistics and the polar shift taken from the data."""
    model = TensorModel(model_cfg)
    frames = [stat_frames(s, model_cfg.data_stat_nbatch, b) for s, b in zip(data.train, data.train_batch, strict=True)]
    davg, dstd = descriptor_stats(model, data.train, frames, model_cfg.data_stat_protect,
                                  model_cfg.descriptor.set_davg_zero)
    model.descriptor.davg.copy_(davg)
    model.descriptor.dstd.copy_(dstd)
    if model.kind == "polar" and model_cfg.fitting_net.shift_diag:
        bias_frames = [stat_frames(s, model_cfg.data_bias_nsample, b)
                       for s, b in zip(data.train, data.train_batch, strict=True)]
        shift = polar_diag_shift(data.train, bias_frames, model.sel_type, model.ntypes)
        fit = model.fitting
        fit.shift_diag.copy_(torch.as_tensor(shift, dtype=fit.shift_diag.dtype) * fit.scale)
    return model


def sel_mask(system: System, sel_type: list[int]) -> np.ndarray:
    return np.isin(system.atype, sel_type)
