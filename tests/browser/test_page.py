"""The page in headless Chromium against a real service: sign in with a token, upload the
example data, check and submit the DeePMD-kit example input through the form, watch the
training succeed with its learning curve drawn (no reload), see an invalid input's JSON
path, cancel a running job, read the models; the spectrum view on a stubbed spectrum.

The tests of this module share one service and run in order: the dataset and the model
made by the earlier ones are used by the later ones (``service.state``)."""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from pagekit import Page, Service, route_job, stub_spectrum_job

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

FIXTURES = Path(__file__).parent / "fixtures"


def example_input(numb_steps: int) -> dict[str, Any]:
    """DeePMD-kit's water dipole example input, its system paths unchanged; only made small."""
    from kit import WATER

    raw: dict[str, Any] = json.loads((WATER / "dipole" / "dipole_input_torch.json").read_text())
    raw["model"]["descriptor"].update(neuron=[4, 8], axis_neuron=4, sel=[20, 40])
    raw["model"]["fitting_net"]["neuron"] = [8]
    raw["training"]["training_data"]["batch_size"] = 1
    raw["training"]["validation_data"]["numb_btch"] = 1
    raw["training"].update(numb_steps=numb_steps, disp_freq=5, save_freq=10)
    return raw


def expect() -> Any:
    from playwright.sync_api import expect as _expect

    return _expect


def watch_status(page: Any, until: set[str], timeout: float) -> list[str]:
    """The job page's status as it changes (read from the DOM, no reload) until one of `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = page.get_attribute("#job-status", "data-status", timeout=5_000)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status in until:
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the job page never showed {until}; it showed {seen}")


def need(service: Service, *keys: str) -> None:
    missing = [k for k in keys if k not in service.state]
    if missing:
        pytest.skip(f"needs {missing} from an earlier test of this module, which did not get that far")


# --- sign in ------------------------------------------------------------------------------


def test_token_sign_in(browser: Page, service: Service) -> None:
    ex, page = expect(), browser.page
    browser.goto()
    # token auth and no token: the sign-in card only, and no api request that would fail
    ex(page.locator("#signin-h")).to_have_text("Sign in")
    ex(page.locator("#token-input")).to_be_focused()
    ex(page.locator("#jobs-table")).to_have_count(0)
    browser.shot("01-sign-in")
    browser.check_a11y()

    browser.expect_http(401)  # the wrong token, on purpose
    page.fill("#token-input", "dpt_not-a-real-token")
    page.get_by_role("button", name="Sign in").click()
    ex(page.locator("#token-msg")).to_have_text("This token was rejected.")
    assert page.evaluate("localStorage.getItem('dptensor.token')") is None

    page.fill("#token-input", service.token)
    page.keyboard.press("Enter")
    ex(page.locator("#signed-in-user")).to_have_attribute("data-user", "alice")
    assert page.evaluate("localStorage.getItem('dptensor.token')") == service.token
    ex(page.locator("#jobs-table")).to_be_visible()
    # a reload keeps the token (localStorage) and sends it
    page.reload()
    ex(page.locator("#signed-in-user")).to_have_attribute("data-user", "alice")
    ex(page.locator("#jobs-table")).to_be_visible()
    # a token that stops working (here: replaced by a wrong one) brings the card back
    page.evaluate("localStorage.setItem('dptensor.token', 'dpt_revoked')")
    page.locator("#filter-kind").select_option("train")
    ex(page.locator("#token-msg")).to_contain_text("refused the token (401")
    page.fill("#token-input", service.token)
    page.keyboard.press("Enter")
    ex(page.locator("#filter-kind")).to_be_visible()
    page.click("#sign-out")
    ex(page.locator("#token-msg")).to_have_text("Signed out.")


# --- dataset, training ------------------------------------------------------------------------


def test_upload_dataset_shows_validation_summary(signed_in: Page, service: Service, water_page_tgz: Path) -> None:
    ex, page = expect(), signed_in.page
    signed_in.goto("#/datasets")
    page.set_input_files("#ds-file", str(water_page_tgz))
    page.fill("#ds-name", "water dipole example")
    page.get_by_role("button", name="Upload and check").click()
    result = page.locator(".upload-result")
    ex(result.locator(".success-note")).to_contain_text("4 systems, all valid", timeout=30_000)
    rows = result.locator("table.systems-table tbody tr")
    ex(rows).to_have_count(4)
    paths = rows.evaluate_all("rs => rs.map(r => r.dataset.path)")
    assert sorted(paths) == ["training_data_reformat/atomic_system", "training_data_reformat/global_system",
                             "validation_data_reformat/atomic_system", "validation_data_reformat/global_system"]
    ex(rows.first).to_contain_text("80")  # frames
    ex(result).to_contain_text("dipole: atomic (natoms)")
    ex(page.locator("#datasets-list details.dataset")).to_have_count(1)
    signed_in.shot("02-dataset-uploaded")
    signed_in.check_a11y()
    service.state["dataset"] = service.api.http.get("/v1/datasets").json()[0]


def test_train_through_the_form_and_watch_it(signed_in: Page, service: Service) -> None:
    need(service, "dataset")
    ex, page = expect(), signed_in.page
    ds = service.state["dataset"]
    signed_in.goto("#/train")
    ex(page.locator("#train-dataset")).to_have_value(ds["id"])  # the only dataset: chosen
    page.fill("#input-json", json.dumps(example_input(40), indent=2))
    # the example's paths (./training_data_reformat/…) are matched with the dataset
    ex(page.locator("#input-json-status")).to_contain_text("Valid", timeout=15_000)
    ticked = page.locator("#train-systems input:checked").evaluate_all(
        "bs => bs.map(b => `${b.dataset.role}:${b.dataset.path}`)")
    assert sorted(ticked) == ["train:training_data_reformat/atomic_system", "train:training_data_reformat/global_system",
                              "valid:validation_data_reformat/atomic_system", "valid:validation_data_reformat/global_system"]
    page.fill("#job-name", "water dipole (browser test)")
    signed_in.shot("03-train-form")
    signed_in.check_a11y()

    page.evaluate("window.__sameDocument = true")
    page.click("#start-training")
    page.wait_for_url(re.compile(r"#/jobs/job-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    seen = watch_status(page, {"succeeded", "failed", "cancelled"}, timeout=150)
    assert seen[-1] == "succeeded", (seen, service.api.job(job_id).get("error"))
    assert page.evaluate("window.__sameDocument") is True  # followed without any reload
    ex(page).to_have_title("succeeded · water dipole (browser test) · dptensor")

    # the learning curve: every finite RMSE value of lcurve.out is a drawn point
    lcurve = service.api.http.get(f"/v1/jobs/{job_id}/lcurve").json()
    finite = sum(1 for r in lcurve["rows"] for c in lcurve["columns"] if c.startswith("rmse") and r[c] is not None)
    assert lcurve["rows"][-1]["step"] == 40 and finite > 0
    plot = page.locator("#lcurve-plot")
    ex(plot).to_have_attribute("data-points", str(finite))
    legend = plot.locator(".legend-item").evaluate_all("bs => bs.map(b => b.dataset.series)")
    assert legend == [c for c in lcurve["columns"] if c.startswith("rmse")]
    ex(page.locator("#lcurve-latest")).to_contain_text("step 40")
    # hover readout
    box = page.locator("#lcurve-plot .plot-overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    ex(page.locator("#lcurve-plot .plot-tip")).to_contain_text("step:")
    ex(page.locator("#job-logs")).to_contain_text("succeeded")

    job = service.api.job(job_id)
    assert job["name"] == "water dipole (browser test)" and job["model_id"]
    sent = job["inputs"]["training"]
    assert sent["training_data"]["systems"] == [f"dataset:{ds['id']}/training_data_reformat/atomic_system",
                                                f"dataset:{ds['id']}/training_data_reformat/global_system"]
    assert job["inputs"]["model"] == example_input(40)["model"]  # the rest as pasted

    # downloads, with the token
    with page.expect_download() as dl:
        page.click("#job-files [data-file='lcurve.out']")
    assert Path(dl.value.path()).read_bytes() == service.api.http.get(f"/v1/jobs/{job_id}/files/lcurve.out").content
    with page.expect_download() as dl:
        page.click(f"#job-files [data-file='{job['model_id']}.pt']")
    assert dl.value.suggested_filename == f"{job['model_id']}.pt" and Path(dl.value.path()).stat().st_size > 1000
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.45)
    signed_in.shot("04-job-succeeded")
    signed_in.check_a11y()
    service.state["model_id"] = job["model_id"]
    service.state["train_job"] = job_id


def _long_training(service: Service, name: str) -> str:
    ds = service.state["dataset"]
    raw = example_input(200_000)
    raw["training"]["training_data"]["systems"] = [f"dataset:{ds['id']}/training_data_reformat"]
    raw["training"]["validation_data"]["systems"] = [f"dataset:{ds['id']}/validation_data_reformat"]
    r = service.api.http.post("/v1/jobs/train", json=raw, params={"name": name})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _cancel(service: Service, job_id: str) -> None:
    service.api.http.post(f"/v1/jobs/{job_id}/cancel")
    wait_for_status(service, job_id, {"cancelled", "failed", "succeeded"}, timeout=60)


def wait_for_status(service: Service, job_id: str, until: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = str(service.api.job(job_id)["status"])
        if status in until:
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {until}")


def test_learning_curve_grows_from_zero_rows(signed_in: Page, service: Service) -> None:
    """The job page opened while the curve is empty follows it as it grows, asking only for
    the rows after the last step it has."""
    need(service, "dataset")
    ex, page = expect(), signed_in.page
    # a training holds the train worker, so the watched job waits queued with no rows at all
    blocker = _long_training(service, "blocker")
    wait_for_status(service, blocker, {"running"}, timeout=60)
    job_id = _long_training(service, "curve from zero")
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if "/lcurve" in r.url else None)
    try:
        with page.expect_response(lambda r: "/lcurve" in r.url) as first:
            signed_in.goto(f"#/jobs/{job_id}")
        assert first.value.json() == {"columns": [], "rows": [], "file": None, "download": None}
        plot = page.locator("#lcurve-plot")
        ex(page.locator("#job-status")).to_have_attribute("data-status", "queued")
        ex(plot).to_have_attribute("data-points", "0")
        _cancel(service, blocker)  # now the watched job runs
        points = []
        for _ in range(2):  # it grows, and grows again, without a reload
            ex(plot).not_to_have_attribute("data-points", str(points[-1] if points else 0), timeout=60_000)
            points.append(int(plot.get_attribute("data-points") or 0))
        assert points[0] > 0 and points[1] > points[0], points
    finally:
        _cancel(service, job_id)
    # incremental: every row was sent once, in order; each ask after rows names the last step
    answers = [(r.url, r.json()["rows"]) for r in responses]
    steps = [row["step"] for _, rows in answers for row in rows]
    assert steps and steps == sorted(set(steps)), steps
    had: int | None = None
    for url, rows in answers:
        assert (f"after={had}" in url) if had is not None else ("after=" not in url), (url, had)
        had = rows[-1]["step"] if rows else had


def test_invalid_input_shows_the_json_path(signed_in: Page, service: Service) -> None:
    need(service, "dataset")
    ex, page = expect(), signed_in.page
    signed_in.goto("#/train")
    raw = example_input(20)
    raw["training"]["numb_stepz"] = 20  # a typo: unknown key
    text = json.dumps(raw, indent=2)
    page.fill("#input-json", text)
    # checked while typing (no job is created)
    problems = page.locator("#input-json-problems .problems li")
    ex(problems).to_have_count(1, timeout=15_000)
    ex(problems.first).to_have_attribute("data-loc", "training.numb_stepz")
    ex(problems.first).to_contain_text("unknown key")
    line = text.splitlines().index(next(ln for ln in text.splitlines() if '"numb_stepz"' in ln)) + 1
    ex(problems.first.locator(".problem-line")).to_have_text(f"line {line}")
    ex(page.locator(f".gutter div:nth-child({line})")).to_have_class("err")
    ex(page.locator("#input-json")).to_have_attribute("aria-invalid", "true")
    problems.first.locator("button.problem-loc").click()
    assert page.evaluate("(() => { const t = document.getElementById('input-json');"
                         " return t.value.slice(t.selectionStart, t.selectionEnd); })()") == '"numb_stepz"'

    # submitting anyway: the api's 422 with the same path, next to the editor; no job
    signed_in.expect_http(422)
    before = service.api.http.get("/v1/jobs").json()["total"]
    page.click("#start-training")
    ex(page.locator("#submit-message")).to_contain_text("Not started")
    ex(page.locator("#input-json-problems")).to_contain_text("Not started")
    ex(problems.first).to_have_attribute("data-loc", "training.numb_stepz")
    assert service.api.http.get("/v1/jobs").json()["total"] == before
    signed_in.shot("05-train-invalid-input")
    signed_in.check_a11y()

    # broken JSON: line and column, before any request
    page.fill("#input-json", '{\n  "model": {,\n}')
    ex(page.locator("#input-json-status")).to_contain_text("Not valid JSON (line 2")


def test_jobs_list_live_and_cancel(signed_in: Page, service: Service) -> None:
    need(service, "dataset", "train_job")
    ex, page = expect(), signed_in.page
    ds = service.state["dataset"]
    signed_in.goto("#/jobs")
    ex(page.locator(f"#jobs-table tr[data-key='{service.state['train_job']}']")).to_have_attribute(
        "data-status", "succeeded")
    page.evaluate("window.__sameDocument = true")
    # a long training submitted elsewhere appears and starts running without a reload
    raw = example_input(200_000)
    raw["training"]["training_data"]["systems"] = [f"dataset:{ds['id']}/training_data_reformat"]
    raw["training"]["validation_data"]["systems"] = [f"dataset:{ds['id']}/validation_data_reformat"]
    r = service.api.http.post("/v1/jobs/train", json=raw, params={"name": "long run to cancel"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    t0 = time.monotonic()
    row = page.locator(f"#jobs-table tr[data-key='{job_id}']")
    ex(row).to_be_visible(timeout=5_000)
    assert time.monotonic() - t0 < 3.0  # polled about once a second
    ex(row).to_have_attribute("data-status", "running", timeout=60_000)
    ex(row.locator("[role=progressbar]")).to_have_attribute("aria-valuemax", "200000")
    ex(row).to_contain_text("alice")
    signed_in.shot("06-jobs-running")
    signed_in.check_a11y()

    row.locator("a.job-link").click()
    ex(page.locator("#job-status")).to_have_attribute("data-status", "running")
    ex(page.locator("#lcurve-plot")).not_to_have_attribute("data-points", "0", timeout=30_000)
    ex(page.locator(".summary-progress")).to_contain_text("ETA")
    page.click("#cancel-job")
    seen = watch_status(page, {"cancelled", "succeeded", "failed"}, timeout=60)
    assert seen[-1] == "cancelled", seen
    ex(page.locator("#cancel-job")).to_have_count(0)
    signed_in.shot("07-job-cancelled")
    signed_in.check_a11y()
    page.click("a.back")
    ex(page.locator(f"#jobs-table tr[data-key='{job_id}']")).to_have_attribute("data-status", "cancelled")
    assert page.evaluate("window.__sameDocument") is True
    signed_in.shot("08-jobs-list")


def test_models_list_with_metrics(signed_in: Page, service: Service) -> None:
    need(service, "model_id")
    ex, page = expect(), signed_in.page
    signed_in.goto("#/models")
    row = page.locator(f"#models-table tr[data-id='{service.state['model_id']}']")
    ex(row).to_contain_text("dipole")
    ex(row).to_contain_text("validation RMSE")
    ex(row.locator(".metrics dd").first).not_to_be_empty()
    ex(row).to_contain_text(service.state["train_job"])
    signed_in.shot("09-models")
    signed_in.check_a11y()
    # the model for DeePMD-kit: its serialized model (.dp, HDF5), written by a worker
    with page.expect_download() as dl:
        row.get_by_role("button", name=re.compile("for DeePMD-kit")).click()
    assert dl.value.suggested_filename == f"{service.state['model_id']}.dp"
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"
    row.get_by_role("link", name="IR spectrum…").click()
    ex(page.locator("#sp-model")).to_have_value(service.state["model_id"])
    ex(page.locator("#sp-kind-ir")).to_be_checked()  # a dipole model: IR
    # the form's own checks, next to their fields
    page.click("#sp-submit")
    ex(page.locator("#sp-dt")).to_have_attribute("aria-invalid", "true")
    ex(page.locator("#sp-dt-err")).to_have_text("a time step > 0 is needed")
    ex(page.locator("#sp-file-err")).to_have_text("choose a trajectory file")
    ex(page.locator("#sp-dt")).to_be_focused()


# --- spectra -------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_spectrum_view_on_a_stubbed_spectrum(signed_in: Page) -> None:
    """The spectrum view alone: the job and spectrum endpoints are answered from a fixture
    file in the browser (page.route), so this runs without the spectrum API or a worker."""
    ex, page = expect(), signed_in.page
    job_id = "job-stubspectrum"
    spectrum = json.loads((FIXTURES / "spectrum_raman.json").read_text())
    n = len(spectrum["wavenumber_cm"])
    csv = "wavenumber_cm,iso,aniso,vv,vh\n" + "".join(
        f"{x},{','.join(str(spectrum['intensities'][k][i]) for k in ('iso', 'aniso', 'vv', 'vh'))}\n"
        for i, x in enumerate(spectrum["wavenumber_cm"]))

    route_job(page, stub_spectrum_job(job_id, name="water Raman (stub)", kind="raman", frames=2000),
              {"spectrum": {"json": spectrum}, "spectrum.csv": {"body": csv, "content_type": "text/csv"},
               "logs": {"body": "spectrum of 2000 frames\nsucceeded\n", "content_type": "text/plain"}})
    signed_in.goto(f"#/jobs/{job_id}")
    plot = page.locator(".spectrum-panel figure.plot")
    ex(plot).to_have_attribute("data-points", str(4 * n))
    ex(plot).to_have_attribute("data-series", "iso,aniso,vv,vh")
    ex(page.locator(".spectrum-meta .meta-brief")).to_contain_text("window gaussian")

    # toggles
    aniso = plot.locator(".legend-item[data-series='aniso']")
    aniso.click()
    ex(aniso).to_have_attribute("aria-pressed", "false")
    ex(plot).to_have_attribute("data-series", "iso,vv,vh")
    ex(plot).to_have_attribute("data-points", str(3 * n))
    aniso.press("Enter")  # keyboard too
    ex(plot).to_have_attribute("data-series", "iso,aniso,vv,vh")

    # drag a horizontal band: x zoom; double-click: reset
    overlay = plot.locator(".plot-overlay")
    box = overlay.bounding_box()
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.55, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y + 2, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.8, y + 3, steps=5)
    page.mouse.up()
    ex(plot).to_have_attribute("data-zoomed", "true")
    x0, x1 = (float(v) for v in plot.get_attribute("data-x-range").split(","))
    assert 1500 < x0 < x1 < 3500, (x0, x1)
    zoomed_points = int(plot.get_attribute("data-points"))
    assert 0 < zoomed_points < 4 * n
    ex(plot.get_by_role("button", name="Reset zoom")).to_be_enabled()
    overlay.dblclick()
    ex(plot).to_have_attribute("data-zoomed", "false")
    # keyboard zoom and reset on the focused plot
    plot.locator("canvas.plot-base").focus()
    page.keyboard.press("+")
    ex(plot).to_have_attribute("data-zoomed", "true")
    page.keyboard.press("Escape")
    ex(plot).to_have_attribute("data-zoomed", "false")

    # hover values
    page.mouse.move(box["x"] + box["width"] * 0.78, box["y"] + box["height"] * 0.4)
    tip = plot.locator(".plot-tip")
    ex(tip).to_be_visible()
    ex(tip).to_contain_text("cm⁻¹")
    ex(tip).to_contain_text("VV (polarised):")

    # downloads: CSV from the api, PNG from the canvas
    with page.expect_download() as dl:
        page.click("#spectrum-csv")
    assert dl.value.suggested_filename == f"{job_id}-spectrum.csv"
    assert Path(dl.value.path()).read_text() == csv
    with page.expect_download() as dl:
        page.click("#spectrum-png")
    assert dl.value.suggested_filename == f"{job_id}-spectrum.png"
    png = Path(dl.value.path()).read_bytes()
    width, height = _png_size(png)
    area = plot.locator(".plot-area").bounding_box()
    assert abs(width - 2 * area["width"]) <= 2 and height > 2 * area["height"] and len(png) > 20_000
    (signed_in.screenshots / "11-spectrum-export.png").write_bytes(png)
    page.mouse.move(box["x"] + box["width"] * 0.78, box["y"] + box["height"] * 0.4)
    signed_in.shot("10-spectrum-view")
    signed_in.check_a11y()


def test_spectrum_job_through_the_form(signed_in: Page, service: Service) -> None:
    """A real spectrum job (worker) from the form: a system of the uploaded dataset and the
    trained model; runs once the spectrum API is part of the service."""
    need(service, "dataset", "model_id")
    paths = service.api.http.get("/openapi.json").json()["paths"]
    if "/v1/jobs/spectrum" not in paths or "/v1/jobs/{job_id}/spectrum" not in paths:
        pytest.skip("the spectrum API (POST /v1/jobs/spectrum, GET /v1/jobs/{id}/spectrum) is not in this build")
    ex, page = expect(), signed_in.page
    ds = service.state["dataset"]
    signed_in.goto(f"#/spectra?model={service.state['model_id']}")
    ex(page.locator("#sp-model")).to_have_value(service.state["model_id"])
    page.check("#sp-src-data")
    page.select_option("#sp-dataset", ds["id"])
    page.select_option("#sp-system", "validation_data_reformat/global_system")
    page.fill("#sp-dt", "1")
    signed_in.shot("12-spectrum-form")
    signed_in.check_a11y()
    # the api's 422 lands next to its field (options.temperature_k -> Temperature)
    signed_in.expect_http(422)
    page.fill("#sp-temperature", "-5")
    page.click("#sp-submit")
    ex(page.locator("#sp-temperature-err")).to_contain_text("> 0")
    ex(page.locator("#sp-temperature")).to_be_focused()
    page.fill("#sp-temperature", "300")
    page.click("#sp-submit")
    page.wait_for_url(re.compile(r"#/jobs/job-[0-9a-f]+$"), timeout=30_000)
    job_id = page.url.rsplit("/", 1)[1]
    seen = watch_status(page, {"succeeded", "failed", "cancelled"}, timeout=120)
    assert seen[-1] == "succeeded", (seen, service.api.job(job_id).get("error"))
    plot = page.locator(".spectrum-panel figure.plot")
    ex(plot).to_have_attribute("data-series", "ir")
    ex(plot).not_to_have_attribute("data-points", "0")
    with page.expect_download() as dl:
        page.click("#spectrum-csv")
    assert Path(dl.value.path()).read_bytes() == service.api.http.get(f"/v1/jobs/{job_id}/spectrum.csv").content
    signed_in.shot("13-spectrum-job")


def test_learning_curve_download_is_the_file_the_api_names(signed_in: Page, service: Service) -> None:
    """The plot's download button takes the file where GET …/lcurve says it is: a committee
    training keeps its curves in member-<i>/, under the input's disp_file name."""
    need(service, "dataset")
    ex, page = expect(), signed_in.page
    ds = service.state["dataset"]
    raw = example_input(10)
    raw["training"]["training_data"]["systems"] = [f"dataset:{ds['id']}/training_data_reformat/global_system"]
    raw["training"]["validation_data"]["systems"] = [f"dataset:{ds['id']}/validation_data_reformat/global_system"]
    raw["training"]["disp_file"] = "curve.txt"
    r = service.api.http.post("/v1/jobs/train", json={**raw, "committee": 2}, params={"name": "committee curve"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert wait_for_status(service, job_id, {"succeeded", "failed", "cancelled"}, timeout=300) == "succeeded"
    lcurve = service.api.http.get(f"/v1/jobs/{job_id}/lcurve").json()
    assert lcurve["file"] == "curve.txt" and lcurve["rows"][-1]["step"] == 10

    signed_in.goto(f"#/jobs/{job_id}")
    button = page.locator("#lcurve-plot #lcurve-download")
    ex(button).to_have_text("curve.txt")
    with page.expect_download() as dl:
        button.click()
    assert dl.value.suggested_filename == f"{job_id}-curve.txt"
    assert Path(dl.value.path()).read_bytes() == service.api.http.get(lcurve["download"]).content
    assert Path(dl.value.path()).read_text().lstrip("# ").startswith("step")
    ex(page.locator(".view-message")).to_be_empty()  # no failed download
