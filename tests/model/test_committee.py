"""Committees: batched members equal separate members, a committee of one is the model,
mean equivariant, deviations invariant, files, predict outputs, training, selection."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from model.checkpoint import save_checkpoint
from model.cli import main
from model.committee import Committee, deviation, load_predictor, save_committee
from model.committee_train import member_input, train_committee
from model.config import ModelConfig, parse_section
from model.data import load_system
from model.errors import CheckpointError, ConfigError
from model.inference import predict, save_predictions_npz
from model.select import frame_deviation, select, write_candidates
from model.tensor_model import TensorModel
from tests.model.conftest import random_frames
from tests.model.test_train import tiny_input


def member(kind: str, seed: int, **fit: Any) -> TensorModel:
    """A small model whose weights, statistics and biases all depend on ``seed``."""
    desc = {"type": "se_e2_a", "sel": [24, 24], "rcut": 3.2, "rcut_smth": 1.5, "neuron": [4, 8, 16],
            "axis_neuron": 3, "type_one_side": False, "resnet_dt": True, "seed": seed}
    net = {"type": kind, "neuron": [12, 12], "resnet_dt": True, "seed": seed + 100, **fit}
    model = TensorModel(parse_section({"type_map": ["O", "H"], "descriptor": desc, "fitting_net": net}, ModelConfig))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.descriptor.davg[..., 0] = 0.2 + 0.1 * torch.rand(2, 2, generator=g, dtype=torch.float64)
        dstd = 0.3 + 0.2 * torch.rand(model.descriptor.dstd.shape, generator=g, dtype=torch.float64)
        dstd[..., 2:] = dstd[..., 1:2]  # one pooled angular std (as DeePMD-kit): keeps equivariance
        model.descriptor.dstd.copy_(dstd)
        model.fitting.bias_atom_e.normal_(generator=g)
        if kind == "polar":
            model.fitting.shift_diag.uniform_(generator=g)
    return model.eval()


def system_folder(folder: Path, nf: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, Path]:
    """Random periodic O/H frames written as a DeePMD system (coord, atype, box, folder)."""
    coord, atype, box = random_frames(nf, 18, 2, box_len=5.0, seed=seed)
    assert box is not None
    (folder / "set.000").mkdir(parents=True)
    np.savetxt(folder / "type.raw", atype, fmt="%d")
    (folder / "type_map.raw").write_text("O\nH\n")
    np.save(folder / "set.000" / "coord.npy", coord.reshape(nf, -1))
    np.save(folder / "set.000" / "box.npy", box.reshape(nf, 9))
    return coord, atype, box, folder


HEADS = [("dipole", {}), ("polar", {"fit_diag": False}), ("polar", {"fit_diag": True})]


def _run(model: torch.nn.Module, coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None) -> Any:
    with torch.inference_mode():
        return model(torch.tensor(coord), torch.tensor(atype), None if box is None else torch.tensor(box))


@pytest.mark.parametrize(("kind", "fit"), HEADS)
def test_batched_members_equal_each_member_run_alone(kind: str, fit: dict[str, Any]) -> None:
    models = [member(kind, s, **fit) for s in range(3)]
    coord, atype, box = random_frames(3, 30, 2, box_len=5.0, seed=3)
    committee = Committee(models).eval()
    assert committee.batched
    out = _run(committee, coord, atype, box)
    alone = torch.stack([_run(m, coord, atype, box).atomic for m in models])
    torch.testing.assert_close(out.member_atomic, alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.atomic, alone.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.global_, alone.sum(2).mean(0), rtol=1e-12, atol=1e-12)
    # the members really differ, so the test above compares distinct functions
    assert (alone[0] - alone[1]).abs().max() > 1e-3


def test_members_of_different_architectures_still_form_a_committee() -> None:
    models = [member("dipole", 0), member("dipole", 1, neuron=[8, 8])]
    committee = Committee(models).eval()
    assert not committee.batched
    coord, atype, box = random_frames(2, 20, 2, box_len=5.0, seed=4)
    out = _run(committee, coord, atype, box)
    torch.testing.assert_close(out.member_atomic[1], _run(models[1], coord, atype, box).atomic)


def test_committee_of_one_equals_the_single_model_bit_for_bit(tmp_path: Path) -> None:
    model = member("polar", 7, fit_diag=False)
    save_checkpoint(tmp_path / "m.pt", model)
    save_committee(tmp_path / "c1.pt", [tmp_path / "m.pt"])
    coord, atype, box = random_frames(5, 24, 2, box_len=5.0, seed=5)
    single = load_predictor(tmp_path / "m.pt")
    one = load_predictor(tmp_path / "c1.pt")
    assert isinstance(one, Committee) and one.size == 1 and not isinstance(single, Committee)
    a = save_predictions_npz(tmp_path / "a.npz", single, coord, atype, box)
    b = save_predictions_npz(tmp_path / "b.npz", one, coord, atype, box)
    with np.load(a) as za, np.load(b) as zb:
        assert np.array_equal(za["global"], zb["global"]) and np.array_equal(za["atomic"], zb["atomic"])
        assert not zb["devi_global"].any() and not zb["atomic_std"].any()


@pytest.mark.parametrize(("kind", "fit"), HEADS)
def test_mean_is_equivariant_and_deviations_are_rotation_invariant(kind: str, fit: dict[str, Any]) -> None:
    committee = Committee([member(kind, s, **fit) for s in range(4)]).eval()
    coord, atype, _ = random_frames(3, 24, 2, box_len=5.0, seed=6, pbc=False)
    rot = Rotation.random(random_state=11).as_matrix()
    p0 = predict(committee, coord, atype)
    p1 = predict(committee, coord @ rot.T, atype)
    if kind == "dipole":
        expect = p0.global_tensor @ rot.T
    else:
        expect = (rot @ p0.global_tensor.reshape(-1, 3, 3) @ rot.T).reshape(-1, 9)
    np.testing.assert_allclose(p1.global_tensor, expect, atol=1e-10)
    assert p0.member_global is not None and p0.member_atomic is not None
    assert p1.member_global is not None and p1.member_atomic is not None
    d0 = deviation(p0.member_global, p0.member_atomic)
    d1 = deviation(p1.member_global, p1.member_atomic)
    assert d0.devi_global.min() > 1e-4  # the members disagree
    np.testing.assert_allclose(d1.devi_global, d0.devi_global, rtol=1e-9)
    np.testing.assert_allclose(d1.devi_atomic_max, d0.devi_atomic_max, rtol=1e-9)
    # the per-component std is not invariant (it is a property of the axes); its norm is
    assert not np.allclose(d1.global_std, d0.global_std, rtol=1e-3)


def test_deviation_is_population_std_norm() -> None:
    g = np.array([[[1.0, 0.0, 0.0]], [[3.0, 0.0, 0.0]]])  # K=2, nf=1
    a = np.zeros((2, 1, 2, 3))
    a[0, 0, 1] = [0.0, 2.0, 0.0]
    dev = deviation(g, a)
    assert dev.devi_global.tolist() == [1.0] and dev.devi_atomic_max.tolist() == [1.0]


def test_mismatched_members_and_bad_files_are_clear_errors(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "d.pt", member("dipole", 0))
    save_checkpoint(tmp_path / "p.pt", member("polar", 1))
    with pytest.raises(CheckpointError, match="members must agree"):
        load_predictor([tmp_path / "d.pt", tmp_path / "p.pt"])
    save_committee(tmp_path / "c.pt", [tmp_path / "d.pt", tmp_path / "d.pt"])
    with pytest.raises(CheckpointError, match="member 5 does not exist"):
        load_predictor(tmp_path / "c.pt", member=5)
    torch.save({"format": "dptensor-committee", "format_version": 1, "members": []}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="without members"):
        load_predictor(tmp_path / "empty.pt")


def test_predict_cli_writes_committee_npz_csv_and_json(tmp_path: Path) -> None:
    for s in range(3):
        save_checkpoint(tmp_path / f"m{s}.pt", member("dipole", s))
    coord, atype, box, sysdir = system_folder(tmp_path / "sys", 4, seed=8)
    argv = ["predict", "-m", str(tmp_path / "m0.pt"), "-m", str(tmp_path / "m1.pt"), "-m", str(tmp_path / "m2.pt"),
            "-s", str(sysdir), "-o", str(tmp_path / "out.npz"), "--csv", str(tmp_path / "out.csv"),
            "--json", str(tmp_path / "out.json")]
    assert main(argv) == 0
    ref = predict(load_predictor([tmp_path / f"m{s}.pt" for s in range(3)]), coord, atype, box)
    assert ref.member_global is not None and ref.member_atomic is not None
    dev = deviation(ref.member_global, ref.member_atomic)
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_allclose(z["global"], ref.global_tensor, atol=1e-13)
        np.testing.assert_allclose(z["atomic_std"], dev.atomic_std, atol=1e-13)
        np.testing.assert_allclose(z["devi_atomic_max"], dev.devi_atomic_max, atol=1e-13)
        assert z["member_global"].shape == (3, 4, 3) and int(z["committee_size"]) == 3
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert header == ["frame", "mu_x", "mu_y", "mu_z", "mu_x_std", "mu_y_std", "mu_z_std", "devi_global",
                      "devi_atomic_max"]
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["committee_size"] == 3 and doc["rows"][2][7] == pytest.approx(dev.devi_global[2])
    # one member alone
    assert main([*argv[:7], "--member", "1", "-s", str(sysdir), "-o", str(tmp_path / "one.npz")]) == 0
    with np.load(tmp_path / "one.npz") as z:
        np.testing.assert_array_equal(z["global"], predict(load_predictor(tmp_path / "m1.pt"), coord, atype,
                                                           box).global_tensor)
        assert "devi_global" not in z.files


def test_select_splits_by_deviation_and_writes_a_deepmd_system(tmp_path: Path) -> None:
    devi = np.array([0.01, 0.2, 0.5, 0.05, 0.9, 0.3, 2.0])
    sel = select(devi, 0.1, 1.0)
    assert (sel.n_accurate, sel.n_candidates, sel.n_failed) == (2, 4, 1)
    assert sel.candidates.tolist() == [1, 2, 4, 5] and sel.histogram[0].sum() == 7
    capped = select(devi, 0.1, 1.0, max_frames=2, seed=3)
    assert capped.candidates.size == 2 and set(capped.candidates) <= {1, 2, 4, 5}
    with pytest.raises(ConfigError, match="hi"):
        select(devi, 0.5, 0.5)

    committee = Committee([member("dipole", s) for s in range(3)]).eval()
    coord, atype, box = random_frames(6, 18, 2, box_len=5.0, seed=9)
    d = frame_deviation(committee, coord, atype, box)
    lo, hi = float(np.quantile(d, 0.3)), float(np.quantile(d, 0.8))
    sel = select(d, lo, hi)
    out = write_candidates(tmp_path / "cand", sel, coord, atype, box, committee.type_map)
    system = load_system(out, type_map=["O", "H"])
    assert system.nframes == sel.candidates.size > 0
    np.testing.assert_array_equal(system.coord, coord[sel.candidates])
    assert json.loads((out / "selection.json").read_text())["failed"] == int((d >= hi).sum())


def test_member_inputs_shift_every_seed() -> None:
    raw = tiny_input()
    a, b = member_input(raw, 0), member_input(raw, 2)
    assert a["model"]["descriptor"]["seed"] == int(raw["model"]["descriptor"].get("seed") or 0)
    for keys in (("model", "descriptor"), ("model", "fitting_net"), ("training",)):
        x, y = a, b
        for k in keys:
            x, y = x[k], y[k]
        assert y["seed"] - x["seed"] == 2000


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A committee of 2 trained by the command line (sequentially on a small machine)."""
    tmp = tmp_path_factory.mktemp("committee")
    (tmp / "input.json").write_text(json.dumps(tiny_input(steps=3)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", str(tmp / "input.json"), "--committee", "2", "-o", str(tmp / "run"),
                     "--device", "cpu"]) == 0
    return tmp, out.getvalue()


def test_committee_training_gives_differing_members_usable_alone(cli_run: tuple[Path, str]) -> None:
    tmp, text = cli_run
    assert "[member 0] step" in text and "[member 1] step" in text and "committee of 2" in text
    for i in range(2):
        assert (tmp / "run" / f"member-{i}" / "lcurve.out").is_file()
    committee = load_predictor(tmp / "run" / "committee.pt")
    assert isinstance(committee, Committee) and committee.size == 2 and committee.batched
    w0, w1 = (dict(committee.member(i).named_parameters()) for i in range(2))
    assert all(not torch.equal(w0[k], w1[k]) for k in w0)
    raw = json.loads((tmp / "input.json").read_text())
    system = load_system(Path(raw["training"]["validation_data"]["systems"][0]), type_map=committee.type_map)
    alone = load_predictor(tmp / "run" / "committee.pt", member=1)
    ref = load_predictor(tmp / "run" / "member-1" / "model.pt")
    box = None if system.box is None else system.box[:2]
    np.testing.assert_array_equal(predict(alone, system.coord[:2], system.atype, box).global_tensor,
                                  predict(ref, system.coord[:2], system.atype, box).global_tensor)


def test_members_train_concurrently_in_processes_with_progress_per_member(cli_run: tuple[Path, str]) -> None:
    tmp, _ = cli_run
    seen: list[int] = []
    result = train_committee(tmp / "input.json", tmp / "par", 2, device="cpu", parallel=2,
                             on_progress=lambda i, p: seen.append(i))
    assert result.concurrent == 2 and sorted(set(seen)) == [0, 1] and not result.cancelled
    # the same seeds give the same members, whether trained in this process or in children
    a, b = load_predictor(tmp / "run" / "committee.pt"), load_predictor(result.model_path)
    assert isinstance(a, Committee) and isinstance(b, Committee)
    for i in range(2):
        for (k, x), (_, y) in zip(a.member(i).state_dict().items(), b.member(i).state_dict().items(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12, msg=k)


def test_select_cli_reports_counts_and_needs_a_committee(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for s in range(2):
        save_checkpoint(tmp_path / f"m{s}.pt", member("dipole", s))
    save_committee(tmp_path / "c.pt", [tmp_path / "m0.pt", tmp_path / "m1.pt"])
    _, _, _, sysdir = system_folder(tmp_path / "sys", 5, seed=10)
    assert main(["select", "-m", str(tmp_path / "c.pt"), "-s", str(sysdir), "--lo", "0", "--hi", "1e9",
                 "--max", "3", "-o", str(tmp_path / "cand")]) == 0
    assert "5 frames: 0 accurate (< 0.0), 5 candidates, 0 failed" in capsys.readouterr().out
    assert load_system(tmp_path / "cand", type_map=["O", "H"]).nframes == 3
    assert main(["select", "-m", str(tmp_path / "m0.pt"), "-s", str(sysdir), "--lo", "0", "--hi", "1",
                 "-o", str(tmp_path / "x")]) == 2
    assert "at least 2 members" in capsys.readouterr().err
