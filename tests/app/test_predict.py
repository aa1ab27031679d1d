"""Prediction requests are checked against the model before any worker sees them."""

from __future__ import annotations

import json
import time

import pytest
from kit import Users

WATER = {"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}


def _post(users: Users, model_id: str, body, who: str = "alice", query: str = ""):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()  # json.dumps writes NaN/Infinity
    return users.client.post(f"/v1/models/{model_id}/predict{query}", content=content,
                             headers={**users.h(who), "Content-Type": "application/json"})


@pytest.mark.parametrize(("structure", "loc", "msg"), [
    ({**WATER, "positions": [[0.0, 0.0, float("nan")], *WATER["positions"][1:]]},
     "structures[0].positions[0][2]", "finite number"),
    ({**WATER, "positions": [[0.0, float("inf"), 0.0], *WATER["positions"][1:]]},
     "structures[0].positions[0][1]", "finite number"),
    ({**WATER, "positions": [[0.0, 0.0], *WATER["positions"][1:]]}, "structures[0].positions[0]", "at least 3"),
    ({**WATER, "positions": WATER["positions"][:2]}, "structures[0]", "positions has 2 rows but there are 3 atoms"),
    ({"symbols": [], "positions": []}, "structures[0]", "empty structure"),
    ({**WATER, "types": [0, 1, 1]}, "structures[0]", "exactly one of 'symbols' or 'types'"),
    ({**WATER, "pbc": [True, True, False], "cell": [[10, 0, 0], [0, 10, 0], [0, 0, 10]]}, "structures[0]",
     "partial periodicity"),
    ({**WATER, "pbc": True}, "structures[0]", "no cell"),
    ({**WATER, "charge": 0}, "structures[0].charge", "unknown key"),
    ({**WATER, "symbols": ["O", "H", "Na"]}, "structures[0].symbols",
     "element(s) ['Na'] are not in the model's type_map ['O', 'H']"),
    ({"types": [0, 1, 2], "positions": WATER["positions"]}, "structures[0].types", "type index(es) [2] out of range"),
    ({**WATER, "cell": [[1, 0, 0], [2, 0, 0], [0, 0, 1]]}, "structures[0].cell", "singular"),
    # finite is not enough: 1e300 overflows the distance arithmetic in the worker
    ({**WATER, "positions": [[1e300, 0.0, 0.0], *WATER["positions"][1:]]}, "structures[0].positions[0][0]",
     "less than or equal to 1000000"),
    ({**WATER, "cell": [[1e100, 0, 0], [0, 10, 0], [0, 0, 10]]}, "structures[0].cell[0][0]",
     "less than or equal to 1000000"),
])
def test_bad_structures_are_422(users: Users, model_id: str, structure: dict, loc: str, msg: str) -> None:
    r = _post(users, model_id, {"structures": [structure]})
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert any(p["loc"] == loc and msg in p["msg"] for p in problems), problems


@pytest.mark.parametrize("a", [0.01, 0.03, 0.05])
def test_thin_cell_is_refused_before_any_worker_sees_it(users: Users, model_id: str, a: float) -> None:
    waters = {"symbols": WATER["symbols"] * 10,
              "positions": [[x + i, y, z + 3 * i] for i in range(10) for x, y, z in WATER["positions"]],
              "cell": [[a, 0, 0], [0, a, 0], [0, 0, 100]]}
    t0 = time.process_time()  # CPU time of client + api: wall time on a loaded 2-core machine is noise
    r = _post(users, model_id, {"structures": [waters]})
    assert time.process_time() - t0 < 2.0
    assert r.status_code == 422, r.text
    (problem,) = r.json()["problems"]
    images = 2 * int(6.0 / a + 0.5) + 1
    assert problem["loc"] == "structures[0].cell"
    assert f"perpendicular widths ({a:g}, {a:g}, 100) Å with rcut 6 Å" in problem["msg"]
    assert f"{images}×{images}×1 = {images * images} periodic images of 30 atoms" in problem["msg"]


def test_small_crystal_cell_is_accepted(users: Users, model_id: str) -> None:
    # 2.5 Å cubic cell, 6 Å cutoff: 5 images per axis, well inside the budget
    r = _post(users, model_id, {"structures": [{**WATER, "cell": [[2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]]}]},
              query="?job=true")
    assert r.status_code == 202, r.text


def test_request_level_errors(users: Users, model_id: str) -> None:
    assert _post(users, model_id, b"{not json").json()["problems"][0]["msg"].startswith("malformed JSON")
    r = _post(users, model_id, {"structures": []})
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "structures"
    r = _post(users, model_id, {})
    assert r.status_code == 422 and "exactly one of 'structures' or 'system'" in r.json()["detail"]
    r = _post(users, model_id, {"structures": [{**WATER, "positions": [[0, 0, 0]] * 501,
                                                "symbols": ["O"] * 501}]})
    assert r.status_code == 413 and "at most 500 per structure" in r.json()["detail"]
    r = _post(users, model_id, b"[" + b"1," * (1 << 20) + b"1]")
    assert r.status_code == 413


def test_someone_elses_model_is_404(users: Users, model_id: str) -> None:
    r = _post(users, model_id, {"structures": [WATER]}, who="bob")
    assert r.status_code == 404 and r.json()["detail"] == f"model '{model_id}' not found"
    assert users.client.get(f"/v1/models/{model_id}", headers=users.h("bob")).status_code == 404
    assert users.client.get("/v1/models", headers=users.h("bob")).json() == []
    assert [m["id"] for m in users.client.get("/v1/models", headers=users.h("alice")).json()] == [model_id]


def test_large_request_becomes_a_job(users: Users, model_id: str, settings) -> None:
    many = {"structures": [WATER] * 400}  # 1200 atoms > sync_predict_max_atoms (1000)
    r = _post(users, model_id, many)
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["kind"], job["status"], job["queue"], job["model_id"]) == ("predict", "queued", "batch", model_id)
    assert job["progress"] == {"step": None, "total": 400, "unit": "frames", "rate": None, "eta_s": None}
    stored = json.loads((settings.root / "jobs" / job["id"] / "structures.json").read_text())
    assert len(stored) == 400 and stored[0]["types"] == [0, 1, 1]
    small = _post(users, model_id, {"structures": [WATER]}, query="?job=true")
    assert small.status_code == 202 and small.headers["location"] == f"/v1/jobs/{small.json()['id']}"


def test_system_reference_job(users: Users, model_id: str, dataset: dict) -> None:
    ref = f"dataset:{dataset['id']}/valid/global_system"
    r = _post(users, model_id, {"system": ref})
    assert r.status_code == 202 and r.json()["progress"]["total"] == 80
    r = _post(users, model_id, {"system": f"dataset:{dataset['id']}/nope"})
    assert r.status_code == 422 and "no system at 'nope'" in r.json()["detail"]


def test_a_job_whose_model_was_deleted_shows_it_as_deleted(users: Users, model_id: str) -> None:
    job = _post(users, model_id, {"structures": [WATER]}, query="?job=true").json()
    url = f"/v1/jobs/{job['id']}"
    assert users.client.get(url, headers=users.h("alice")).json()["model_deleted"] is False
    assert users.client.delete(f"/v1/models/{model_id}", headers=users.h("alice")).status_code == 204
    shown = users.client.get(url, headers=users.h("alice")).json()
    assert (shown["model_id"], shown["model_deleted"]) == (model_id, True)
    listed = users.client.get("/v1/jobs", headers=users.h("alice")).json()["items"]
    assert [(j["id"], j["model_deleted"]) for j in listed] == [(job["id"], True)]


def test_derivatives_need_a_dipole_model_and_travel_with_a_job(users: Users, model_id: str, settings) -> None:
    from sqlalchemy import select

    from jobs.db import session_scope
    from jobs.tables import ModelRecord, User

    with session_scope(settings.db_url) as s:
        alice = s.scalars(select(User).where(User.name == "alice")).one()
        s.add(ModelRecord(id="mdl-0000000000pp", owner_id=alice.id, name="p", kind="polar", type_map=["O", "H"],
                          sel_type=[0], info={}, metrics={}, source="uploaded", size_bytes=0))
    r = _post(users, "mdl-0000000000pp", {"structures": [WATER], "derivatives": True})
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "derivatives"
    assert "derivatives of a dipole" in r.json()["detail"]
    r = _post(users, model_id, {"structures": [WATER], "derivatives": True}, query="?job=true")
    assert r.status_code == 202 and r.json()["inputs"]["derivatives"] is True
