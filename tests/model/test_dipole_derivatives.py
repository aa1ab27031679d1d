"""Born charges by autograd: finite differences, the acoustic sum rule, rotation, a trained
point-charge model, and harmonic IR sticks from normal modes (npz, ASE, phonopy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import save_checkpoint
from model.cli import main
from model.committee import Committee
from model.dipole_derivatives import born_charges
from model.errors import ConfigError
from model.inference import predict
from model.normal_modes import THZ_TO_CM, harmonic_ir, read_modes
from model.spectra_units import harmonic_intensity_km_mol
from tests.model import harmonic
from tests.model.conftest import random_frames, random_rotation, tiny_model


@pytest.mark.parametrize(("pbc", "triclinic"), [(False, False), (True, False), (True, True)])
def test_autograd_equals_finite_differences_of_predict(pbc: bool, triclinic: bool) -> None:
    model = tiny_model("dipole")
    coord, atype, box = random_frames(2, 6, 2, pbc=pbc, box_len=5.0, triclinic=triclinic)
    born = born_charges(model, coord, atype, box)
    assert np.abs(born.z).max() > 1e-2  # not trivially zero
    h = 1e-5
    fd = np.zeros_like(born.z)
    for i in range(coord.shape[1]):
        for b in range(3):
            plus, minus = coord.copy(), coord.copy()
            plus[:, i, b] += h
            minus[:, i, b] -= h
            fd[:, i, :, b] = (predict(model, plus, atype, box).global_tensor
                              - predict(model, minus, atype, box).global_tensor) / (2 * h)
    np.testing.assert_allclose(born.z, fd, atol=1e-6)
    np.testing.assert_allclose(born.dipole, predict(model, coord, atype, box).global_tensor, atol=1e-12)
    assert born.sum_rule_violation.max() < 1e-10  # neutral: Σ_i Z*_i = 0


def test_wannier_sum_rule_is_the_total_charge() -> None:
    model = tiny_model("dipole", sel_type=[0])
    coord, atype, box = random_frames(1, 6, 2, pbc=True, box_len=5.0)
    charges = np.where(atype == 0, 6.0, 1.0)
    born = born_charges(model, coord, atype, box, dipole_mode="wannier", charges=charges, q_w=-8.0)
    total = charges.sum() - 8.0 * (atype == 0).sum()
    assert born.total_charge == total
    np.testing.assert_allclose(born.sum_rule[0], total * np.eye(3), atol=1e-10)
    glob = born_charges(model, coord, atype, box)
    sel = (atype == 0)
    np.testing.assert_allclose(born.z, -8.0 * glob.z + (charges - 8.0 * sel)[None, :, None, None] * np.eye(3))
    with pytest.raises(ConfigError, match="ionic charges"):
        born_charges(model, coord, atype, box, dipole_mode="wannier")


def test_born_charges_rotate_as_rank_two_tensors() -> None:
    model = tiny_model("dipole")
    coord, atype, _ = random_frames(1, 6, 2, pbc=False)
    r = random_rotation(3)
    z = born_charges(model, coord, atype).z[0]
    z_rot = born_charges(model, coord @ r.T, atype).z[0]
    np.testing.assert_allclose(z_rot, np.einsum("ab,ibc,dc->iad", r, z, r), atol=1e-10)


def test_trained_point_charge_model_approaches_the_charges() -> None:
    """M = Σ q_i r_i of a neutral triatomic (centred on O: translation invariant); the model's
    Born charges approach q_i·1 as the fit converges."""
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    def frames(n: int) -> np.ndarray:
        return np.array([(harmonic.POSITIONS + 0.15 * rng.normal(size=(3, 3))) @ random_rotation(k).T
                         for k in rng.integers(0, 10**6, n)])

    x = frames(96)
    atype = np.array([0, 1, 1])
    model = tiny_model("dipole", sel_type=[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, mt, at = torch.tensor(x), torch.tensor(harmonic.dipoles(x)), torch.tensor(atype)
    test = frames(4)
    target = harmonic.CHARGES[None, :, None, None] * np.eye(3)
    deviation = []
    steps = 400
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 1e-2 * 0.5 * (1 + np.cos(np.pi * step / steps)) + 2e-4
        opt.zero_grad()
        loss = ((model(xt, at).global_ - mt) ** 2).mean()
        loss.backward()
        opt.step()
        if step in (20, steps - 1):
            deviation.append(np.abs(born_charges(model, test, atype).z - target).max())
    assert deviation[1] < 0.15 and deviation[1] < 0.5 * deviation[0], deviation


def _modes_npz(path: Path, cartesian: bool) -> Path:
    modes = harmonic.normal_modes()
    vec = modes.cartesian * 3.7 if cartesian else modes.eigvec.T.reshape(3, 3, 3)  # any scale
    key = "modes" if cartesian else "eigenvectors"
    np.savez(path, frequencies_cm=modes.wavenumber_cm, **{key: vec})
    return path


@pytest.mark.parametrize("cartesian", [True, False])
def test_harmonic_sticks_of_point_charges_from_npz(tmp_path: Path, cartesian: bool) -> None:
    z = harmonic.CHARGES[:, None, None] * np.eye(3)  # point charges: Z*_i = q_i·1
    modes = read_modes(_modes_npz(tmp_path / "m.npz", cartesian), harmonic.MASSES)
    sticks = harmonic_ir(z, harmonic.MASSES, modes)
    expected = harmonic_intensity_km_mol(harmonic.dmu_dq(harmonic.normal_modes()))
    np.testing.assert_allclose(sticks["intensity_km_mol"], expected, rtol=1e-10)
    assert sticks["unit"] == "km/mol"


def test_harmonic_sticks_from_ase_vibrations_and_phonopy(tmp_path: Path) -> None:
    from ase import Atoms
    from ase.io.jsonio import write_json
    from ase.vibrations import VibrationsData

    atoms = Atoms("OHH", positions=harmonic.POSITIONS, masses=harmonic.MASSES)
    write_json(str(tmp_path / "vib.json"), VibrationsData(atoms, harmonic.hessian().reshape(3, 3, 3, 3)))
    ase_modes = read_modes(tmp_path / "vib.json", harmonic.MASSES)
    z = harmonic.CHARGES[:, None, None] * np.eye(3)
    sticks = harmonic_ir(z, harmonic.MASSES, ase_modes)
    ref = harmonic.normal_modes()
    vib = np.array(sticks["wavenumber_cm"]) > 100  # ASE reports all 9 (6 near zero)
    np.testing.assert_allclose(np.array(sticks["wavenumber_cm"])[vib], ref.wavenumber_cm, rtol=1e-6)
    np.testing.assert_allclose(np.array(sticks["intensity_km_mol"])[vib],
                               harmonic_intensity_km_mol(harmonic.dmu_dq(ref)), rtol=1e-6)
    import yaml

    bands = [{"frequency": float(nu / THZ_TO_CM),
              "eigenvector": [[[float(c), 0.0] for c in atom] for atom in ref.eigvec[:, k].reshape(3, 3)]}
             for k, nu in enumerate(ref.wavenumber_cm)]
    (tmp_path / "qpoints.yaml").write_text(yaml.safe_dump({"phonon": [{"q-position": [0, 0, 0], "band": bands}]}))
    ph = harmonic_ir(z, harmonic.MASSES, read_modes(tmp_path / "qpoints.yaml", harmonic.MASSES))
    np.testing.assert_allclose(ph["intensity_km_mol"], harmonic_intensity_km_mol(harmonic.dmu_dq(ref)), rtol=1e-9)
    np.testing.assert_allclose(ph["wavenumber_cm"], ref.wavenumber_cm, rtol=1e-12)


def test_predict_derivatives_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ase import Atoms
    from ase.io import write

    model = tiny_model("dipole", sel_type=[0])
    save_checkpoint(tmp_path / "m.pt", model)
    coord, atype, _ = random_frames(2, 3, 2, pbc=False)
    write(tmp_path / "s.xyz", [Atoms([["O", "H"][t] for t in atype], positions=c) for c in coord])
    _modes_npz(tmp_path / "modes.npz", True)
    out = tmp_path / "pred.npz"
    argv = ["predict", "-m", str(tmp_path / "m.pt"), "-s", str(tmp_path / "s.xyz"), "-o", str(out), "--derivatives",
            "--dipole-mode", "wannier", "--charges", "O=6,H=1", "--q-w", "-8", "--modes", str(tmp_path / "modes.npz")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "acoustic sum rule" in text and "km/mol" in text
    with np.load(tmp_path / "pred_born.npz") as data:
        assert data["born_charges"].shape == (2, 3, 3, 3)
        total = 6.0 * (atype == 0).sum() + 1.0 * (atype == 1).sum() - 8.0 * (atype == 0).sum()
        assert float(data["total_charge"]) == total
        np.testing.assert_allclose(data["sum_rule"], np.broadcast_to(total * np.eye(3), (2, 3, 3)), atol=1e-10)
        z0 = data["born_charges"][0]
    sticks = json.loads((tmp_path / "pred_ir.json").read_text())
    from ase.data import atomic_masses

    ase_masses = np.array([atomic_masses[8] if t == 0 else atomic_masses[1] for t in atype])
    again = harmonic_ir(z0, ase_masses, read_modes(tmp_path / "modes.npz", ase_masses))
    np.testing.assert_allclose(sticks["intensity_km_mol"], again["intensity_km_mol"], rtol=1e-12)
    assert main([*argv[:7], "--modes", str(tmp_path / "modes.npz")]) == 2  # --modes needs --derivatives


def _committee(k: int = 3) -> Committee:
    return Committee([tiny_model("dipole", seed=s, sel_type=[0]) for s in range(k)])


def test_committee_born_charges_are_the_members_mean_with_their_spread() -> None:
    """Each member differentiated alone; the committee's Z* is their mean — the derivative
    of the committee's mean dipole (finite differences of its predictions) — and z_std
    their population std; the sum rule holds for the mean as for each member."""
    committee = _committee()
    coord, atype, box = random_frames(2, 6, 2, pbc=True, box_len=5.0)
    born = born_charges(committee, coord, atype, box)
    members = np.stack([born_charges(committee.member(i), coord, atype, box).z for i in range(3)])
    assert born.committee_size == 3 and born.member_z is not None and born.z_std is not None
    np.testing.assert_allclose(born.member_z, members, rtol=0, atol=1e-12)
    np.testing.assert_allclose(born.z, members.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(born.z_std, members.std(0), rtol=0, atol=1e-12)
    assert born.z_std.max() > 1e-3  # the members disagree
    h = 1e-5
    i, b = 1, 2
    plus, minus = coord.copy(), coord.copy()
    plus[:, i, b] += h
    minus[:, i, b] -= h
    fd = (predict(committee, plus, atype, box).global_tensor - predict(committee, minus, atype, box).global_tensor)
    np.testing.assert_allclose(born.z[:, i, :, b], fd / (2 * h), atol=1e-6)
    np.testing.assert_allclose(born.dipole, predict(committee, coord, atype, box).global_tensor, atol=1e-12)
    assert born.sum_rule_violation.max() < 1e-10
    report = born.report()
    assert report["committee_size"] == 3 and report["z_std_max"] == pytest.approx(float(born.z_std.max()))
    # the Wannier dipole: the same mean and, scaled by |q_W|, the same spread
    charges = np.where(atype == 0, 6.0, 1.0)
    wannier = born_charges(committee, coord, atype, box, dipole_mode="wannier", charges=charges, q_w=-8.0)
    assert wannier.z_std is not None
    np.testing.assert_allclose(wannier.z_std, 8.0 * born.z_std, atol=1e-10)
    np.testing.assert_allclose(wannier.sum_rule[0], wannier.total_charge * np.eye(3), atol=1e-10)
    # one model: no spread reported
    assert born_charges(committee.member(0), coord, atype, box).z_std is None


def test_predict_derivatives_cli_with_a_committee(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ase import Atoms
    from ase.io import write

    from model.committee import save_committee

    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"m{seed}.pt")
        save_checkpoint(paths[-1], tiny_model("dipole", seed=seed, sel_type=[0]))
    save_committee(tmp_path / "c.pt", paths)
    coord, atype, _ = random_frames(2, 3, 2, pbc=False)
    write(tmp_path / "s.xyz", [Atoms([["O", "H"][t] for t in atype], positions=c) for c in coord])
    _modes_npz(tmp_path / "modes.npz", True)
    out = tmp_path / "pred.npz"
    assert main(["predict", "-m", str(tmp_path / "c.pt"), "-s", str(tmp_path / "s.xyz"), "-o", str(out),
                 "--derivatives", "--modes", str(tmp_path / "modes.npz")]) == 0
    assert "committee of 2" in capsys.readouterr().out
    from ase.data import atomic_masses

    masses = np.array([atomic_masses[8] if t == 0 else atomic_masses[1] for t in atype])
    modes = read_modes(tmp_path / "modes.npz", masses)
    with np.load(tmp_path / "pred_born.npz") as data:
        member_z = data["member_born_charges"]  # [2, nf, nat, 3, 3]
        assert member_z.shape == (2, 2, 3, 3, 3)
        np.testing.assert_allclose(data["born_charges"], member_z.mean(0), atol=1e-12)
        np.testing.assert_allclose(data["born_charges_std"], member_z.std(0), atol=1e-12)
    sticks = json.loads((tmp_path / "pred_ir.json").read_text())
    each = np.array([harmonic_ir(z[0], masses, modes)["intensity_km_mol"] for z in member_z])
    np.testing.assert_allclose(sticks["intensity_km_mol"], each.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sticks["intensity_km_mol_std"], each.std(0), rtol=1e-12, atol=1e-15)
    assert sticks["committee_size"] == 2
