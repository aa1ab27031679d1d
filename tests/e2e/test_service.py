"""upload → train → poll → model registered → predict, against real processes; values
equal to model.inference.predict and to `dptensor predict` on the same structures."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit import (
    DEEPMD_REF,
    Api,
    alive,
    api_and_worker,
    children,
    dptensor,
    free_port,
    service_env,
    stop,
    upload_and_train,
    wait_for,
)

pytestmark = pytest.mark.e2e
WATER_MOLECULE = {"symbols": ["O", "H", "H"], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]]}


def _frames(data_dir: Path, ds: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    from model.data import load_system

    system = load_system(data_dir / "datasets" / ds["id"] / "files" / "valid" / "global_system",
                         type_map=["O", "H"])
    structures = [{"types": system.atype.tolist(), "positions": system.coord[i].tolist()} for i in range(n)]
    return system.coord[:n], system.atype, structures


def structures_of(coord: np.ndarray, atype: np.ndarray) -> list[dict[str, Any]]:
    return [{"types": atype.tolist(), "positions": c.tolist()} for c in coord]


def _check_model_and_predict(api: Api, data_dir: Path, ds: dict[str, Any], job: dict[str, Any],
                             tmp: Path) -> tuple[Path, dict[str, Any]]:
    from model.checkpoint import load_model
    from model.inference import predict

    assert job["status"] == "succeeded", job
    models = {m["id"]: m for m in api.http.get("/v1/models").json()}
    model = models[job["model_id"]]
    assert (model["kind"], model["type_map"], model["sel_type"], model["source"], model["source_job_id"]) == (
        "dipole", ["O", "H"], [0], "trained", job["id"])
    lcurve = api.http.get(f"/v1/jobs/{job['id']}/lcurve").json()
    assert lcurve["rows"][-1]["step"] == job["progress"]["total"]

    ckpt = tmp / "downloaded.pt"
    ckpt.write_bytes(api.http.get(f"/v1/models/{model['id']}/download").content)
    coord, atype, structures = _frames(data_dir, ds, 4)
    r = api.http.post(f"/v1/models/{model['id']}/predict", json={"structures": [*structures, WATER_MOLECULE]})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model_id"] == model["id"] and answer["units"]["global_tensor"] == "e·Å"
    ref = predict(load_model(ckpt), coord, atype)
    got = answer["results"]
    np.testing.assert_allclose([g["global_tensor"] for g in got[:4]], ref.global_tensor, rtol=0, atol=1e-10)
    np.testing.assert_allclose([g["atomic_tensor"] for g in got[:4]], ref.atomic_tensor, rtol=0, atol=1e-10)
    assert "born_charges" not in got[0]  # only when asked for
    # dipole derivatives through the service: the library's Born charges, acoustic sum rule
    from model.dipole_derivatives import born_charges

    r = api.http.post(f"/v1/models/{model['id']}/predict", json={"structures": [WATER_MOLECULE, structures[0]],
                                                                  "derivatives": True})
    assert r.status_code == 200, r.text
    born = r.json()["results"]
    ref_z = born_charges(load_model(ckpt), coord[:1], atype.tolist()).z[0]
    np.testing.assert_allclose(born[1]["born_charges"], ref_z, rtol=0, atol=1e-10)
    assert np.array(born[0]["born_charges"]).shape == (3, 3, 3) and born[0]["sum_rule_violation"] < 1e-10
    return ckpt, answer


def test_redis_broker_and_worker_process(tmp_path: Path, redis_url: str, water_tgz: Path) -> None:
    with api_and_worker(tmp_path, "train,predict,batch", broker_url=redis_url) as run:
        api, data, env = run.api, run.data, run.env
        assert run.ready["broker"]["detail"] == "redis" and run.ready["queues_without_worker"] == []
        ds, job = upload_and_train(api, water_tgz)
        job = api.wait_job(job["id"])
        ckpt, answer = _check_model_and_predict(api, data, ds, job, tmp_path)

        # the same structures through `dptensor predict` (the model library's command)
        system = data / "datasets" / ds["id"] / "files" / "valid" / "global_system"
        out = subprocess.run([sys.executable, "-m", "app.cli", "predict", "-m", str(ckpt), "-s", str(system),
                              "-o", str(tmp_path / "cli.npz")], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        cli = np.load(tmp_path / "cli.npz")
        np.testing.assert_allclose([g["global_tensor"] for g in answer["results"][:4]], cli["global"][:4],
                                   rtol=0, atol=1e-10)

        # a prediction job gives the same numbers in predictions.json
        r = api.http.post(f"/v1/models/{job['model_id']}/predict?job=true",
                          json={"structures": [WATER_MOLECULE]})
        assert r.status_code == 202
        pjob = api.wait_job(r.json()["id"])
        assert pjob["status"] == "succeeded" and pjob["progress"]["step"] == 1
        stored = json.loads(api.http.get(f"/v1/jobs/{pjob['id']}/files/predictions.json").content)
        assert stored["results"][0] == answer["results"][4]

        # an uploaded DeePMD-kit checkpoint is inspected by the worker and served
        r = api.http.post("/v1/models", files={"file": ("slim.pt", (DEEPMD_REF / "dipole" / "model_slim.pt")
                                                        .read_bytes())})
        assert r.status_code == 201, r.text
        assert (r.json()["source"], r.json()["info"]["format"]) == ("uploaded", "deepmd-kit")
        r = api.http.post("/v1/models", files={"file": ("junk.pt", b"junk")})
        assert r.status_code == 422 and "not a loadable model file" in r.json()["detail"]

        # DeePMD-kit interoperability: export (.dp, .yaml) by a worker, and back in by upload
        from model.checkpoint import load_model
        from model.inference import predict

        coord, atype, _ = _frames(data, ds, 2)
        want = predict(load_model(ckpt), coord, atype).atomic_tensor
        for fmt in ("dp", "yaml"):
            r = api.http.get(f"/v1/models/{job['model_id']}/export", params={"format": fmt})
            assert r.status_code == 200, r.text
            (tmp_path / f"exported.{fmt}").write_bytes(r.content)
            got = predict(load_model(tmp_path / f"exported.{fmt}"), coord, atype).atomic_tensor
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        r = api.http.post("/v1/models", files={"file": ("model.dp", (tmp_path / "exported.dp").read_bytes())})
        assert r.status_code == 201, r.text
        assert r.json()["info"]["format"] == "deepmd-kit" and r.json()["kind"] == "dipole"
        r = api.http.post(f"/v1/models/{r.json()['id']}/predict", json={"structures": structures_of(coord, atype)})
        np.testing.assert_allclose([g["atomic_tensor"] for g in r.json()["results"]], want, rtol=0, atol=1e-10)
        r = api.http.post("/v1/models", files={"file": ("frozen.pth", b"PK\x03\x04...")})
        assert r.status_code == 422 and "dp convert-backend frozen.pth model.dp" in r.json()["detail"]
        r = api.http.post("/v1/models", files={"file": ("evil.yaml", b"model: !!python/object/apply:os.system [id]")})
        assert r.status_code == 422 and "not a safe, valid YAML" in r.json()["detail"]
        assert api.http.get(f"/v1/models/{job['model_id']}/export", params={"format": "pb"}).status_code == 422

        # restart the api: every job is still there, with its status
        before = {j["id"]: j["status"] for j in api.http.get("/v1/jobs").json()["items"]}
        assert stop(run.server) == 0
        run.server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
        wait_for("api back", api.ready, timeout=60)
        after = {j["id"]: j["status"] for j in api.http.get("/v1/jobs").json()["items"]}
        assert after == before and len(after) == 2


def test_embedded_default_one_command(tmp_path: Path, water_tgz: Path) -> None:
    """`dptensor serve` alone: embedded broker, two worker processes; Ctrl-C stops all."""
    data = tmp_path / "data"
    port = free_port()
    env = service_env(data, port=port)
    api = Api(f"http://127.0.0.1:{port}")
    serve = dptensor("serve", "--no-auth", env=env, log=tmp_path / "serve.log")
    try:
        ready = wait_for("both workers", lambda: (r if (r := api.ready()) and len(r["workers"]) == 2 else None),
                         timeout=240)  # imports on a loaded machine
        assert ready["broker"]["detail"] == "embedded (Redis on a unix socket, started by dptensor serve)"
        assert sorted(w["queues"] for w in ready["workers"]) == [["predict"], ["train", "batch"]]
        ds, job = upload_and_train(api, water_tgz)
        job = api.wait_job(job["id"])
        _check_model_and_predict(api, data, ds, job, tmp_path)
        kids = children(serve.pid)
        assert len(kids) == 3  # both workers and the embedded broker
    finally:
        code = stop(serve, signal.SIGINT)
    assert code == 0
    wait_for("workers and broker to exit", lambda: not any(alive(p) for p in kids), timeout=30)
    assert "serving on http://127.0.0.1" in (tmp_path / "serve.log").read_text()


def test_serve_is_quiet_by_default_and_verbose_on_request(tmp_path: Path) -> None:
    """No Celery banner or root warning, no access-log line per poll, no broker table race;
    a second start says where the admin token is; --verbose logs every request."""
    data = tmp_path / "data"
    port = free_port()
    env = service_env(data, port=port)
    probe = Api(f"http://127.0.0.1:{port}")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    for log, extra in zip(logs, ([], ["--verbose"]), strict=True):
        serve = dptensor("serve", *extra, env=env, log=log)
        try:
            wait_for("both workers", lambda: (r if (r := probe.ready()) and len(r["workers"]) == 2 else None),
                     timeout=240)  # imports on a loaded machine
            api = Api(f"http://127.0.0.1:{port}", (data / "admin_token").read_text().strip())
            for _ in range(10):  # the page polls about once a second
                assert api.http.get("/v1/jobs").status_code == 200
        finally:
            assert stop(serve, signal.SIGINT) == 0
    first, second = (log.read_text() for log in logs)
    assert "first start: admin token" in first
    for noise in ("GET /v1/", "SecurityWarning", "superuser", "already exists", "[tasks]", "Uvicorn running"):
        assert noise not in first, (noise, first)
    assert f"admin token made at the first start is in {data.resolve() / 'admin_token'}" in second
    assert second.count("GET /v1/jobs") == 10  # verbose: the access log
