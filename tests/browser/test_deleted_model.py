"""A job whose model was deleted shows the model as "(deleted)", not as a link to a model
that is gone — in the jobs list and on the job's page (issue 12 item 8)."""

from __future__ import annotations

from kit import DEEPMD_REF
from pagekit import Page, Service
from playwright.sync_api import expect

WATER = {"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}


def test_a_job_whose_model_was_deleted_shows_it_as_deleted(signed_in: Page, service: Service) -> None:
    http = service.api.http
    r = http.post("/v1/models", files={"file": ("slim.pt", (DEEPMD_REF / "dipole" / "model_slim.pt").read_bytes())})
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    r = http.post(f"/v1/models/{model_id}/predict?job=true", json={"structures": [WATER]})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    page, link = signed_in.page, f"a[href='#/models?id={model_id}']"

    # while the model exists: a link to it
    signed_in.goto(f"#/jobs/{job_id}")
    expect(page.locator(f"main {link}")).to_have_text(model_id)

    assert http.delete(f"/v1/models/{model_id}").status_code == 204
    signed_in.goto("#/jobs")
    row = page.locator(f"#jobs-table tr[data-key='{job_id}']")
    expect(row).to_contain_text(f"{model_id} (deleted)")
    expect(row.locator(link)).to_have_count(0)
    signed_in.goto(f"#/jobs/{job_id}")
    expect(page.locator("main")).to_contain_text(f"{model_id} (deleted)")
    expect(page.locator(f"main {link}")).to_have_count(0)
    assert page.locator("main span[title='this model has been deleted']").count() == 1
    signed_in.check_a11y()
