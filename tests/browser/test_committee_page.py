"""A committee model on the page, end to end: a committee file uploaded as a model (the
worker inspects it), a real spectrum job with it (worker), then in Chromium the models
list shows the committee and the job's spectrum is drawn with its shaded ± std band —
checked on the figure's attributes and on the canvas pixels themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pagekit import Page, Service

pytestmark = [pytest.mark.browser, pytest.mark.e2e]
IR_RGB = (0xC2, 0x33, 0x4D)  # the IR series colour (spectrum-panel.js)

# translucent pixels of the IR colour on the plot's canvas: the band (lines are opaque)
COUNT_BAND_PIXELS = """(rgb) => {
  const canvas = document.querySelector('.spectrum-panel figure.plot canvas.plot-base');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const a = data[i + 3];
    if (a > 20 && a < 120 && Math.abs(data[i] - rgb[0]) < 40 && Math.abs(data[i + 1] - rgb[1]) < 40
        && Math.abs(data[i + 2] - rgb[2]) < 40) n += 1;
  }
  return n;
}"""


def _committee_file(tmp: Path) -> Path:
    """Two untrained dipole members for water (different seeds: they disagree)."""
    from model.checkpoint import save_checkpoint
    from model.committee import save_committee
    from model.config import ModelConfig, parse_section
    from model.tensor_model import TensorModel

    paths = []
    for seed in (1, 2):
        config = parse_section({
            "type_map": ["O", "H"], "atom_exclude_types": [1],
            "descriptor": {"type": "se_e2_a", "sel": [4, 8], "rcut": 4.0, "rcut_smth": 3.5, "neuron": [4, 8],
                           "axis_neuron": 4, "type_one_side": True, "seed": seed},
            "fitting_net": {"type": "dipole", "neuron": [8], "seed": seed}}, ModelConfig)
        paths.append(tmp / f"m{seed}.pt")
        save_checkpoint(paths[-1], TensorModel(config))
    return save_committee(tmp / "committee.pt", paths)


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_committee_model_and_its_spectrum_band(signed_in: Page, service: Service, tmp_path: Path) -> None:
    from kit import rotating_water_xyz

    api = service.api
    paths = api.http.get("/openapi.json").json()["paths"]
    if "/v1/jobs/spectrum" not in paths:
        pytest.skip("the spectrum API is not in this build")
    r = api.http.post("/v1/models", files={"file": ("committee.pt", _committee_file(tmp_path).read_bytes())},
                      data={"name": "water committee"})
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["committee_size"] == 2
    r = api.http.post("/v1/jobs/spectrum", data={"model_id": model["id"], "kind": "ir", "dt_fs": "2"},
                      files={"file": ("rotor.xyz", rotating_water_xyz(200, 2.0, 1000.0))})
    assert r.status_code == 202, r.text
    job = api.wait_job(r.json()["id"], timeout=180)
    assert job["status"] == "succeeded", job.get("error")

    ex, page = _expect(), signed_in.page
    signed_in.goto(f"#/models?id={model['id']}")
    row = page.locator(f"#models-table tr[data-id='{model['id']}']")
    ex(row.locator(".committee")).to_have_text("committee of 2")
    signed_in.shot("20-committee-model")

    signed_in.goto(f"#/jobs/{job['id']}")
    plot = page.locator(".spectrum-panel figure.plot")
    ex(plot).to_have_attribute("data-series", "ir")
    ex(plot).to_have_attribute("data-bands", "ir")
    assert int(plot.get_attribute("data-band-points") or 0) > 100
    ex(page.locator(".committee-note")).to_contain_text("Committee of 2 members")
    ex(page.locator(".committee-note .peaks")).to_contain_text("cm⁻¹")
    band_pixels = page.evaluate(COUNT_BAND_PIXELS, list(IR_RGB))
    assert band_pixels > 200, band_pixels
    signed_in.shot("21-committee-spectrum-band")
    # hiding the series hides its band too
    plot.locator(".legend-item[data-series='ir']").click()
    ex(plot).to_have_attribute("data-bands", "")
    assert page.evaluate(COUNT_BAND_PIXELS, list(IR_RGB)) == 0
