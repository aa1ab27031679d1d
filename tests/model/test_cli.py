"""dptensor train | test | predict on the example data, and their error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_model
from model.cli import main
from model.data import load_system
from model.inference import predict
from tests.model.test_train import EXAMPLES, tiny_input

REF = EXAMPLES.parent / "deepmd_reference"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    (out / "input.json").write_text(json.dumps(tiny_input(steps=20)))
    assert main(["train", str(out / "input.json"), "--output", str(out / "run")]) == 0
    return out / "run"


def test_train_writes_model_lcurve_and_checkpoints(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (trained / "model.pt").is_file() and (trained / "lcurve.out").is_file()
    assert (trained / "model.ckpt-20.pt").is_file()


def test_test_prints_rmse_like_dp_test(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    system = EXAMPLES / "dipole/validation_data_reformat/global_system"
    assert main(["test", "-m", str(trained / "model.pt"), "-s", str(system), "-n", "10",
                 "-d", str(tmp_path / "detail")]) == 0
    out = capsys.readouterr().out
    rmse = float(out.split("Dipole RMSE        :")[1].split()[0])
    per_atom = float(out.split("Dipole RMSE/N      :")[1].split()[0])
    assert per_atom == pytest.approx(rmse / 64)
    rows = np.loadtxt(tmp_path / "detail.dipole.out")
    assert rows.shape == (10, 6)  # data_x data_y data_z pred_x pred_y pred_z
    assert np.sqrt(np.mean((rows[:, :3] - rows[:, 3:]) ** 2)) == pytest.approx(rmse, rel=1e-6)


def test_test_json_on_deepmd_reference_matches_documented_rmse(capsys: pytest.CaptureFixture[str]) -> None:
    system = EXAMPLES / "polar/validation_data_reformat/global_system"
    assert main(["test", "-m", str(REF / "polar/model_slim.pt"), "-s", str(system), "--json", "-d", ""]) == 0
    score = json.loads(capsys.readouterr().out)
    # tensor-fitting.md: DeePMD-kit's dp test on this model gives 3.96 (6.19e-2 per atom)
    assert score["global"]["rmse"] == pytest.approx(3.96, abs=0.01)
    assert score["global"]["rmse_per_atom"] == pytest.approx(6.19e-2, abs=1e-4)


def test_predict_writes_npz_equal_to_python_api(trained: Path, tmp_path: Path) -> None:
    system = EXAMPLES / "dipole/validation_data_reformat/atomic_system"
    assert main(["predict", "-m", str(trained / "model.pt"), "-s", str(system), "-o", str(tmp_path / "p.npz")]) == 0
    model = load_model(trained / "model.pt")
    sysd = load_system(system, type_map=model.type_map)
    ref = predict(model, sysd.coord, sysd.atype, sysd.box)
    with np.load(tmp_path / "p.npz") as npz:
        assert npz["global"].shape == (80, 3) and npz["atomic"].shape == (80, 192, 3)
        np.testing.assert_array_equal(npz["global"], ref.global_tensor)
        assert np.all(npz["atomic"][:, 1::3] == 0)  # H atoms are outside sel_type


def test_predict_from_an_xyz_trajectory(trained: Path, tmp_path: Path) -> None:
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms

    sysd = load_system(EXAMPLES / "dipole/validation_data_reformat/atomic_system", type_map=["O", "H"])
    symbols = ["O" if t == 0 else "H" for t in sysd.atype]
    ase_io.write(tmp_path / "traj.xyz", [Atoms(symbols, positions=c) for c in sysd.coord[:3]])
    assert main(["predict", "-m", str(trained / "model.pt"), "-s", str(tmp_path / "traj.xyz"),
                 "-o", str(tmp_path / "p.npz")]) == 0
    ref = predict(load_model(trained / "model.pt"), sysd.coord[:3], sysd.atype, None)
    with np.load(tmp_path / "p.npz") as npz:
        np.testing.assert_allclose(npz["global"], ref.global_tensor, rtol=1e-6)  # xyz keeps 8 decimals


def test_predict_refuses_a_thin_cell_and_the_budget_is_an_option(trained: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ase_io = pytest.importorskip("ase.io")
    from ase import Atoms

    water = Atoms("OH2", positions=[[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]], cell=np.diag([0.02, 0.02, 20]),
                  pbc=True)
    ase_io.write(tmp_path / "thin.xyz", water)
    argv = ["predict", "-m", str(trained / "model.pt"), "-s", str(tmp_path / "thin.xyz"), "-o", str(tmp_path / "p.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "perpendicular widths (0.02, 0.02, 20) Å with rcut 4 Å" in err and "--max-search-candidates" in err
    assert not (tmp_path / "p.npz").exists()
    # 401 × 401 images of 3 atoms = 482 403 candidates: computed with a larger budget
    assert main([*argv, "--max-search-candidates", "500000"]) == 0
    with np.load(tmp_path / "p.npz") as npz:
        assert np.all(np.isfinite(npz["global"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "/nonexistent/input.json"], "does not exist"),
        (["test", "-m", "/nonexistent.pt", "-s", "."], "does not exist"),
        (["predict", "-m", str(REF / "dipole/model_slim.pt"), "-s", "/nonexistent.xyz", "-o", "x.npz"], "nonexistent"),
    ],
)
def test_errors_exit_2_with_one_clear_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_console_script_is_installed() -> None:
    proc = subprocess.run([sys.executable, "-m", "model.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "test", "predict"):
        assert command in proc.stdout


def test_json_mode_writes_no_detail_files_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    system = EXAMPLES / "dipole/validation_data_reformat/global_system"
    assert main(["test", "-m", str(REF / "dipole/model_slim.pt"), "-s", str(system), "-n", "2", "--json"]) == 0
    assert list(tmp_path.iterdir()) == []
    assert main(["test", "-m", str(REF / "dipole/model_slim.pt"), "-s", str(system), "-n", "2"]) == 0
    assert (tmp_path / "test.dipole.out").is_file()  # like dp test: files by default


def test_predict_writes_a_deepmd_system_with_the_predictions_as_labels(tmp_path: Path) -> None:
    from model.checkpoint import save_checkpoint
    from tests.model.conftest import tiny_model

    model = tiny_model("dipole", sel_type=[0])
    save_checkpoint(tmp_path / "m.pt", model)
    src = EXAMPLES / "dipole" / "validation_data_reformat" / "global_system"
    for dest in (tmp_path / "pred_system", f"{tmp_path / 'pred.hdf5'}#/water"):
        assert main(["predict", "-m", str(tmp_path / "m.pt"), "-s", str(src), "-o", str(tmp_path / "p.npz"),
                     "--as-system", str(dest)]) == 0
        npz = np.load(tmp_path / "p.npz")
        system = load_system(dest, kind="dipole", type_map=["O", "H"], sel_type=[0])
        np.testing.assert_array_equal(system.global_label, npz["global"])
        np.testing.assert_array_equal(system.atomic_label, npz["atomic"])
        np.testing.assert_array_equal(system.coord, load_system(src).coord)
        assert system.box is None  # the source is an open (nopbc) system
