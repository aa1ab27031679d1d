"""dptensor's model library: DeePMD-kit se_e2_a dipole/polarizability models in pure PyTorch.

Public API::

    from model import load_model, predict, train
    m = load_model("model.pt")                       # ours or a DeePMD-kit checkpoint
    res = predict(m, coord, atype, box)              # res.global_tensor, res.atomic_tensor
    result = train("input.json", "out/")             # DeePMD-kit input.json, unchanged
"""

from model.checkpoint import load_model, save_checkpoint
from model.errors import CheckpointError, ConfigError, DataError, DptensorError
from model.inference import Prediction, iter_predict, predict, save_predictions_npz
from model.tensor_model import TensorModel, TensorOutput
from model.train import TrainProgress, TrainResult, train

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DptensorError",
    "Prediction",
    "TensorModel",
    "TensorOutput",
    "TrainProgress",
    "TrainResult",
    "iter_predict",
    "load_model",
    "predict",
    "save_checkpoint",
    "save_predictions_npz",
    "train",
]
