"""Spectra with error bars: each member's spectrum from one batched pass, their mean ± std
per grid point, peak positions with their spread, and the outputs that carry them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import save_checkpoint
from model.cli import main
from model.committee import Committee
from model.committee_spectra import committee_spectrum
from model.spectrum_options import Spectrum
from model.spectrum_parts import run_spectrum
from model.spectrum_pipeline import parse_request
from tests.model.test_committee import member
from tests.model.test_spectrum_pipeline import WANNIER, rotating, write_xyz


def _gauss(nu: np.ndarray, at: float, width: float = 15.0) -> np.ndarray:
    return np.exp(-0.5 * ((nu - at) / width) ** 2)


def test_mean_std_and_peak_spread_of_member_spectra() -> None:
    nu = np.arange(0.0, 3000.0, 2.0)
    centres = [1000.0, 1010.0, 1020.0]
    spectra = [Spectrum(nu, {"ir": _gauss(nu, c) + 0.5 * _gauss(nu, 2500.0)}, {"units": "arb."}) for c in centres]
    out = committee_spectrum(spectra)
    stack = np.stack([s.intensities["ir"] for s in spectra])
    np.testing.assert_allclose(out.intensities["ir"], stack.mean(0))
    assert out.std is not None
    np.testing.assert_allclose(out.std["ir"], stack.std(0))
    assert out.peaks is not None and len(out.peaks) == 2
    first, second = out.peaks
    assert first["member_cm"] == centres
    assert first["mean_cm"] == pytest.approx(1010.0) and first["std_cm"] == pytest.approx(np.std(centres))
    assert second["mean_cm"] == pytest.approx(2500.0) and second["std_cm"] == 0.0
    doc = out.to_dict()
    assert doc["intensities_std"]["ir"][500] == pytest.approx(float(stack.std(0)[500]))
    assert doc["metadata"]["committee_size"] == 3
    assert out.to_csv().splitlines()[0] == "wavenumber_cm,ir,ir_std"


@pytest.mark.parametrize("options", [{}, WANNIER])
def test_committee_spectrum_is_the_mean_of_each_members_own_spectrum(tmp_path: Path,
                                                                     options: dict[str, object]) -> None:
    syms, coords = rotating(64, 2.0, 800.0)
    xyz = write_xyz(tmp_path / "t.xyz", syms, coords)
    models = [member("dipole", s) for s in range(3)]
    request = parse_request("ir", 2.0, {"max_corr_fs": 60.0, **options})
    result = run_spectrum(Committee(models).eval(), [xyz], request, predictions=[tmp_path / "p.npz"])
    assert result.member_spectra is not None and len(result.member_spectra) == 3
    alone = [run_spectrum(m, [xyz], request).spectrum for m in models]
    for got, ref in zip(result.member_spectra, alone, strict=True):
        np.testing.assert_allclose(got.intensities["ir"], ref.intensities["ir"], rtol=1e-9, atol=1e-12)
    stack = np.stack([s.intensities["ir"] for s in alone])
    spectrum = result.spectrum
    assert spectrum.std is not None
    np.testing.assert_allclose(spectrum.intensities["ir"], stack.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(spectrum.std["ir"], stack.std(0), rtol=1e-6, atol=1e-12)
    assert spectrum.std["ir"].max() > 1e-3 * spectrum.intensities["ir"].max()  # the members differ
    with np.load(tmp_path / "p.npz") as z:
        assert int(z["committee_size"]) == 3 and z["devi_global"].shape == (64,)


def test_spectrum_cli_with_several_models_writes_the_band(tmp_path: Path) -> None:
    syms, coords = rotating(48, 2.0, 800.0)
    xyz = write_xyz(tmp_path / "t.xyz", syms, coords)
    args = ["spectrum", "-t", str(xyz), "--kind", "ir", "--dt", "2", "--max-corr", "50", "-o",
            str(tmp_path / "ir.json"), "--csv", str(tmp_path / "ir.csv")]
    for s in range(2):
        save_checkpoint(tmp_path / f"m{s}.pt", member("dipole", s))
        args += ["-m", str(tmp_path / f"m{s}.pt")]
    assert main(args) == 0
    doc = json.loads((tmp_path / "ir.json").read_text())
    assert len(doc["intensities_std"]["ir"]) == len(doc["wavenumber_cm"]) and doc["peaks"]
    assert (tmp_path / "ir.csv").read_text().splitlines()[0] == "wavenumber_cm,ir,ir_std"
