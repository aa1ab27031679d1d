"""We compute the same function as DeePMD-kit: its trained weights, its predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model import reference
from model.checkpoint import load_model
from model.errors import CheckpointError
from model.inference import predict

REF = Path(__file__).resolve().parents[3] / "shared" / "data" / "deepmd_reference"
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason=f"{REF} not present")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("task", ["dipole", "polar"])
@pytest.mark.parametrize("system", ["atomic_system", "global_system"])
def test_reproduces_deepmd_kit_predictions(task: str, system: str) -> None:
    ref = np.load(REF / task / "reference_predictions.npz", allow_pickle=False)
    model = load_model(REF / task / "model_slim.pt")
    assert model.kind == task and model.type_map == ["O", "H"] and model.sel_type == [0]
    box = ref[f"{system}__box"] if bool(ref[f"{system}__pbc"]) else None
    pred = predict(model, ref[f"{system}__coord"], ref[f"{system}__atype"], box)
    assert _rel(pred.atomic_tensor, ref[f"{system}__atomic_tensor"]) < 1e-8
    assert _rel(pred.global_tensor, ref[f"{system}__global_tensor"]) < 1e-8
    assert np.all(pred.atomic_tensor[:, ~ref[f"{system}__sel_mask"]] == 0.0)


def test_loader_agrees_with_naive_formula_on_deepmd_weights() -> None:
    """The key mapping of the loader, checked against a reader of the raw state dict."""
    ck = torch.load(REF / "polar" / "model_slim.pt", weights_only=True)
    ref = np.load(REF / "polar" / "reference_predictions.npz", allow_pickle=False)
    coord, atype, box = ref["global_system__coord"][:1], ref["global_system__atype"], ref["global_system__box"][:1]
    g, _ = reference.predict(reference.params_from_deepmd(ck, [0]), coord, atype, box)
    assert _rel(g, ref["global_system__global_tensor"][:1]) < 1e-10


def _mutated(tmp_path: Path, task: str, change) -> Path:
    ck = torch.load(REF / task / "model_slim.pt", weights_only=True)
    change(ck)
    path = tmp_path / "mutated.pt"
    torch.save(ck, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda ck: ck["model_params"]["descriptor"].update(type="se_e2_r"), "se_e2_a"),
        (lambda ck: ck["model_params"]["fitting_net"].update(numb_fparam=2), "numb_fparam"),
        (lambda ck: ck["model_params"]["descriptor"].update(exclude_types=[[0, 1]]), "exclude_types"),
        (lambda ck: ck["state_dict"].pop("model.Default.atomic_model.descriptor.sea.mean"), "mean"),
        (lambda ck: ck["model_params"]["descriptor"].update(neuron=[25, 50, 64]), "shape"),
    ],
)
def test_unsupported_or_inconsistent_deepmd_models_are_refused(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        load_model(_mutated(tmp_path, "dipole", change))


def test_deepmd_training_checkpoint_layout_loads(tmp_path: Path) -> None:
    """DeePMD-kit's own model.ckpt-N.pt layout: {"model": {..., "_extra_state": ...}}."""
    ck = torch.load(REF / "dipole" / "model_slim.pt", weights_only=True)
    full = {"model": {**ck["state_dict"], "_extra_state": {"model_params": ck["model_params"],
                                                          "train_infos": ck["train_infos"]}}}
    torch.save(full, tmp_path / "model.ckpt-2000.pt")
    ours = load_model(tmp_path / "model.ckpt-2000.pt")
    ref = np.load(REF / "dipole" / "reference_predictions.npz", allow_pickle=False)
    pred = predict(ours, ref["global_system__coord"][:2], ref["global_system__atype"], None)
    assert _rel(pred.global_tensor, ref["global_system__global_tensor"][:2]) < 1e-8
