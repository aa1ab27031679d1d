"""dptensor's model library: DeePMD-kit se_e2_a dipole/polarizability models in pure PyTorch.

Public API::

    from model import load_model, predict, train
    m = load_model("model.pt")                       # ours or a DeePMD-kit checkpoint
    res = predict(m, coord, atype, box)              # res.global_tensor, res.atomic_tensor
    result = train("input.json", "out/")             # DeePMD-kit input.json, unchanged

Attributes are imported lazily: ``model.config``, ``model.data``, ``model.errors`` and
``model.keys`` need only numpy/pydantic, so the web API can validate inputs with the very
same rules without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CheckpointError": "model.errors",
    "ConfigError": "model.errors",
    "DataError": "model.errors",
    "DptensorError": "model.errors",
    "load_model": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "Prediction": "model.inference",
    "iter_predict": "model.inference",
    "predict": "model.inference",
    "save_predictions_npz": "model.inference",
    "TensorModel": "model.tensor_model",
    "TensorOutput": "model.tensor_model",
    "TrainProgress": "model.train",
    "TrainResult": "model.train",
    "train": "model.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
