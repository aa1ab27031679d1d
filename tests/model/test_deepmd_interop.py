"""Models go to DeePMD-kit and come back, checked by DeePMD-kit itself (its pinned venv).

Out: for every configuration dptensor trains, ``dptensor train`` (a few steps) →
``dptensor export`` → ``dp convert-backend OUT.dp OUT.pth`` → DeepDipole/DeepPolar.eval
equals ``dptensor predict`` on periodic and open frames (≤ 1e-10 relative in float64).
In: the ``.dp``/``.yaml`` that DeePMD-kit makes from the reference models reproduces
DeePMD-kit's reference predictions. All DeePMD-kit work runs in one subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import load_model
from model.cli import main as dptensor
from model.data import load_system
from model.inference import predict
from model.system import System
from model.system_writer import write_system
from tests.deepmd_kit import require_deepmd, run_deepmd

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
WATER, REF = SHARED / "water_tensor", SHARED / "deepmd_reference"
# the fixture trains eight models and runs DeePMD-kit once (~2 min on a quiet 2-core machine)
pytestmark = [pytest.mark.skipif(not WATER.is_dir(), reason=f"{WATER} not present"), pytest.mark.timeout(3600)]

# name → (kind, descriptor overrides, fitting overrides, model overrides); together they
# cover type_one_side both ways, resnet_dt, sel_type / atom_exclude_types, fit_diag both
# ways, per-type scale, shift_diag both ways, float32 and every supported activation.
CONFIGS: dict[str, tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "dipole_tanh_one_side_sel_type": ("dipole", {}, {"sel_type": [0]}, {}),
    "dipole_relu_two_side_resnet_exclude": (
        "dipole", {"type_one_side": False, "resnet_dt": True, "activation_function": "relu"},
        {"activation_function": "relu", "resnet_dt": False}, {"atom_exclude_types": [1]}),
    "dipole_relu6_all_types": ("dipole", {"activation_function": "relu6"}, {"activation_function": "relu6"}, {}),
    "dipole_float32": ("dipole", {"precision": "float32"}, {"precision": "float32", "sel_type": [0]}, {}),
    "polar_diag_scale_softplus": (
        "polar", {"activation_function": "softplus"},
        {"fit_diag": True, "scale": [1.5, 0.7], "activation_function": "softplus", "sel_type": [0]}, {}),
    "polar_full_sigmoid_two_side": (
        "polar", {"type_one_side": False, "activation_function": "sigmoid"},
        {"fit_diag": False, "activation_function": "sigmoid"}, {"atom_exclude_types": [1]}),
    "polar_full_noshift_linear": (
        "polar", {"activation_function": "linear"},
        {"fit_diag": False, "shift_diag": False, "activation_function": "linear", "sel_type": [0]}, {}),
    "polar_diag_float32_all_types": (
        "polar", {"precision": "float32"}, {"fit_diag": True, "precision": "float32", "scale": [1.0, 2.0]}, {}),
}
YAML_TOO = "dipole_tanh_one_side_sel_type"  # also exported as .yaml and converted from it
FRAMES = {"pbc": WATER / "polar" / "validation_data_reformat" / "global_system",
          "open": WATER / "dipole" / "validation_data_reformat" / "global_system"}


def training_input(kind: str, desc: dict[str, Any], fit: dict[str, Any], top: dict[str, Any],
                   steps: int = 2) -> dict[str, Any]:
    system = WATER / kind / "training_data_reformat" / "global_system"
    return {
        "model": {"type_map": ["O", "H"],
                  "descriptor": {"type": "se_e2_a", "sel": [24, 48], "rcut": 4.0, "rcut_smth": 3.5,
                                 "neuron": [4, 8], "axis_neuron": 4, "seed": 1, **desc},
                  "fitting_net": {"type": kind, "neuron": [8, 8], "seed": 2, **fit},
                  "data_stat_nbatch": 2, "data_bias_nsample": 2, **top},
        "learning_rate": {"start_lr": 1e-3, "decay_steps": 2},
        "loss": {"type": "tensor", "pref": 1.0, "pref_atomic": 0.0},
        "training": {"training_data": {"systems": [str(system)], "batch_size": 1}, "numb_steps": steps,
                     "seed": 3, "disp_freq": 1, "save_freq": steps},
    }


def _frames(work: Path) -> dict[str, tuple[Path, Path]]:
    """3 frames each of periodic and open water, as a DeePMD system and as an npz."""
    out = {}
    for name, source in FRAMES.items():
        full = load_system(source, type_map=["O", "H"])
        small = System(path=full.path, atype=full.atype, coord=np.array(full.coord[:3]),
                           box=None if full.box is None else np.array(full.box[:3]), type_names=["O", "H"])
        folder = Path(write_system(work / "frames" / name, small))
        arrays = {"coord": small.coord, "atype": small.atype}
        if small.box is not None:
            arrays["box"] = small.box
        np.savez(work / "frames" / f"{name}.npz", **arrays)
        out[name] = (folder, work / "frames" / f"{name}.npz")
    return out


def _reference_checkpoint(task: str, path: Path) -> Path:
    """DeePMD-kit's own training-checkpoint layout, rebuilt from the slim reference file."""
    ck = torch.load(REF / task / "model_slim.pt", weights_only=True)
    torch.save({"model": {**ck["state_dict"], "_extra_state": {"model_params": ck["model_params"],
                                                              "train_infos": ck["train_infos"]}}}, path)
    return path


@pytest.fixture(scope="module")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_deepmd()
    work = tmp_path_factory.mktemp("interop")
    frames = _frames(work)
    job: dict[str, list[Any]] = {"convert": [], "eval": []}
    for name, (kind, desc, fit, top) in CONFIGS.items():
        run = work / name
        run.mkdir()
        (run / "input.json").write_text(json.dumps(training_input(kind, desc, fit, top)))
        assert dptensor(["train", str(run / "input.json"), "-o", str(run)]) == 0
        suffixes = (".dp", ".yaml") if name == YAML_TOO else (".dp",)
        for suffix in suffixes:
            assert dptensor(["export", str(run / "model.pt"), "-o", str(run / f"model{suffix}")]) == 0
            pth = run / f"from{suffix.replace('.', '_')}.pth"
            job["convert"].append([str(run / f"model{suffix}"), str(pth)])
            for frame, (_, npz) in frames.items():
                job["eval"].append({"model": str(pth), "kind": kind, "frames": str(npz),
                                    "out": str(run / f"deepmd{suffix.replace('.', '_')}_{frame}.npz")})
        for frame, (folder, _) in frames.items():
            assert dptensor(["predict", "-m", str(run / "model.pt"), "-s", str(folder),
                             "-o", str(run / f"dptensor_{frame}.npz")]) == 0
    for task in ("dipole", "polar"):  # into dptensor: DeePMD-kit writes .dp (and .yaml) itself
        ckpt = _reference_checkpoint(task, work / f"reference_{task}.pt")
        job["convert"].append([str(ckpt), str(work / f"reference_{task}.dp")])
    job["convert"].append([str(work / "reference_dipole.pt"), str(work / "reference_dipole.yaml")])
    run_deepmd(job, work)
    return work


def _rel(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("frame", sorted(FRAMES))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_deepmd_kit_evaluates_the_exported_model_as_dptensor_predicts(interop: Path, name: str, frame: str) -> None:
    run = interop / name
    ours = np.load(run / f"dptensor_{frame}.npz")
    single = "float32" in name  # both sides compute in float32: agreement to its rounding
    tol = 1e-5 if single else 1e-10
    for suffix in (("_dp", "_yaml") if name == YAML_TOO else ("_dp",)):
        theirs = np.load(run / f"deepmd{suffix}_{frame}.npz")
        assert np.abs(theirs["atomic"]).max() > 1e-4  # a non-trivial model
        atomic, glob = _rel(ours["atomic"], theirs["atomic"]), _rel(ours["global"], theirs["global"])
        with (interop / "measured.jsonl").open("a") as log:  # the numbers behind the README's claim
            log.write(json.dumps({"config": name, "frames": frame, "via": suffix, "atomic": atomic,
                                  "global": glob}) + "\n")
        assert atomic <= tol and glob <= tol
    model = load_model(run / "model.pt")
    excluded = ~np.isin(ours["atype"], model.sel_type)
    if excluded.any():  # excluded atoms carry exactly zero on both sides
        assert np.all(theirs["atomic"][:, excluded] == 0.0) and np.all(ours["atomic"][:, excluded] == 0.0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_exported_file_loads_back_into_dptensor(interop: Path, name: str) -> None:
    run = interop / name
    frames = np.load(interop / "frames" / "pbc.npz")
    a = predict(load_model(run / "model.pt"), frames["coord"], frames["atype"], frames["box"])
    b = predict(load_model(run / "model.dp"), frames["coord"], frames["atype"], frames["box"])
    assert _rel(b.atomic_tensor, a.atomic_tensor) <= 1e-14  # shift·scale/scale: rounding only


@pytest.mark.parametrize("source", ["dipole.dp", "dipole.yaml", "polar.dp"])
@pytest.mark.parametrize("system", ["atomic_system", "global_system"])
def test_deepmd_kits_own_dp_and_yaml_reproduce_its_reference_predictions(interop: Path, source: str,
                                                                          system: str) -> None:
    task = source.split(".")[0]
    ref = np.load(REF / task / "reference_predictions.npz", allow_pickle=False)
    model = load_model(interop / f"reference_{source}")
    box = ref[f"{system}__box"] if bool(ref[f"{system}__pbc"]) else None
    pred = predict(model, ref[f"{system}__coord"], ref[f"{system}__atype"], box)
    assert _rel(pred.atomic_tensor, ref[f"{system}__atomic_tensor"]) <= 1e-10
    assert _rel(pred.global_tensor, ref[f"{system}__global_tensor"]) <= 1e-10
