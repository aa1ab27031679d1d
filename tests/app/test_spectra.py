"""POST /v1/jobs/spectrum: the request and the trajectory are checked before a job exists
(422 names the field); results only once the job has succeeded. (No worker here.)"""

from __future__ import annotations

import io
import json
import math
import tarfile
from typing import Any

import pytest
from kit import WATER, Users
from sqlalchemy import select, update

from jobs.db import session_scope
from jobs.tables import Job, ModelRecord, User

MOLECULE = [("O", 0.0, 0.0, 0.0), ("H", 0.757, 0.586, 0.0), ("H", -0.757, 0.586, 0.0)]


def xyz(nframes: int = 10, edit: Any = None) -> bytes:
    """Plain XYZ frames of a slightly moving water molecule; edit(i, atoms) may change frame i."""
    out = []
    for i in range(nframes):
        atoms = [(s, x + 0.01 * i, y, z) for s, x, y, z in MOLECULE]
        if edit is not None:
            atoms = edit(i, atoms)
        out.append(f"{len(atoms)}\nframe {i}\n" + "".join(f"{s} {x} {y} {z}\n" for s, x, y, z in atoms))
    return "".join(out).encode()


def post(users: Users, data: dict[str, Any], content: bytes | None = None, filename: str = "md.xyz",
         who: str = "alice") -> Any:
    files = {"file": (filename, content)} if content is not None else None
    body = {k: (json.dumps(v) if k == "options" else str(v)) for k, v in data.items()}
    return users.client.post("/v1/jobs/spectrum", data=body, files=files, headers=users.h(who))


def form(model_id: str, **extra: Any) -> dict[str, Any]:
    return {"model_id": model_id, "kind": "ir", "dt_fs": 0.5, **extra}


@pytest.fixture
def polar_id(users: Users, settings: Any) -> str:
    with session_scope(settings.db_url) as s:
        alice = s.scalars(select(User).where(User.name == "alice")).one()
        s.add(ModelRecord(id="mdl-00000000000p", owner_id=alice.id, name="p", kind="polar", type_map=["O", "H"],
                          sel_type=[0], info={}, metrics={}, source="uploaded", size_bytes=0))
    return "mdl-00000000000p"


def test_upload_queues_a_spectrum_job_and_results_wait_for_success(users: Users, model_id: str,
                                                                   settings: Any) -> None:
    r = post(users, form(model_id, options={"window": "hann", "temperature_k": 310}), xyz(10))
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert (job["kind"], job["status"], job["queue"], job["model_id"], job["name"]) == (
        "spectrum", "queued", "batch", model_id, "IR of md.xyz")
    assert job["progress"] == {"step": None, "total": 10, "unit": "frames", "rate": None, "eta_s": None}
    inputs = job["inputs"]
    assert (inputs["kind"], inputs["dt_fs"], inputs["options"]["window"], inputs["options"]["temperature_k"]) == (
        "ir", 0.5, "hann", 310)
    assert inputs["options"]["dipole_mode"] == "global" and inputs["options"]["correction"] == "harmonic"
    assert inputs["trajectory"] == {"file": "trajectory.xyz", "filename": "md.xyz", "format": "extxyz",
                                    "frames": 10, "atoms": 3}
    folder = settings.root / "jobs" / job["id"]
    assert (folder / "trajectory.xyz").read_bytes() == xyz(10)
    assert not any((settings.root / "tmp").iterdir())  # staging cleaned up
    listed = users.client.get("/v1/jobs?kind=spectrum", headers=users.h("alice")).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]]

    for suffix in ("spectrum", "spectrum.csv"):
        r = users.client.get(f"/v1/jobs/{job['id']}/{suffix}", headers=users.h("alice"))
        assert r.status_code == 409 and "queued" in r.json()["detail"]

    spectrum = {"wavenumber_cm": [0.0, 10.0], "intensities": {"ir": [0.0, 1.0]}, "metadata": {"units": "arb."}}
    (folder / "spectrum.json").write_text(json.dumps(spectrum))
    (folder / "spectrum.csv").write_text("wavenumber_cm,ir\n0,0\n10,1\n")
    with session_scope(settings.db_url) as s:
        s.execute(update(Job).where(Job.id == job["id"]).values(status="succeeded"))
    r = users.client.get(f"/v1/jobs/{job['id']}/spectrum", headers=users.h("alice"))
    assert r.status_code == 200 and r.json() == spectrum
    r = users.client.get(f"/v1/jobs/{job['id']}/spectrum.csv", headers=users.h("alice"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.startswith("wavenumber_cm,ir")
    assert users.client.get(f"/v1/jobs/{job['id']}/spectrum", headers=users.h("bob")).status_code == 404


def test_polar_model_raman_and_archive_of_a_deepmd_system(users: Users, polar_id: str, settings: Any) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(WATER / "polar" / "validation_data_reformat" / "global_system", arcname="sys")
    r = post(users, {**form(polar_id, kind="raman", options={"max_frames": 20})}, buf.getvalue(), "polar.tgz")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["inputs"]["trajectory"] == {"file": "trajectory/sys", "filename": "polar.tgz",
                                           "format": "deepmd/npy", "frames": 20, "atoms": 192}
    assert (settings.root / "jobs" / job["id"] / "trajectory" / "sys" / "type.raw").is_file()


def test_dataset_system_as_the_trajectory(users: Users, model_id: str, dataset: dict) -> None:
    r = post(users, form(model_id, dataset_id=dataset["id"], system="valid/global_system"))
    assert r.status_code == 202, r.text
    job = r.json()
    assert (job["inputs"]["dataset_id"], job["inputs"]["system"], job["progress"]["total"]) == (
        dataset["id"], "valid/global_system", 80)
    r = users.client.delete(f"/v1/datasets/{dataset['id']}", headers=users.h("alice"))
    assert r.status_code == 409  # the queued spectrum job reads it
    for data, loc, msg in (({"dataset_id": dataset["id"]}, "system", "choose a system"),
                           ({"dataset_id": dataset["id"], "system": "nope"}, "system", "no system at 'nope'"),
                           ({"dataset_id": "ds-000000000000"}, "dataset_id", "not found")):
        r = post(users, form(model_id, **data))
        assert r.status_code == 422 and r.json()["problems"][0]["loc"] == loc, r.text
        assert msg in r.json()["problems"][0]["msg"]
    r = post(users, form(model_id, dataset_id=dataset["id"], system="valid/global_system"), who="bob")
    assert r.status_code == 404  # bob cannot use alice's model (nor see that it exists)


def _nan(i: int, atoms: list) -> list:
    return [("O", math.nan, 0.0, 0.0), *atoms[1:]] if i == 1 else atoms


def _extra_atom(i: int, atoms: list) -> list:
    return [*atoms, ("H", 3.0, 3.0, 3.0)] if i == 2 else atoms


def _sodium(i: int, atoms: list) -> list:
    return [("Na", *atoms[0][1:]), *atoms[1:]]


def _two_systems() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("a", "b"):
            tar.add(WATER / "dipole" / "validation_data_reformat" / "global_system", arcname=name)
    return buf.getvalue()


@pytest.mark.parametrize(("data", "content", "filename", "loc", "msg"), [
    ({}, xyz(10, _sodium), "md.xyz", "file", "element(s) ['Na'] are not in the model's type_map ['O', 'H']"),
    ({}, xyz(10, _extra_atom), "md.xyz", "file", "md.xyz: frame 2 has 4 atoms, frame 0 has 3"),
    ({}, xyz(10, _nan), "md.xyz", "file", "md.xyz: frame 1: NaN or inf in the coordinates"),
    ({}, xyz(3), "md.xyz", "file", "3 frame(s): a spectrum needs at least 4"),
    ({}, xyz(10), "md.foo", "file", "cannot tell the trajectory format from the name"),
    ({}, b"", "md.xyz", "file", "file is empty"),
    ({}, _two_systems(), "two.tgz", "file", "the archive holds 2 DeePMD systems"),
    ({}, None, "", "file", "give exactly one of 'file'"),
    ({"kind": "raman"}, xyz(10), "md.xyz", "kind", "RAMAN needs a polar model; model mdl-000000000001 predicts "
                                                   "dipoles"),
    ({"kind": "uv"}, xyz(10), "md.xyz", "kind", "'raman' or 'dielectric'"),
    ({"dt_fs": None}, xyz(10), "md.xyz", "dt_fs", "Field required"),
    ({"dt_fs": -1}, xyz(10), "md.xyz", "dt_fs", "must be a finite number > 0"),
    ({"options": {"windw": "hann"}}, xyz(10), "md.xyz", "options.windw", "unknown option(s) ['windw']"),
    ({"options": {"ionic_charges": "O:6"}}, xyz(10), "md.xyz", "options.ionic_charges", "is not NAME=VALUE"),
    ({"options": {"window": "box"}}, xyz(10), "md.xyz", "options.window", "must be one of"),
    ({"options": {"max_corr_fs": 100}}, xyz(10), "md.xyz", "options.max_corr_fs", "longer than the shortest"),
    ({"options": {"dipole_mode": "wannier"}}, xyz(10), "md.xyz", "options.ionic_charges", "needs the ionic charge"),
    ({"options": {"dipole_mode": "wannier", "ionic_charges": {"O": 6}, "q_w": -8}}, xyz(10), "md.xyz",
     "options.ionic_charges", "no charge for element(s) ['H']"),
    ({"options": {"format": "pdb"}}, xyz(10), "md.xyz", "options.format", "unknown format 'pdb'"),
    ({"options": {"volume_a3": "cell"}}, xyz(10), "md.xyz", "options.volume_a3", "periodic trajectory"),
])
def test_bad_requests_are_422_naming_the_field(users: Users, model_id: str, settings: Any, data: dict,
                                               content: bytes | None, filename: str, loc: str, msg: str) -> None:
    body = {k: v for k, v in form(model_id, **data).items() if v is not None}
    r = post(users, body, content, filename)
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert any(p["loc"] == loc and msg in p["msg"] for p in problems), problems
    assert "tmp/spectrum-" not in r.text  # the user's file name, never our staging path
    assert not (settings.root / "jobs").exists() or not any((settings.root / "jobs").iterdir())
    assert not (settings.root / "tmp").exists() or not any((settings.root / "tmp").iterdir())


def test_one_option_schema_for_cli_rest_and_page(users: Users, model_id: str) -> None:
    """Issue 12 item 14: the unknown-option error lists the real set (the CLI's and the
    page's), the schema is served, and the CLI's spellings work in the REST options."""
    from model.spectrum_options import OPTION_HELP

    r = post(users, form(model_id, options={"windw": "hann"}), xyz(10))
    msg = r.json()["problems"][0]["msg"]
    known = set(json.loads(msg.split("known: ")[1].split(" (docs")[0].replace("'", '"')))
    assert known == set(OPTION_HELP) and "dt_fs" not in known
    assert {"dipole_mode", "ionic_charges", "volume_a3", "bands", "units", "molecules"} <= known
    schema = users.client.get("/v1/jobs/spectrum/options", headers=users.h("alice")).json()
    assert set(schema["options"]) == set(OPTION_HELP) and schema["docs"] == "docs/spectra.md"
    assert schema["options"]["window"]["default"] == "gaussian" and "O=6,H=1" in schema["options"]["ionic_charges"]["help"]
    r = post(users, form(model_id, options={"dipole_mode": "wannier", "ionic_charges": "O=6,H=1", "q_w": -8,
                                            "bands": "1000:2000,2500:3000"}), xyz(10))
    assert r.status_code == 202, r.text
    opts = r.json()["inputs"]["options"]
    assert opts["ionic_charges"] == {"O": 6.0, "H": 1.0} and opts["bands"] == [[1000.0, 2000.0], [2500.0, 3000.0]]


def test_malformed_options_and_other_users(users: Users, model_id: str) -> None:
    r = users.client.post("/v1/jobs/spectrum", data={**form(model_id), "options": "{nope"},
                          files={"file": ("md.xyz", xyz())}, headers=users.h("alice"))
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "options"
    assert "malformed JSON" in r.json()["detail"]
    r = post(users, form(model_id), xyz(), who="bob")
    assert r.status_code == 404 and r.json()["detail"] == f"model '{model_id}' not found"
    r = post(users, form("mdl-doesnotexist"), xyz())
    assert r.status_code == 404


def test_results_of_a_training_job_are_404(users: Users, dataset: dict) -> None:
    from kit import tiny_input

    raw = tiny_input(f"dataset:{dataset['id']}/train", f"dataset:{dataset['id']}/valid")
    job = users.client.post("/v1/jobs/train", json=raw, headers=users.h("alice")).json()
    r = users.client.get(f"/v1/jobs/{job['id']}/spectrum", headers=users.h("alice"))
    assert r.status_code == 404 and "train job: it has no spectrum" in r.json()["detail"]


def test_openapi_documents_the_spectrum_endpoints(users: Users) -> None:
    spec = users.client.get("/openapi.json").json()
    post_op = spec["paths"]["/v1/jobs/spectrum"]["post"]
    fields = post_op["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    props = spec["components"]["schemas"][fields]["properties"]
    assert {"model_id", "kind", "dt_fs", "options", "file", "dataset_id", "system"} <= set(props)
    get_op = spec["paths"]["/v1/jobs/{job_id}/spectrum"]["get"]
    assert get_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SpectrumPublic")
    assert "text/csv" in spec["paths"]["/v1/jobs/{job_id}/spectrum.csv"]["get"]["responses"]["200"]["content"]


def _post_many(client: Any, headers: dict, model_id: str, uploads: list[tuple[str, bytes]], **extra: Any) -> Any:
    data = {k: str(v) for k, v in form(model_id, **extra).items()}
    return client.post("/v1/jobs/spectrum", data=data, files=[("file", u) for u in uploads], headers=headers)


def test_several_trajectories_in_one_job(users: Users, model_id: str, settings: Any) -> None:
    uploads = [("a.xyz", xyz(10)), ("b.xyz", xyz(12)), ("c.xyz.gz", __import__("gzip").compress(xyz(14)))]
    r = _post_many(users.client, users.h("alice"), model_id, uploads)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["name"] == "IR of 3 trajectories (a.xyz, …)" and job["progress"]["total"] == 36
    assert "trajectory" not in job["inputs"] and [t["filename"] for t in job["inputs"]["trajectories"]] == [
        "a.xyz", "b.xyz", "c.xyz.gz"]
    assert [t["file"] for t in job["inputs"]["trajectories"]] == ["trajectory-000.xyz", "trajectory-001.xyz",
                                                                  "trajectory-002.xyz.gz"]
    folder = settings.root / "jobs" / job["id"]
    assert all((folder / t["file"]).is_file() for t in job["inputs"]["trajectories"])
    assert not any((settings.root / "tmp").iterdir())
    r = _post_many(users.client, users.h("alice"), model_id, [("a.xyz", xyz(10))])  # one file: as before
    assert r.status_code == 202 and r.json()["inputs"]["trajectory"]["file"] == "trajectory.xyz"


@pytest.mark.parametrize(("uploads", "loc", "msg"), [
    ([("a.xyz", xyz(10)), ("b.xyz", xyz(10, _extra_atom))], "file[1]", "b.xyz: frame 2 has 4 atoms, frame 0 has 3"),
    ([("a.xyz", xyz(10)), ("b.xyz", xyz(10, _nan))], "file[1]", "b.xyz: frame 1: NaN or inf in the coordinates"),
    ([("a.xyz", xyz(10)), ("b.xyz", xyz(3))], "file[1]", "3 frame(s): a spectrum needs at least 4"),
    ([("a.xyz", xyz(10)), ("b.foo", xyz(10))], "file[1]", "cannot tell the trajectory format"),
    ([("a.xyz", xyz(10)), ("big.xyz", xyz(10, lambda i, atoms: [*atoms, ("H", 3.0, 3.0, 3.0)]))], "file[1]",
     "big.xyz has 4 atoms, a.xyz 3: every trajectory needs the same atoms"),
])
def test_a_bad_trajectory_among_several_is_named(users: Users, model_id: str, settings: Any, uploads: list,
                                                 loc: str, msg: str) -> None:
    r = _post_many(users.client, users.h("alice"), model_id, uploads)
    assert r.status_code == 422, r.text
    assert any(p["loc"] == loc and msg in p["msg"] for p in r.json()["problems"]), r.json()
    assert not (settings.root / "jobs").exists() or not any((settings.root / "jobs").iterdir())
    assert not any((settings.root / "tmp").iterdir())  # every staged upload removed


def test_trajectories_and_frames_per_job_are_bounded(users: Users, model_id: str, settings: Any) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    small = settings.model_copy(update={"max_spectrum_trajectories": 2, "max_spectrum_frames": 25})
    with TestClient(create_app(small)) as client:
        r = _post_many(client, users.h("alice"), model_id, [(f"{i}.xyz", xyz(5)) for i in range(3)])
        assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "file", r.text
        assert "3 trajectories: a spectrum job takes at most 2 (DPTENSOR_MAX_SPECTRUM_TRAJECTORIES)" in r.text
        r = _post_many(client, users.h("alice"), model_id, [("a.xyz", xyz(20)), ("b.xyz", xyz(10))])
        assert r.status_code == 422 and "30 frames: a spectrum job takes at most 25" in r.text, r.text
        assert not any((settings.root / "tmp").iterdir())


def test_several_systems_of_a_dataset(users: Users, model_id: str, dataset: dict) -> None:
    r = post(users, form(model_id, dataset_id=dataset["id"], system="."))
    assert r.status_code == 202, r.text
    job = r.json()
    paths = [s["path"] for s in dataset["systems"]]
    assert [s["system"] for s in job["inputs"]["systems"]] == paths and len(paths) > 1
    assert job["progress"]["total"] == sum(s["frames"] for s in dataset["systems"])
    r = post(users, form(model_id, dataset_id=dataset["id"], system="valid"))  # a folder: its systems
    assert [s["system"] for s in r.json()["inputs"]["systems"]] == ["valid/atomic_system", "valid/global_system"]
    r = post(users, form(model_id, dataset_id=dataset["id"], system="valid/global_system"))  # one: as before
    assert r.status_code == 202 and r.json()["inputs"]["system"] == "valid/global_system", r.text
    r = users.client.post("/v1/jobs/spectrum", data={**{k: str(v) for k, v in form(model_id).items()},
                                                     "dataset_id": dataset["id"], "system": ["valid", "nope"]},
                          headers=users.h("alice"))
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "system[1]", r.text


def test_chunks_of_a_job_are_listed_for_its_owner(users: Users, model_id: str) -> None:
    job = post(users, form(model_id), xyz(10)).json()
    r = users.client.get(f"/v1/jobs/{job['id']}/chunks", headers=users.h("alice"))
    assert r.status_code == 200 and r.json() == []  # planned by the worker that takes the job
    assert users.client.get(f"/v1/jobs/{job['id']}/chunks", headers=users.h("bob")).status_code == 404
