"""Committee requests at the api (no worker: jobs stay queued): "committee": K on a training,
its per-member learning curves, and the selection job's checks."""

from __future__ import annotations

import json

import pytest
from kit import Users, tiny_input
from sqlalchemy import select

from jobs.db import session_scope
from jobs.settings import Settings
from jobs.tables import ModelRecord, User


def _input(dataset: dict) -> dict:
    return tiny_input(f"dataset:{dataset['id']}/train", f"dataset:{dataset['id']}/valid")


def test_committee_training_is_queued_with_the_total_of_its_members(users: Users, dataset: dict,
                                                                   settings: Settings) -> None:
    raw = {**_input(dataset), "committee": 3}
    r = users.client.post("/v1/jobs/train", json=raw, headers=users.h("alice"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["progress"]["total"] == 60 and job["inputs"]["committee"] == 3  # 3 members × 20 steps
    folder = settings.root / "jobs" / job["id"]
    assert "committee" not in json.loads((folder / "input.json").read_text())  # the DeePMD-kit input itself
    (folder / "member-2").mkdir()
    (folder / "member-2" / "lcurve.out").write_text("#  step     rmse_val\n       5    2.0e-01\n")
    lc = users.client.get(f"/v1/jobs/{job['id']}/lcurve?member=2", headers=users.h("alice")).json()
    assert lc["rows"] == [{"step": 5, "rmse_val": 0.2}]
    missing = users.client.get(f"/v1/jobs/{job['id']}/lcurve?member=3", headers=users.h("alice"))
    assert missing.status_code == 404 and "trains 3" in missing.text
    # each member's file where its curve says; member 0 has written none yet
    assert lc["download"] == f"/v1/jobs/{job['id']}/lcurve/file?member=2"
    r = users.client.get(lc["download"], headers=users.h("alice"))
    assert r.status_code == 200 and r.content == (folder / "member-2" / "lcurve.out").read_bytes()
    assert f"{job['id']}-member-2-lcurve.out" in r.headers["content-disposition"]
    first = users.client.get(f"/v1/jobs/{job['id']}/lcurve", headers=users.h("alice")).json()
    assert first["download"] is None and first["rows"] == []
    assert users.client.get(f"/v1/jobs/{job['id']}/lcurve/file", headers=users.h("alice")).status_code == 404
    r = users.client.get(f"/v1/jobs/{job['id']}/lcurve/file?member=3", headers=users.h("alice"))
    assert r.status_code == 404 and "trains 3" in r.text


@pytest.mark.parametrize("value", [0, -1, 65, 2.5, "4", True])
def test_bad_committee_sizes_are_422_naming_the_field(users: Users, dataset: dict, value: object) -> None:
    r = users.client.post("/v1/jobs/train", json={**_input(dataset), "committee": value}, headers=users.h("alice"))
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "committee", r.text
    check = users.client.post("/v1/jobs/train/check", json={**_input(dataset), "committee": value},
                              headers=users.h("alice")).json()
    assert not check["valid"] and check["problems"][0]["loc"] == "committee"


def test_selection_needs_a_committee_model_and_a_window(users: Users, dataset: dict, settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        owner = session.scalars(select(User).where(User.name == "alice")).one()
        for mid, size in (("mdl-single", 1), ("mdl-committee", 4)):
            session.add(ModelRecord(id=mid, owner_id=owner.id, name=mid, kind="dipole", type_map=["O", "H"],
                                    sel_type=[0], info={"committee_size": size}, metrics={}, source="uploaded",
                                    size_bytes=0))
    form = {"lo": "0.1", "hi": "1", "dataset_id": dataset["id"], "system": "valid/global_system"}
    r = users.client.post("/v1/jobs/select", data={**form, "model_id": "mdl-single"}, headers=users.h("alice"))
    assert r.status_code == 422 and "needs a committee" in r.text
    r = users.client.post("/v1/jobs/select", data={**form, "model_id": "mdl-committee", "hi": "0.05"},
                          headers=users.h("alice"))
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "hi"
    r = users.client.post("/v1/jobs/select", data={**form, "model_id": "mdl-committee"}, headers=users.h("alice"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["kind"], job["queue"], job["progress"]["unit"], job["progress"]["total"]) == (
        "select", "batch", "frames", 80)
    models = {m["id"]: m for m in users.client.get("/v1/models", headers=users.h("alice")).json()}
    assert models["mdl-committee"]["committee_size"] == 4 and models["mdl-single"]["committee_size"] == 1
