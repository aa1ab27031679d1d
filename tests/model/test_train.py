"""Training from DeePMD-kit inputs: loss falls, lcurve.out, checkpoints, exact restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model.checkpoint import load_model, read_checkpoint
from model.config import load_input
from model.setup import build_model, load_training_data, resolve_model_config, resolve_sel
from model.train import train

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "water_tensor"


def tiny_input(task: str = "dipole", steps: int = 30, **training: Any) -> dict[str, Any]:
    """The example input with a small network, absolute system paths and few steps."""
    name = "dipole_input_torch.json" if task == "dipole" else "polar_input_torch.json"
    raw = json.loads((EXAMPLES / task / name).read_text())
    raw["model"]["descriptor"].update(neuron=[4, 8], axis_neuron=4, sel=[46, 92])
    raw["model"]["fitting_net"]["neuron"] = [16, 16]
    for key in ("training_data", "validation_data"):
        data = raw["training"][key]
        data["systems"] = [str(EXAMPLES / task / s) for s in data["systems"]]
    raw["training"].update(numb_steps=steps, disp_freq=10, save_freq=10, **training)
    return raw


@pytest.mark.parametrize("task", ["dipole", "polar"])
def test_example_inputs_load_their_data_unchanged(task: str) -> None:
    name = "dipole_input_torch.json" if task == "dipole" else "polar_input_torch.json"
    cfg, base = load_input(EXAMPLES / task / name)  # relative paths resolved against the file
    data = load_training_data(cfg, resolve_model_config(cfg, base), base)
    assert len(data.train) == 2 and len(data.valid) == 2
    assert data.train_batch == [1, 1]  # "auto": ceil(32 / 192 atoms)
    assert {s.global_label is None for s in data.train} == {True, False}


def test_polar_shift_and_statistics_come_from_the_data() -> None:
    cfg, base = load_input(EXAMPLES / "polar" / "polar_input_torch.json")
    mc = resolve_model_config(cfg, base)
    data = load_training_data(cfg, mc, base)
    model = build_model(resolve_sel(mc, data.train), data)
    # DeePMD-kit's trained reference has a diagonal bias mean of 1.944 for O
    assert float(model.fitting.shift_diag[0]) == pytest.approx(1.944, abs=0.03)
    assert float(model.descriptor.dstd[0, 0, 0]) == pytest.approx(0.1618, rel=0.03)


def test_training_loss_falls_and_lcurve_has_the_documented_columns(tmp_path: Path) -> None:
    def raw(steps: int) -> dict[str, Any]:
        out = tiny_input(steps=steps)
        out["learning_rate"]["stop_lr"] = 1e-3  # a 60-step run needs a gentle decay
        return out

    start = train(raw(1), tmp_path / "start")
    result = train(raw(60), tmp_path)
    lines = (tmp_path / "lcurve.out").read_text().splitlines()
    assert lines[0].split()[1:] == ["step", "rmse_val", "rmse_trn", "rmse_lc_val", "rmse_lc_trn",
                                    "rmse_gl_val", "rmse_gl_trn", "lr"]
    rows = np.genfromtxt(tmp_path / "lcurve.out")
    assert rows[:, 0].tolist() == [1, 10, 20, 30, 40, 50, 60]
    # every row misses either the atomic or the global training column: the batch has one label kind
    assert np.all(np.isnan(rows[:, 4]) ^ np.isnan(rows[:, 6]))
    # validation errors over all validation frames, after 1 and after 60 steps (an
    # untrained model already points the global dipole right; the atomic error shows learning)
    assert result.metrics["val_rmse_atomic"] < 0.6 * start.metrics["val_rmse_atomic"]
    assert result.metrics["val_rmse"] < start.metrics["val_rmse"]
    assert result.steps_done == 60 and not result.cancelled
    assert result.model_path.is_file()


def test_checkpoints_follow_save_freq_and_keep_limit(tmp_path: Path) -> None:
    train(tiny_input(steps=30, max_ckpt_keep=2), tmp_path)
    names = sorted(p.name for p in tmp_path.glob("model.ckpt-*.pt"))
    assert names == ["model.ckpt-20.pt", "model.ckpt-30.pt"]
    assert (tmp_path / "model.ckpt.pt").resolve().name == "model.ckpt-30.pt"
    ck = read_checkpoint(tmp_path / "model.ckpt-20.pt")
    assert ck["train"]["step"] == 20 and "optimizer" in ck["train"]


def test_restart_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    raw = tiny_input(steps=20)
    full = train(raw, tmp_path / "full")
    polls = [0]

    def stop_at_step_7() -> bool:  # polled once per step
        polls[0] += 1
        return polls[0] >= 7

    stopped = train(raw, tmp_path / "part", should_stop=stop_at_step_7)
    assert stopped.cancelled and stopped.steps_done == 7
    resumed = train(raw, tmp_path / "part", restart=tmp_path / "part" / "model.ckpt-7.pt")
    assert resumed.steps_done == 20
    a = load_model(full.model_path).state_dict()
    b = load_model(resumed.model_path).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = np.genfromtxt(tmp_path / "part" / "lcurve.out")[:, 0].tolist()
    assert steps == [1, 8, 10, 20]  # the restarted run appends after step 7


def test_resume_from_an_older_checkpoint_keeps_each_lcurve_step_once_in_order(tmp_path: Path) -> None:
    # the first attempt got past its last checkpoint (20) before it died: rows 21..30 and
    # checkpoint 30 exist; resuming from 20 must not leave rows 25, 30 twice (nor 21 after 30)
    raw = tiny_input(steps=30, max_ckpt_keep=3)
    raw["training"]["disp_freq"] = 5
    train(raw, tmp_path)
    assert np.genfromtxt(tmp_path / "lcurve.out")[-1, 0] == 30
    raw["training"]["numb_steps"] = 40
    train(raw, tmp_path, restart=tmp_path / "model.ckpt-20.pt")
    steps = np.genfromtxt(tmp_path / "lcurve.out")[:, 0].tolist()
    assert steps == [1, 5, 10, 15, 20, 21, 25, 30, 35, 40]


def test_max_ckpt_keep_holds_across_attempts(tmp_path: Path) -> None:
    raw = tiny_input(steps=20, max_ckpt_keep=2)
    train(raw, tmp_path)
    raw["training"]["numb_steps"] = 50
    train(raw, tmp_path, restart=tmp_path / "model.ckpt.pt")
    names = sorted(p.name for p in tmp_path.glob("model.ckpt-*.pt"))
    assert names == ["model.ckpt-40.pt", "model.ckpt-50.pt"]


def test_restart_needs_a_training_checkpoint(tmp_path: Path) -> None:
    from model.errors import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny_input(steps=2), tmp_path, restart=tmp_path / "missing.pt")


def test_data_without_usable_labels_is_rejected(tmp_path: Path) -> None:
    from model.errors import DataError

    raw = tiny_input(steps=2)
    raw["loss"]["pref"] = 0.0  # the global system then has no label the loss uses
    with pytest.raises(DataError, match="no label this loss uses"):
        train(raw, tmp_path)


def test_environment_cache_gives_the_same_loss_and_stays_bounded() -> None:
    from model.batching import BatchSampler
    from model.train import EnvCache, _loss

    cfg, base = load_input(tiny_input(steps=2))
    mc = resolve_model_config(cfg, base)
    data = load_training_data(cfg, mc, base)
    model = build_model(resolve_sel(mc, data.train), data)
    sampler = BatchSampler(data.train, data.train_batch, seed=1)
    cache = EnvCache(max_pairs=1)  # holds a single batch at a time
    first, second = sampler.batch_at(1), sampler.batch_at(2)
    plain = float(_loss(model, first, cfg).loss.detach())
    assert float(_loss(model, first, cfg, cache).loss.detach()) == plain
    assert float(_loss(model, first, cfg, cache).loss.detach()) == plain  # served from the cache
    _loss(model, second, cfg, cache)
    assert len(cache.items) == 1 and cache.pairs > 0


def test_hdf5_systems_train_to_the_same_lcurve_as_npy(tmp_path: Path) -> None:
    """The example systems converted to DeePMD-kit's HDF5 layout (as dpdata's deepmd/hdf5
    writes it) give the same run, row for row, with the same seed."""
    from model.data import find_systems, load_system
    from model.system_writer import write_system

    raw = tiny_input("polar", steps=20, seed=5)
    hdf5_raw = json.loads(json.dumps(raw))
    h5 = tmp_path / "water.hdf5"
    for key in ("training_data", "validation_data"):
        converted = []
        for entry in raw["training"][key]["systems"]:
            for folder in find_systems(entry):
                name = f"{key}/{Path(folder).name}"
                write_system(f"{h5}#/{name}", load_system(folder, kind="polar", sel_type=[0]), kind="polar",
                             sel_type=[0])
                converted.append(f"{h5}#/{name}")
        hdf5_raw["training"][key]["systems"] = converted
    npy = train(raw, tmp_path / "npy")
    hdf5 = train(hdf5_raw, tmp_path / "hdf5")
    a = (tmp_path / "npy" / "lcurve.out").read_text()
    b = (tmp_path / "hdf5" / "lcurve.out").read_text()
    assert len(a.splitlines()) >= 5 and a == b  # header lines + rows at steps 1, 10, 20
    assert npy.metrics == hdf5.metrics
