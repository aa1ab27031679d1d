"""Training submission: the library's validation with JSON paths, dataset references,
ownership, cancel of a queued job, job files. (No worker: jobs stay queued.)"""

from __future__ import annotations

import json

import pytest
from kit import Users, tiny_input

from jobs.tables import Job


def _input(dataset: dict) -> dict:
    return tiny_input(f"dataset:{dataset['id']}/train", f"dataset:{dataset['id']}/valid")


def _submit(users: Users, body, who: str = "alice"):
    if isinstance(body, dict | list):
        return users.client.post("/v1/jobs/train", json=body, headers=users.h(who))
    return users.client.post("/v1/jobs/train", content=body, headers={**users.h(who),
                                                                      "Content-Type": "application/json"})


def test_submit_queues_and_lists(users: Users, dataset: dict, settings) -> None:
    raw = _input(dataset)
    raw["training"]["tensorboard"] = True  # a DeePMD-kit key that has no effect here
    r = _submit(users, raw)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["status"], job["kind"], job["queue"], job["progress"]["total"]) == ("queued", "train", "train", 20)
    assert job["warnings"] == ["training.tensorboard: accepted for DeePMD-kit compatibility but ignored"]
    assert job["inputs"] == raw
    stored = json.loads((settings.root / "jobs" / job["id"] / "input.json").read_text())
    assert stored == raw
    listed = users.client.get("/v1/jobs?kind=train&status=queued", headers=users.h("alice")).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]] and listed["total"] == 1
    assert users.client.get("/v1/jobs", headers=users.h("bob")).json() == {"items": [], "total": 0}
    admin = users.client.get("/v1/jobs", headers=users.h("admin")).json()
    assert admin["items"][0]["owner"] == "alice"


@pytest.mark.parametrize(("mutate", "loc", "msg"), [
    (lambda r: r["model"]["descriptor"].update(nuerons=[1]), "model.descriptor.nuerons", "unknown key"),
    (lambda r: r["training"].pop("numb_steps"), "training.numb_steps", "required key is missing"),
    (lambda r: r["model"]["descriptor"].update(rcut_smth=9.0), "model.descriptor", "rcut_smth"),
    (lambda r: r["training"]["training_data"].update(systems=["/etc"]), "training.training_data.systems[0]",
     "not a dataset reference"),
    (lambda r: r["training"]["training_data"].update(systems=["dataset:ds-doesnotexist"]),
     "training.training_data.systems[0]", "dataset ds-doesnotexist not found"),
    (lambda r: r["training"]["validation_data"].update(systems=[r["training"]["validation_data"]["systems"][0]
                                                                + "/nothing"]),
     "training.validation_data.systems[0]", "no system at 'valid/nothing'"),
    (lambda r: r["training"]["training_data"].update(systems=["dataset:x/../../etc"]),
     "training.training_data.systems[0]", "must stay inside the dataset"),
    (lambda r: r["training"].update(disp_file="../../lcurve.out"), "training.disp_file", "plain file name"),
    (lambda r: r["model"].update(type_map=["O", "C"]), "training.training_data.systems[0]",
     "element(s) ['H'] that are not in model.type_map"),
    (lambda r: r["model"]["fitting_net"].update(type="polar", fit_diag=False), "training.training_data.systems[0]",
     "has no polar labels"),
    # job-size caps (settings): the outside campaign's 1e12 steps and [100000]×3 fitting net
    (lambda r: r["training"].update(numb_steps=10**12), "training.numb_steps",
     "1000000000000 steps: at most 10000000 (DPTENSOR_MAX_TRAIN_STEPS)"),
    (lambda r: r["model"]["fitting_net"].update(neuron=[100000] * 3), "model",
     "20,004,500,104 parameters (~640.1 GB to train): at most 50,000,000 (DPTENSOR_MAX_MODEL_PARAMETERS)"),
    # activations of one training step (batch atoms × sel × embedding), checked against the datasets' atoms
    (lambda r: r["training"]["training_data"].update(batch_size=100_000), "training.training_data.batch_size",
     "a batch of 19,200,000 atoms with sel [20, 40] (up to 60 neighbours each) and embedding [4, 8] needs "
     "~147.6 GiB of activations per training step: at most 32.0 GiB (DPTENSOR_MAX_TRAIN_ACTIVATION_BYTES)"),
    (lambda r: r["model"]["descriptor"].update(sel=[2_000_000, 4_000_000]), "training.training_data.batch_size",
     "(DPTENSOR_MAX_TRAIN_ACTIVATION_BYTES)"),
    # resources: ranks of a data-parallel training
    (lambda r: r.update(resources={"nproc": 0}), "resources.nproc", "greater than or equal to 1"),
    (lambda r: r.update(resources={"nproc": 64}), "resources.nproc", "at most 8 ranks per training"),
    (lambda r: r.update(resources={"gpus": 2}), "resources.gpus", "Extra inputs are not permitted"),
])
def test_invalid_input_is_422_with_json_path(users: Users, dataset: dict, mutate, loc: str, msg: str) -> None:
    raw = _input(dataset)
    mutate(raw)
    r = _submit(users, raw)
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert any(p["loc"] == loc and msg in p["msg"] for p in problems), problems
    assert users.client.get("/v1/jobs", headers=users.h("alice")).json()["total"] == 0


def test_resources_are_kept_on_the_job_but_not_in_its_input_json(users: Users, dataset: dict, settings) -> None:
    raw = {**_input(dataset), "resources": {"nproc": 2}}
    r = _submit(users, raw)
    assert r.status_code == 202, r.text
    assert r.json()["inputs"]["resources"] == {"nproc": 2}
    stored = json.loads((settings.root / "jobs" / r.json()["id"] / "input.json").read_text())
    assert "resources" not in stored and stored["training"] == raw["training"]


def test_malformed_json_and_non_object(users: Users) -> None:
    r = _submit(users, b'{"model": {"type_map": ["O", "H"],')
    assert r.status_code == 422 and "malformed JSON" in r.json()["detail"]
    r = _submit(users, [1, 2])
    assert r.status_code == 422 and "valid dictionary" in r.json()["detail"]


def test_someone_elses_dataset_is_not_found(users: Users, dataset: dict) -> None:
    r = _submit(users, _input(dataset), who="bob")
    assert r.status_code == 422
    assert f"dataset {dataset['id']} not found" in r.json()["detail"]


def test_job_ownership_cancel_and_files(users: Users, dataset: dict, settings) -> None:
    c = users.client
    job = _submit(users, _input(dataset)).json()
    jid = job["id"]
    for path in (f"/v1/jobs/{jid}", f"/v1/jobs/{jid}/lcurve", f"/v1/jobs/{jid}/logs", f"/v1/jobs/{jid}/files"):
        r = c.get(path, headers=users.h("bob"))
        assert r.status_code == 404 and r.json()["detail"] == f"job '{jid}' not found"
    assert c.post(f"/v1/jobs/{jid}/cancel", headers=users.h("bob")).status_code == 404
    assert c.get("/v1/jobs/job-nonexistent", headers=users.h("alice")).status_code == 404
    # the dataset is in use: it cannot be deleted under the job
    r = c.delete(f"/v1/datasets/{dataset['id']}", headers=users.h("alice"))
    assert r.status_code == 409 and jid in r.json()["detail"]

    files = {f["name"] for f in c.get(f"/v1/jobs/{jid}/files", headers=users.h("alice")).json()}
    assert files == {"input.json"}
    assert c.get(f"/v1/jobs/{jid}/files/input.json", headers=users.h("alice")).json()["training"]["numb_steps"] == 20
    assert c.get(f"/v1/jobs/{jid}/files/..%2F..%2Fdptensor.sqlite", headers=users.h("alice")).status_code == 404
    assert c.get(f"/v1/jobs/{jid}/lcurve", headers=users.h("alice")).json() == {
        "columns": [], "rows": [], "file": None, "download": None}
    r = c.get(f"/v1/jobs/{jid}/lcurve/file", headers=users.h("alice"))
    assert r.status_code == 404 and "has written no learning curve yet" in r.json()["detail"]

    r = c.post(f"/v1/jobs/{jid}/cancel", headers=users.h("alice"))
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    r = c.post(f"/v1/jobs/{jid}/cancel", headers=users.h("alice"))
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
    assert c.delete(f"/v1/datasets/{dataset['id']}", headers=users.h("alice")).status_code == 204


def test_cancel_of_running_job_sets_the_flag(users: Users, dataset: dict, settings) -> None:
    from jobs.db import session_scope

    jid = _submit(users, _input(dataset)).json()["id"]
    with session_scope(settings.db_url) as s:
        s.get(Job, jid).status = "running"
    r = users.client.post(f"/v1/jobs/{jid}/cancel", headers=users.h("alice"))
    assert r.json() == {"id": jid, "status": "running", "cancel_requested": True}


def test_lcurve_and_logs_are_served(users: Users, dataset: dict, settings) -> None:
    jid = _submit(users, _input(dataset)).json()["id"]
    folder = settings.root / "jobs" / jid
    (folder / "lcurve.out").write_text("#  step     rmse_val    rmse_trn          lr\n# comment\n"
                                       "       1    1.0e+00         nan    1.0e-03\n"
                                       "       5    5.0e-01     4.0e-01    9.0e-04\n       10   ")
    (folder / "job.log").write_text("line 1\nline 2\nline 3\n")
    lc = users.client.get(f"/v1/jobs/{jid}/lcurve", headers=users.h("alice")).json()
    assert lc["columns"] == ["step", "rmse_val", "rmse_trn", "lr"]
    assert lc["rows"] == [{"step": 1, "rmse_val": 1.0, "rmse_trn": None, "lr": 1e-3},
                          {"step": 5, "rmse_val": 0.5, "rmse_trn": 0.4, "lr": 9e-4}]
    # a follower asks only for the rows after the last step it has
    later = users.client.get(f"/v1/jobs/{jid}/lcurve?after=1", headers=users.h("alice")).json()
    assert later == {**lc, "rows": lc["rows"][1:]}
    done = users.client.get(f"/v1/jobs/{jid}/lcurve?after=5", headers=users.h("alice")).json()
    assert done == {**lc, "rows": []}
    # the file itself, where the answer says
    assert (lc["file"], lc["download"]) == ("lcurve.out", f"/v1/jobs/{jid}/lcurve/file")
    r = users.client.get(lc["download"], headers=users.h("alice"))
    assert r.status_code == 200 and r.content == (folder / "lcurve.out").read_bytes()
    assert r.headers["content-type"].startswith("text/plain") and f"{jid}-lcurve.out" in r.headers["content-disposition"]
    assert users.client.get(lc["download"], headers=users.h("bob")).status_code == 404
    r = users.client.get(f"/v1/jobs/{jid}/logs?tail=2", headers=users.h("alice"))
    assert r.text == "line 2\nline 3\n" and r.headers["content-type"].startswith("text/plain")


def test_the_lcurve_file_is_the_one_the_input_names(users: Users, dataset: dict, settings) -> None:
    raw = _input(dataset)
    raw["training"]["disp_file"] = "curve.txt"
    jid = _submit(users, raw).json()["id"]
    (settings.root / "jobs" / jid / "curve.txt").write_text("#  step     rmse_val\n       5    2.0e-01\n")
    lc = users.client.get(f"/v1/jobs/{jid}/lcurve", headers=users.h("alice")).json()
    assert lc["rows"] == [{"step": 5, "rmse_val": 0.2}] and lc["file"] == "curve.txt"
    r = users.client.get(lc["download"], headers=users.h("alice"))
    assert r.status_code == 200 and r.text.startswith("#  step") and f"{jid}-curve.txt" in r.headers["content-disposition"]
