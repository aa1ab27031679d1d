"""POST /v1/jobs/train/check: the same validation as POST /v1/jobs/train, answered with
200 and the problems (the browser page checks input.json while it is edited)."""

from __future__ import annotations

from kit import Users, tiny_input


def test_check_reports_problems_without_creating_a_job(users: Users, dataset: dict) -> None:
    raw = tiny_input(f"dataset:{dataset['id']}/train", f"dataset:{dataset['id']}/valid")
    raw["training"]["tensorboard"] = True
    r = users.client.post("/v1/jobs/train/check", json=raw, headers=users.h("alice"))
    assert r.status_code == 200, r.text
    assert r.json() == {"valid": True, "problems": [], "dataset_ids": [dataset["id"]],
                        "warnings": ["training.tensorboard: accepted for DeePMD-kit compatibility but ignored"]}

    raw["training"]["numb_stepz"] = 3
    raw["training"]["training_data"]["systems"] = ["dataset:ds-doesnotexist"]
    r = users.client.post("/v1/jobs/train/check", json=raw, headers=users.h("alice"))
    assert r.status_code == 200
    body = r.json()
    assert body["valid"] is False
    assert {"loc": "training.numb_stepz", "msg": "unknown key"} in body["problems"]
    submitted = users.client.post("/v1/jobs/train", json=raw, headers=users.h("alice"))
    assert submitted.status_code == 422 and submitted.json()["problems"] == body["problems"]
    assert users.client.get("/v1/jobs", headers=users.h("alice")).json()["total"] == 0
    # another user's dataset is "not found", as on submission
    raw = tiny_input(f"dataset:{dataset['id']}/train", None)
    r = users.client.post("/v1/jobs/train/check", json=raw, headers=users.h("bob"))
    assert r.json()["problems"] == [{"loc": "training.training_data.systems[0]",
                                     "msg": f"dataset {dataset['id']} not found"}]
    assert users.client.post("/v1/jobs/train/check", json=raw).status_code == 401
