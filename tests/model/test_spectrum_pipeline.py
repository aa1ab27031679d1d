"""Trajectory → streamed predictions → spectrum (model.spectrum_pipeline, dptensor spectrum)
with a tiny model on synthetic trajectories whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")
from ase import Atoms  # noqa: E402

from model.checkpoint import save_checkpoint  # noqa: E402
from model.cli import main  # noqa: E402
from model.errors import ConfigError, DataError  # noqa: E402
from model.inference import predict  # noqa: E402
from model.spectrum_parts import run_spectrum  # noqa: E402
from model.spectrum_pipeline import (  # noqa: E402
    chunk_frames_for_memory,
    parse_request,
    predict_series,
)
from model.system import System  # noqa: E402
from tests.model.conftest import random_frames, tiny_model  # noqa: E402

C_CM_PER_FS = 2.99792458e-5
WANNIER = {"dipole_mode": "wannier", "ionic_charges": {"O": 6.0, "H": 1.0}, "q_w": -8.0}


def symbols(atype: np.ndarray) -> list[str]:
    return ["O" if t == 0 else "H" for t in atype]


def rotating(n: int, dt_fs: float, nu_cm: float, nat: int = 9) -> tuple[list[str], np.ndarray]:
    """A rigid random cluster turning about z at wavenumber nu_cm (one turn per 1/(c ν̃))."""
    coord, atype, _ = random_frames(1, nat, 2, box_len=4.0, seed=5, pbc=False)
    base = coord[0] - coord[0].mean(axis=0)
    phase = 2 * np.pi * C_CM_PER_FS * nu_cm * dt_fs * np.arange(n)
    c, s = np.cos(phase), np.sin(phase)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    return symbols(atype), np.einsum("fij,aj->fai", rot, base) + 10.0


def write_xyz(path: Path, syms: list[str], coords: np.ndarray, cells: np.ndarray | None = None) -> Path:
    frames = [Atoms(syms, positions=c, cell=None if cells is None else cells[i], pbc=cells is not None)
              for i, c in enumerate(coords)]
    ase_io.write(path, frames, format="extxyz")
    return path


def frames_of(syms: list[str], coord: np.ndarray, box: np.ndarray | None) -> System:
    names = list(dict.fromkeys(syms))
    return System(path="synthetic", atype=np.array([names.index(s) for s in syms]), coord=coord, box=box,
                  type_names=names)


def periodic_traj(nf: int = 12, seed: int = 3) -> System:
    coord, atype, box = random_frames(nf, 16, 2, box_len=5.0, seed=seed)
    assert box is not None
    return frames_of(symbols(atype), coord, box)


def test_global_series_is_the_models_global_tensor_chunked_or_not(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    traj = periodic_traj()
    atype = np.arange(16) % 2
    ref = predict(model, traj.coord, atype, traj.box)
    request = parse_request("ir", 1.0)
    whole = predict_series(model, traj, request)
    np.testing.assert_allclose(whole, ref.global_tensor, rtol=0, atol=1e-12)
    seen: list[tuple[int, int]] = []
    chunked = predict_series(model, traj, request, batch_size=5, predictions=tmp_path / "p.npz",
                             progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12)  # batching may change the last bit
    assert seen == [(0, 12), (5, 12), (10, 12), (12, 12)]
    with np.load(tmp_path / "p.npz") as npz:
        np.testing.assert_allclose(npz["global"], ref.global_tensor, rtol=0, atol=1e-12)
        np.testing.assert_allclose(npz["atomic"], ref.atomic_tensor, rtol=0, atol=1e-12)
        assert npz["atomic"].shape == (12, 16, 3) and str(npz["kind"]) == "dipole"


def test_wannier_dipole_equals_the_hand_computation_across_chunks_and_wrapping() -> None:
    """An O atom walks out of the cell and is wrapped back in; chunks of 3 frames must
    carry the unwrapping so that M is continuous."""
    model = tiny_model("dipole", sel_type=[0])
    nf = 10
    traj = periodic_traj(nf)
    box = traj.box
    assert box is not None
    box[:] = box[0]  # one cell for all frames
    walk = traj.coord[0].copy()
    unwrapped = np.repeat(walk[None], nf, axis=0)
    unwrapped[:, 0, 0] = walk[0, 0] + np.linspace(0.0, 1.5 * box[0, 0, 0], nf)  # atom 0 (O) walks along x
    unwrapped[:, 2, 1] -= np.linspace(0.0, 0.8 * box[0, 1, 1], nf)  # atom 2 (O) walks along -y
    frac = np.einsum("fai,fij->faj", unwrapped, np.linalg.inv(box))
    wrapped = np.einsum("faj,fjk->fak", frac - np.floor(frac), box)
    assert np.abs(wrapped - unwrapped).max() > 1.0  # really wrapped
    traj = frames_of(traj.symbols, wrapped, box)
    atype = np.arange(16) % 2
    delta = predict(model, wrapped, atype, box).atomic_tensor
    z = np.where(atype == 0, 6.0, 1.0)
    hand = np.zeros((nf, 3))
    for f in range(nf):
        for a in range(16):
            hand[f] += z[a] * unwrapped[f, a]
            if atype[a] == 0:  # sel_type [0]: the O atoms carry the Wannier centroid
                hand[f] += -8.0 * (unwrapped[f, a] + delta[f, a])
    got = predict_series(model, traj, parse_request("ir", 1.0, WANNIER), batch_size=3)
    np.testing.assert_allclose(got, hand, rtol=0, atol=1e-9)


def test_rotating_cluster_peaks_at_its_rotation_frequency(tmp_path: Path) -> None:
    nu, dt = 800.0, 2.0
    syms, coords = rotating(300, dt, nu)
    path = write_xyz(tmp_path / "rot.xyz", syms, coords)
    result = run_spectrum(tiny_model("dipole"), [path], parse_request("ir", dt), model_id="mdl-x")
    spec = result.spectrum
    peak = spec.wavenumber_cm[np.argmax(spec.intensities["ir"])]
    assert abs(peak - nu) <= spec.metadata["grid_spacing_cm"]
    assert (result.frames, result.atoms, result.batch_size) == (300, 9, 12288 // 9)  # CPU: atom budget
    meta = spec.metadata
    assert (meta["model_id"], meta["dipole_mode"], meta["n_frames"], meta["sources"]) == (
        "mdl-x", "global", 300, ["rot.xyz"])
    assert "classical" in meta["correction_note"] and meta["elements"] == {"O": 5, "H": 4}


def test_cancel_between_chunks_leaves_no_predictions_file(tmp_path: Path) -> None:
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return True

    with pytest.raises(InterruptedError):
        predict_series(tiny_model("dipole"), periodic_traj(), parse_request("ir", 1.0), batch_size=4,
                       predictions=tmp_path / "p.npz", should_stop=stop)
    assert calls == [1] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kind", "dt", "options", "loc", "msg"), [
    ("uv", 1.0, {}, "kind", "must be one of"),
    ("ir", 0.0, {}, "dt_fs", "> 0"),
    ("ir", float("nan"), {}, "dt_fs", "finite"),
    ("ir", 1.0, {"windw": "hann"}, "options.windw", "unknown option(s) ['windw']"),
    ("ir", 1.0, {"window": "box"}, "options.window", "must be one of"),
    ("ir", 1.0, {"dt_fs": 2}, "options.dt_fs", "once"),
    ("ir", 1.0, {"dipole_mode": "wannier"}, "options.ionic_charges", "needs the ionic charge"),
    ("ir", 1.0, {**WANNIER, "q_w": None}, "options.q_w", "needs q_w"),
    ("ir", 1.0, {**WANNIER, "ionic_charges": {"O": "six"}}, "options.ionic_charges", "finite numbers"),
    ("ir", 1.0, {"q_w": -8}, "options.q_w", "only with dipole_mode 'wannier'"),
    ("ir", 1.0, {"dipole_mode": "total"}, "options.dipole_mode", "must be one of"),
    ("raman", 1.0, {"ionic_charges": {"O": 6}}, "options.ionic_charges", "IR option"),
    ("ir", 1.0, {"max_frames": 0}, "options.max_frames", "positive integer"),
    ("ir", 1.0, {"volume_a3": -1}, "options.volume_a3", "> 0 or 'cell'"),
    ("ir", 1.0, {"lammps_type_symbols": {"one": "O"}}, "options.lammps_type_symbols", "LAMMPS atom types"),
    ("ir", 1.0, {"format": ""}, "options.format", "non-empty"),
])
def test_request_errors_name_the_field(kind: str, dt: float, options: dict, loc: str, msg: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_request(kind, dt, options)
    assert info.value.problems[0][0] == loc and msg in info.value.problems[0][1], info.value.problems


def test_options_round_trip_through_json() -> None:
    request = parse_request("ir", 0.5, {**WANNIER, "window": "hann", "max_frames": 10, "index": "5:",
                                        "lammps_type_symbols": {"1": "O", "2": "H"}, "volume_a3": "cell"})
    stored = json.loads(json.dumps(request.options_json()))
    assert "dt_fs" not in stored and stored["lammps_type_symbols"] == {"1": "O", "2": "H"}
    assert parse_request("ir", 0.5, stored) == request
    assert parse_request("raman", 2.0, parse_request("raman", 2.0).options_json()).kind == "raman"


def test_trajectory_errors(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    syms, coords = rotating(8, 1.0, 500.0)
    request = parse_request("ir", 1.0, WANNIER)
    na = write_xyz(tmp_path / "na.xyz", ["Na", *syms[1:]], coords)
    with pytest.raises(DataError, match=r"element\(s\) \['Na'\] are not in the model's type_map"):
        run_spectrum(model, [na], request)
    charges = parse_request("ir", 1.0, {**WANNIER, "ionic_charges": {"O": 6}})
    with pytest.raises(ConfigError, match=r"no charge for element\(s\) \['H'\]"):
        run_spectrum(model, [write_xyz(tmp_path / "ok.xyz", syms, coords)], charges)
    with pytest.raises(ConfigError, match="RAMAN needs a polar model; the model predicts dipoles"):
        run_spectrum(model, [tmp_path / "ok.xyz"], parse_request("raman", 1.0))
    with pytest.raises(ConfigError, match="longer than the shortest trajectory"):
        run_spectrum(model, [tmp_path / "ok.xyz"], parse_request("ir", 1.0, {"max_corr_fs": 50.0}))


def test_chunk_size_from_free_memory() -> None:
    assert chunk_frames_for_memory(8e9, 1e6, 192, 3) == 4000  # half of 8 GB / 1 MB per frame
    assert chunk_frames_for_memory(80e9, 1e6, 192, 3) == 4096  # frame cap
    assert chunk_frames_for_memory(80e9, 1e6, 24_000, 9) == 155  # host bytes of atomic results
    assert chunk_frames_for_memory(1e6, 1e9, 192, 3) == 1


def test_cli_json_csv_predictions_plot_and_averaging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    model = tiny_model("dipole")
    save_checkpoint(tmp_path / "m.pt", model)
    nu, dt = 1200.0, 1.0
    syms, coords = rotating(240, dt, nu)
    a = write_xyz(tmp_path / "a.xyz", syms, coords[:120])
    b = write_xyz(tmp_path / "b.xyz", syms, coords[120:])
    out = tmp_path / "out"
    argv = ["spectrum", "-m", str(tmp_path / "m.pt"), "-t", str(a), "-t", str(b), "--kind", "ir", "--dt", str(dt),
            "--window", "hann", "--dipole-mode", "wannier", "--charges", "O=6,H=1", "--q-w", "-8",
            "-o", f"{out}.json", "--csv", f"{out}.csv", "--predictions", f"{out}.npz", "--plot", f"{out}.png"]
    assert main(argv) == 0
    spec = json.loads(Path(f"{out}.json").read_text())
    x, y = np.array(spec["wavenumber_cm"]), np.array(spec["intensities"]["ir"])
    assert abs(x[np.argmax(y)] - nu) <= spec["metadata"]["grid_spacing_cm"]
    assert (spec["metadata"]["n_trajectories"], spec["metadata"]["window"], spec["metadata"]["q_w"]) == (2, "hann", -8)
    table = np.loadtxt(f"{out}.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(table[:, 1], y, rtol=1e-9)
    for i, part in enumerate((coords[:120], coords[120:])):
        with np.load(tmp_path / f"out-{i}.npz") as npz:
            np.testing.assert_allclose(npz["global"], predict(model, part, np.arange(9) % 2).global_tensor,
                                       atol=1e-6)  # xyz text keeps 8 decimals
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"
    assert "240 frames of 9 atoms" in capsys.readouterr().err
    assert main([*argv[:11], "--charges", "O6"]) == 2
    assert "'O6' is not NAME=VALUE" in capsys.readouterr().err
