"""The spectrum page as a spectroscopist uses it: absolute units on the axis, the band table,
and a measured spectrum (CSV) overlaid with a scale factor and frequency scaling, kept in the
CSV download. The job and spectrum endpoints are answered in the browser (page.route) with
a spectrum the library computed, so no worker is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pagekit import Page, route_job, stub_spectrum_job

pytestmark = pytest.mark.browser


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _ir_spectrum() -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from model.spectra import SpectrumOptions, ir_spectrum
    from tests.model import harmonic

    m = harmonic.dipoles(harmonic.md(4, 800, 0.5, 300.0, seed=1, equipartition=True))
    opts = SpectrumOptions(dt_fs=0.5, molecules=1, bands=((100.0, 1700.0), (1700.0, 3200.0)), freq_max_cm=4500.0)
    return ir_spectrum(list(m), opts).to_dict()


def test_units_band_table_and_reference_overlay(signed_in: Page, tmp_path: Path) -> None:
    ex, page = _expect(), signed_in.page
    job_id = "job-stuboverlay1"
    spectrum = _ir_spectrum()
    n = len(spectrum["wavenumber_cm"])

    route_job(page, stub_spectrum_job(job_id, name="IR (stub)", kind="ir", frames=800),
              {"spectrum": {"json": spectrum}})
    signed_in.goto(f"#/jobs/{job_id}")
    plot = page.locator(".spectrum-panel figure.plot")
    ex(plot).to_have_attribute("data-series", "ir")
    # unit labels: the axis names the quantity and its absolute unit
    ex(plot).to_have_attribute("data-y-label", "molar absorption ε(ν̃) per molecule (km mol⁻¹ (cm⁻¹)⁻¹)")
    ex(page.locator(".spectrum-meta .meta-brief")).to_contain_text("units km mol⁻¹ (cm⁻¹)⁻¹")
    # the band table, in km/mol
    rows = page.locator("#spectrum-bands tbody tr")
    ex(rows).to_have_count(2)
    ex(rows.nth(0)).to_have_attribute("data-band", "100:1700")
    ex(rows.nth(0).locator("td").nth(3)).to_have_text("km/mol")
    shown = float(rows.nth(0).locator("td").nth(1).inner_text().replace(",", ""))
    assert shown == pytest.approx(spectrum["bands"][0]["integral"], rel=1e-3)

    # overlay: a "measured" CSV with a header, a comment and a peak at 1000 cm⁻¹
    x = np.arange(400.0, 4000.0, 10.0)
    ref = tmp_path / "measured.csv"
    ref.write_text("# from a spectrometer\nwavenumber,absorbance\n" + "".join(
        f"{a},{0.5 * np.exp(-((a - 1000.0) / 30.0) ** 2)}\n" for a in x))
    page.set_input_files("#overlay-file", str(ref))
    ex(plot).to_have_attribute("data-series", "ir,reference")
    ex(plot).to_have_attribute("data-points", str(n + len(x)))
    ex(page.locator("#overlay-status")).to_contain_text("measured.csv: 360 points, intensity × 1, wavenumber × 1")
    page.fill("#overlay-scale", "200")
    page.fill("#overlay-freq-scale", "0.96")
    ex(page.locator("#overlay-status")).to_contain_text("intensity × 200, wavenumber × 0.96")
    # the legend toggles the reference like any series
    item = plot.locator(".legend-item[data-series='reference']")
    ex(item).to_contain_text("measured.csv")

    # the download keeps both: our channels and the scaled reference
    with page.expect_download() as dl:
        page.click("#spectrum-csv")
    assert dl.value.suggested_filename == f"{job_id}-spectrum-with-reference.csv"
    lines = Path(dl.value.path()).read_text().strip().split("\n")
    assert lines[0] == "wavenumber_cm,ir,reference_wavenumber_cm,reference_intensity"
    table = [line.split(",") for line in lines[1:]]
    assert len(table) == max(n, len(x))
    ref_x = np.array([float(r[2]) for r in table if r[2] != ""])
    ref_y = np.array([float(r[3]) for r in table if r[3] != ""])
    np.testing.assert_allclose(ref_x, x * 0.96, rtol=1e-12)
    assert ref_y.max() == pytest.approx(100.0, rel=1e-9) and ref_x[ref_y.argmax()] == pytest.approx(960.0)
    np.testing.assert_allclose([float(r[1]) for r in table[:n]], spectrum["intensities"]["ir"], rtol=1e-9)

    page.click("#overlay-clear")
    ex(plot).to_have_attribute("data-series", "ir")
    # a file that is not a spectrum says so, next to the control
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\nworld\n")
    page.set_input_files("#overlay-file", str(bad))
    ex(page.locator("#overlay-status")).to_contain_text("Could not read notes.txt: no rows of two numbers")
    signed_in.check_a11y()
    json.dumps(spectrum)  # the fixture is plain JSON
