"""dptensor train --init-model: a DeePMD-kit checkpoint (and our own files) as the start."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import load_model
from model.cli import main as dptensor
from model.config import load_input
from model.dpmodel_export import export_model
from model.errors import ConfigError
from model.evaluation import load_test_systems, score_system
from model.inference import predict
from model.init_model import initial_model

WATER = Path(__file__).resolve().parents[3] / "shared" / "data" / "water_tensor" / "dipole"
VARIANT = Path(__file__).resolve().parents[1] / "data" / "deepmd_variants" / "dipole_softplus"
pytestmark = pytest.mark.skipif(not WATER.is_dir(), reason=f"{WATER} not present")


def deepmd_checkpoint(path: Path) -> tuple[Path, dict[str, Any]]:
    """A model.ckpt-N.pt in DeePMD-kit's own layout, of a model DeePMD-kit trained 20 steps."""
    ck = torch.load(VARIANT / "model_slim.pt", weights_only=True)
    torch.save({"model": {**ck["state_dict"], "_extra_state": {"model_params": ck["model_params"],
                                                              "train_infos": ck["train_infos"]}}}, path)
    return path, ck["model_params"]


def input_for(model_params: dict[str, Any], steps: int) -> dict[str, Any]:
    raw = json.loads((WATER / "dipole_input_torch.json").read_text())
    raw["model"] = model_params
    for key in ("training_data", "validation_data"):
        raw["training"][key]["systems"] = [str(WATER / s) for s in raw["training"][key]["systems"]]
    raw["training"].update(numb_steps=steps, disp_freq=10, save_freq=steps, seed=1)
    raw["learning_rate"].update(start_lr=1e-3, stop_lr=1e-4, decay_steps=20)
    return raw


def _val_rmse(model_path: Path) -> float:
    model = load_model(model_path)
    systems = load_test_systems(model, WATER / "validation_data_reformat")
    scores = [score_system(model, s, None, None) for s in systems]
    rmse = [s.global_rmse for s in scores if s.global_rmse is not None]
    return float(np.mean(rmse))


def test_init_from_a_deepmd_kit_checkpoint_starts_at_its_predictions_and_improves(tmp_path: Path) -> None:
    ckpt, params = deepmd_checkpoint(tmp_path / "model.ckpt-20.pt")
    (tmp_path / "input.json").write_text(json.dumps(input_for(params, steps=60)))
    cfg, _ = load_input(tmp_path / "input.json")
    start = initial_model(cfg.model, ckpt)  # what training starts from: step 0
    ref = np.load(VARIANT / "predictions.npz")
    for frames in ("pbc", "open"):
        box = ref.get(f"{frames}__box", None)
        ours = predict(start.eval(), ref[f"{frames}__coord"], ref[f"{frames}__atype"], box)
        theirs = ref[f"{frames}__atomic"]
        assert np.abs(ours.atomic_tensor - theirs).max() <= 1e-10 * np.abs(theirs).max()
    before = _val_rmse(ckpt)
    assert dptensor(["train", str(tmp_path / "input.json"), "-o", str(tmp_path / "run"), "--init-model",
                     str(ckpt)]) == 0
    after = _val_rmse(tmp_path / "run" / "model.pt")
    assert after < before, (before, after)
    # statistics were taken from the source, not recomputed from the data
    trained, source = load_model(tmp_path / "run" / "model.pt"), load_model(ckpt)
    assert torch.equal(trained.descriptor.davg, source.descriptor.davg)


@pytest.mark.parametrize("suffix", [".dp", ".yaml", ".pt"])
def test_init_from_our_files_and_dp_yaml_gives_the_same_start(tmp_path: Path, suffix: str) -> None:
    ckpt, params = deepmd_checkpoint(tmp_path / "model.ckpt-20.pt")
    source = load_model(ckpt)
    if suffix == ".pt":
        from model.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "ours.pt", source)
        path = tmp_path / "ours.pt"
    else:
        path = export_model(source, tmp_path / f"model{suffix}")
    (tmp_path / "input.json").write_text(json.dumps(input_for(params, steps=2)))
    cfg, _ = load_input(tmp_path / "input.json")
    start = initial_model(cfg.model, path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(start.state_dict()[key], value, rtol=1e-15, atol=1e-15)


def test_another_architecture_is_an_error_naming_the_keys(tmp_path: Path) -> None:
    ckpt, params = deepmd_checkpoint(tmp_path / "model.ckpt-20.pt")
    params = json.loads(json.dumps(params))
    params["descriptor"]["neuron"] = [4, 8, 32]
    params["fitting_net"]["activation_function"] = "relu"
    (tmp_path / "input.json").write_text(json.dumps(input_for(params, steps=2)))
    with pytest.raises(ConfigError) as err:
        from model.train import train

        train(tmp_path / "input.json", tmp_path / "run", init_model=ckpt)
    message = str(err.value)
    assert "model.descriptor.neuron: input.json [4, 8, 32], init model [4, 8, 16]" in message
    assert "model.fitting_net.activation_function: input.json 'relu', init model 'tanh'" in message
    assert "rcut" not in message
