"""Checkpoints: format version + config + type_map + state_dict, loadable with
``torch.load(weights_only=True)`` and sufficient for inference on their own."""

from __future__ import annotations

import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from model.config import ModelConfig, parse_section
from model.deepmd_compat import is_deepmd_checkpoint, model_from_deepmd
from model.errors import CheckpointError, ConfigError
from model.tensor_model import DTYPES, TensorModel

FORMAT = "dptensor-model"
FORMAT_VERSION = 1
MAX_CHECKPOINT_BYTES = 2 * 1024**3
FROZEN_HINT = ("a frozen TorchScript .pth carries code, not weights, and is never loaded; convert it with "
               "DeePMD-kit: `dp convert-backend frozen.pth model.dp`, then use model.dp "
               "(or give the training checkpoint model.ckpt-N.pt)")


def model_summary(model: TensorModel) -> dict[str, Any]:
    return {
        "kind": model.kind,
        "type_map": model.type_map,
        "sel_type": model.sel_type,
        "rcut": model.rcut,
        "sel": model.sel,
        "precision": str(model.dtype).removeprefix("torch."),
    }


def save_checkpoint(path: str | Path, model: TensorModel, *, input_config: dict[str, Any] | None = None,
                    train_state: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **model_summary(model),
        "config": model.config.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "input": input_config,
        "train": train_state,
        "metrics": metrics or {},
    }
    save_payload(path, payload)


def save_payload(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save atomically (temp file + rename): a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True; every failure is a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: model file does not exist")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_CHECKPOINT_BYTES} bytes")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError,
            struct.error) as exc:  # struct.error: a few bytes of garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "constants.pkl" in str(exc) or "TorchScript" in str(exc) or "torch.jit" in str(exc):
            hint = f" ({FROZEN_HINT})"
        raise CheckpointError(f"{path}: not a loadable model file: {first}{hint}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: unexpected content ({type(ck).__name__}), expected a checkpoint dict")
    return ck


def model_from_checkpoint(ck: dict[str, Any]) -> TensorModel:
    if is_deepmd_checkpoint(ck):
        return model_from_deepmd(ck)
    if ck.get("format") != FORMAT:
        raise CheckpointError("neither a dptensor nor a DeePMD-kit checkpoint")
    if int(ck.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format {ck['format_version']} is newer than this dptensor "
                              f"(reads up to {FORMAT_VERSION}); upgrade dptensor")
    try:
        config = parse_section(ck["config"], ModelConfig, path="config")
    except ConfigError as exc:
        raise CheckpointError(f"invalid model config in checkpoint: {exc}") from None
    model = TensorModel(config)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"state_dict does not match its config: {str(exc).splitlines()[0]}") from None
    return model


def model_from_file(path: str | Path) -> TensorModel:
    """Any model file we accept → a TensorModel: our checkpoints, DeePMD-kit's .pt
    checkpoints, and DeePMD-kit's serialized models (.dp / .yaml)."""
    from model.dpmodel_file import is_dpmodel_file

    if is_dpmodel_file(path):
        from model.dpmodel_import import load_dpmodel

        return load_dpmodel(path)
    if Path(path).suffix.lower() == ".pth":
        raise CheckpointError(f"{path}: {FROZEN_HINT}")
    return model_from_checkpoint(read_checkpoint(path))


def load_model(path: str | Path, *, device: str | torch.device = "cpu", precision: str | None = None) -> TensorModel:
    """Our checkpoint, a DeePMD-kit one, or a DeePMD-kit .dp/.yaml → a model in eval mode on ``device``.
    ``precision`` ("float64"/"float32") overrides the precision the model was trained in."""
    model = model_from_file(path)
    if precision is not None:
        if precision not in DTYPES:
            raise CheckpointError(f"precision {precision!r} is not one of float64, float32")
        model.set_precision(DTYPES[precision])
    return model.to(device).eval()
