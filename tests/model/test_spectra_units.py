"""Absolute IR units and band integrals: known answers from a harmonic point-charge molecule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.errors import ConfigError
from model.spectra import SpectrumOptions, ir_spectrum
from model.spectra_units import (
    DEBYE_E_A,
    KM_MOL_PER_E2_AMU,
    harmonic_intensity_km_mol,
    number_density_mol_cm3,
    parse_bands,
)
from tests.model import harmonic

DT = 0.5
BANDS = ((100.0, 1700.0), (1700.0, 3200.0), (3200.0, 4500.0))  # one normal mode each


@pytest.fixture(scope="module")
def harmonic_answer() -> np.ndarray:
    modes = harmonic.normal_modes()
    for (lo, hi), nu in zip(BANDS, modes.wavenumber_cm, strict=True):
        assert lo + 150 < nu < hi - 150  # each band holds one mode with room for the window
    return harmonic_intensity_km_mol(harmonic.dmu_dq(modes))


def test_conversion_constant_matches_the_textbook_debye_value() -> None:
    # 1 (D/Å)²/amu = 42.2561 km/mol (the factor quantum-chemistry codes use)
    assert pytest.approx(42.2561, rel=2e-5) == KM_MOL_PER_E2_AMU * DEBYE_E_A**2


def test_md_band_integrals_in_km_mol_equal_the_harmonic_intensities(harmonic_answer: np.ndarray) -> None:
    """Boltzmann-sampled classical MD: within the standard error the spectrum reports."""
    traj = harmonic.md(192, 2000, DT, 300.0, seed=1)
    opts = SpectrumOptions(dt_fs=DT, units="molar", bands=BANDS)
    spec = ir_spectrum(list(harmonic.dipoles(traj)), opts)
    assert spec.metadata["units"] == "km mol^-1 (cm^-1)^-1" and "N_A" in spec.metadata["formula"]
    assert spec.bands is not None
    for band, expected in zip(spec.bands, harmonic_answer, strict=True):
        assert band["unit"] == "km/mol"
        assert band["error"] is not None and band["error"] < 0.15 * expected  # the test has power
        assert abs(band["integral"] - expected) < 4 * band["error"], (band, expected)


def test_equipartition_md_gives_the_harmonic_intensities_to_two_percent(harmonic_answer: np.ndarray) -> None:
    """Exactly k_B T per mode: the band integral is then the harmonic intensity, not on average."""
    traj = harmonic.md(8, 2000, DT, 300.0, seed=2, equipartition=True)
    for temperature in (300.0, 1000.0):  # classical MD at any T gives the same km/mol
        scaled = harmonic.md(8, 2000, DT, temperature, seed=2, equipartition=True)
        spec = ir_spectrum(list(harmonic.dipoles(scaled)), SpectrumOptions(dt_fs=DT, temperature_k=temperature,
                                                                          units="molar", bands=BANDS))
        got = np.array([b["integral"] for b in spec.bands or []])
        np.testing.assert_allclose(got, harmonic_answer, rtol=0.02)
    assert traj.shape == (8, 2000, 3, 3)


def test_box_of_independent_copies_is_molar_times_number_density(harmonic_answer: np.ndarray) -> None:
    """Boxes of 4 independent copies (random phases): n·α = ε_molar · c, with the copies'
    cross-correlations averaging out over the boxes (within the reported error)."""
    copies, boxes = 4, 48
    m = harmonic.dipoles(harmonic.md(copies * boxes, 1000, DT, 300.0, seed=3, equipartition=True))
    per_box = list(m.reshape(boxes, copies, -1, 3).sum(axis=1))
    volume = 30.0**3
    box = ir_spectrum(per_box, SpectrumOptions(dt_fs=DT, bands=BANDS), volume_a3=volume)
    assert box.metadata["units_kind"] == "absorption" and box.metadata["units"] == "cm^-1"
    conc = number_density_mol_cm3(copies, volume)  # mol/cm³
    # n·α [cm⁻¹] = ε [km mol⁻¹ cm] · c [mol cm⁻³] · 1e5 cm/km
    same = ir_spectrum(per_box, SpectrumOptions(dt_fs=DT, molecules=copies), volume_a3=volume)
    np.testing.assert_allclose(box.intensities["ir"], same.intensities["ir"] * conc * 1e5, rtol=1e-12)
    single = ir_spectrum(list(m), SpectrumOptions(dt_fs=DT, units="molar", bands=BANDS))
    for b_box, b_mol, exact in zip(box.bands or [], single.bands or [], harmonic_answer, strict=True):
        assert b_box["unit"] == "cm^-2"
        assert abs(b_box["integral"] - b_mol["integral"] * conc * 1e5) < 4 * b_box["error"]
        assert abs(b_box["integral"] - exact * conc * 1e5) < 4 * b_box["error"]
        assert b_box["error"] < 0.2 * b_box["integral"]


def test_auto_units_absorption_with_a_volume_else_molar() -> None:
    m = harmonic.dipoles(harmonic.md(1, 400, DT, 300.0, equipartition=True))[0]
    assert ir_spectrum(m, SpectrumOptions(dt_fs=DT)).metadata["units_kind"] == "molar"
    assert ir_spectrum(m, SpectrumOptions(dt_fs=DT), volume_a3=1e3).metadata["units_kind"] == "absorption"
    assert ir_spectrum(m, SpectrumOptions(dt_fs=DT, molecules=2), volume_a3=1e3).metadata["units_kind"] == "molar"
    with pytest.raises(ConfigError, match="volume"):
        ir_spectrum(m, SpectrumOptions(dt_fs=DT, units="absorption"))
    rel = ir_spectrum(m, SpectrumOptions(dt_fs=DT, units="relative"))
    molar2 = ir_spectrum(m, SpectrumOptions(dt_fs=DT, molecules=2))
    molar1 = ir_spectrum(m, SpectrumOptions(dt_fs=DT))
    np.testing.assert_allclose(molar2.intensities["ir"] * 2, molar1.intensities["ir"])
    assert rel.metadata["units"] == "(e·Å)^2/fs"


@pytest.mark.parametrize(("text", "message"), [
    ("1000", "LO:HI"), ("2000:1000", "LO < HI"), ("a:b", "LO:HI"), ("", "no band"), ("-5:10", "0 ≤ LO"),
])
def test_bad_bands_name_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_bands(text)
    assert err.value.problems[0][0] == "bands"


def test_band_beyond_the_grid_is_refused() -> None:
    m = harmonic.dipoles(harmonic.md(1, 400, DT, 300.0, equipartition=True))[0]
    with pytest.raises(ConfigError, match="above the spectrum's grid"):
        ir_spectrum(m, SpectrumOptions(dt_fs=DT, freq_max_cm=3000.0, bands=((1000.0, 4000.0),)))


def _system(folder: Path, traj: np.ndarray, m: np.ndarray, box: float | None) -> Path:
    """A DeePMD system with dipole.npy labels: [nf, nat, 3] positions, [nf, 3] dipoles."""
    folder.mkdir(parents=True)
    (folder / "type.raw").write_text("0 1 1\n")
    (folder / "type_map.raw").write_text("O H\n")
    s = folder / "set.000"
    s.mkdir()
    nf = traj.shape[0]
    np.save(s / "coord.npy", traj.reshape(nf, -1))
    np.save(s / "dipole.npy", m)
    if box is None:
        (folder / "nopbc").write_text("")
    else:
        np.save(s / "box.npy", np.tile(np.eye(3).ravel() * box, (nf, 1)))
    return folder


def test_cli_contract_labels_molar_bands(tmp_path: Path) -> None:
    """`dptensor spectrum --kind ir --labels -t SYS -t SYS --dt --units molar --molecules N --bands …`"""
    traj = harmonic.md(4, 2000, DT, 300.0, seed=4, equipartition=True)
    m = harmonic.dipoles(traj)
    # two systems, each a box of 2 independent molecules (the dipole is their sum)
    systems = [_system(tmp_path / f"sys{i}", traj[2 * i], m[2 * i] + m[2 * i + 1], 20.0) for i in range(2)]
    out = tmp_path / "out.json"
    argv = ["spectrum", "--kind", "ir", "--labels", "-t", str(systems[0]), "-t", str(systems[1]), "--dt", str(DT),
            "--units", "molar", "--molecules", "2", "--bands", "100:1700,1700:3200,3200:4500", "-o", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert [set(b) >= {"lo", "hi", "integral", "unit"} for b in doc["bands"]] == [True] * 3
    assert [b["unit"] for b in doc["bands"]] == ["km/mol"] * 3
    assert [(b["lo"], b["hi"]) for b in doc["bands"]] == list(BANDS)
    direct = ir_spectrum([m[0] + m[1], m[2] + m[3]], SpectrumOptions(dt_fs=DT, molecules=2, bands=BANDS))
    np.testing.assert_allclose([b["integral"] for b in doc["bands"]], [b["integral"] for b in direct.bands or []],
                               rtol=1e-9)
    np.testing.assert_allclose(doc["intensities"]["ir"], direct.intensities["ir"], rtol=1e-9)
    assert all(b["error"] > 0 for b in doc["bands"])  # two trajectories: a standard error
    assert doc["metadata"]["molecules"] == 2 and doc["metadata"]["source"].startswith("reference labels")
    assert doc["metadata"]["n_trajectories"] == 2
    # --units absorption: n·α in cm⁻¹ with V from the systems' cells
    assert main([*argv[:-6], "--units", "absorption", "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["metadata"]["units"] == "cm^-1" and doc["metadata"]["volume_a3"] == pytest.approx(8000.0)


def test_cli_labels_from_npz_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = harmonic.dipoles(harmonic.md(1, 600, DT, 300.0, equipartition=True))[0]
    np.savez(tmp_path / "series.npz", dipole=m)
    out = tmp_path / "o.json"
    assert main(["spectrum", "--kind", "ir", "--labels", "-t", str(tmp_path / "series.npz"), "--dt", str(DT),
                 "-o", str(out)]) == 0
    assert json.loads(out.read_text())["metadata"]["units_kind"] == "molar"  # no cell: per molecule
    np.savez(tmp_path / "wrong.npz", polarizability=np.zeros((10, 9)))
    assert main(["spectrum", "--kind", "ir", "--labels", "-t", str(tmp_path / "wrong.npz"), "--dt", "1"]) == 2
    assert "has no dipole array" in capsys.readouterr().err
    assert main(["spectrum", "--kind", "ir", "-t", str(tmp_path / "series.npz"), "--dt", "1"]) == 2
    assert "--labels" in capsys.readouterr().err


def test_raman_depolarisation_ratio_per_band() -> None:
    """A totally symmetric mode (α ∝ 1) is polarised, ρ = 0; a traceless mode is depolarised,
    ρ = 3/4; each band reports its own ratio."""
    t = np.arange(4000) * DT
    nu_iso, nu_aniso = 1000.0, 3000.0
    from model.spectra_units import C_CM_PER_FS

    iso = np.cos(2 * np.pi * C_CM_PER_FS * nu_iso * t)[:, None, None] * np.eye(3)
    traceless = np.diag([1.0, -1.0, 0.0]) + 0.5 * (np.eye(3)[[0]].T @ np.eye(3)[[2]] + np.eye(3)[[2]].T @ np.eye(3)[[0]])
    aniso = np.cos(2 * np.pi * C_CM_PER_FS * nu_aniso * t + 0.3)[:, None, None] * traceless
    from model.spectra import raman_spectrum

    spec = raman_spectrum(iso + aniso, SpectrumOptions(dt_fs=DT, bands=((800.0, 1200.0), (2800.0, 3200.0))))
    low, high = spec.bands or []
    assert low["depolarization_ratio"] == pytest.approx(0.0, abs=1e-3)
    assert high["depolarization_ratio"] == pytest.approx(0.75, rel=1e-3)
    assert set(low["integrals"]) == {"iso", "aniso", "vv", "vh"}
    assert "Bose–Einstein" in spec.metadata["temperature_factor"]
