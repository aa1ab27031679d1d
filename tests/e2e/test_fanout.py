"""Fan-out of batch jobs over the worker pool (issue 16 item 3), through real processes: the
api (`dptensor serve --no-worker`), batch workers (`dptensor worker`), Redis.

- A spectrum over 8 uploaded trajectories runs one trajectory per chunk on both workers
  and equals the same job on one worker and the library's own run (≤ 1e-12 relative).
- A prediction job over many frames runs in chunks and equals the unsplit prediction,
  frames in order (a system of a dataset, and structures of a request).
- A worker killed (SIGKILL) mid-job loses only its chunk: the job completes, every other
  chunk ran once (per-chunk attempts and the job log).
- Cancel stops every chunk: the running ones stop, the queued ones never start (they read
  the job's cancel flag when a worker takes them).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit import (
    DEEPMD_REF,
    WATER,
    Api,
    dptensor,
    free_port,
    rotating_water_xyz,
    service_env,
    stop,
    wait_for,
    water_runs_archive,
)

pytestmark = pytest.mark.e2e
DT_FS = 2.0
MODEL = DEEPMD_REF / "dipole" / "model_slim.pt"
OPTIONS = {"window": "gaussian", "units": "relative"}


@contextmanager
def _service(tmp_path: Path, redis_url: str, queues: list[str], **settings: Any
             ) -> Iterator[tuple[Api, list[subprocess.Popen[bytes]]]]:
    """The api and one worker per entry of ``queues`` (all ready), with a dipole model."""
    port = free_port()
    env = service_env(tmp_path / "data", broker_url=redis_url, port=port, auth="none", **settings)
    api = Api(f"http://127.0.0.1:{port}")
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    workers = [dptensor("worker", "--queues", q, env=env, log=tmp_path / f"worker{i}.log")
               for i, q in enumerate(queues)]
    try:
        wait_for("the service and every worker", lambda: (r := api.ready()) and r["ready"]
                 and len(r["workers"]) == len(queues), timeout=300)
        yield api, workers
    finally:
        stop(server)
        for w in workers:
            stop(w)


def _upload_model(api: Api) -> str:
    r = api.http.post("/v1/models", files={"file": ("dipole.pt", MODEL.read_bytes())})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _worker_id(proc: subprocess.Popen[bytes]) -> str:
    import socket

    return f"{socket.gethostname()}:{proc.pid}"


def _chunks(api: Api, job_id: str) -> list[dict[str, Any]]:
    r = api.http.get(f"/v1/jobs/{job_id}/chunks")
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def _spectrum_job(api: Api, model_id: str, files: dict[str, bytes]) -> dict[str, Any]:
    r = api.http.post("/v1/jobs/spectrum", data={"model_id": model_id, "kind": "ir", "dt_fs": str(DT_FS),
                                                 "options": json.dumps(OPTIONS)},
                      files=[("file", (name, content)) for name, content in files.items()])
    assert r.status_code == 202, r.text
    return api.wait_job(r.json()["id"], timeout=600)


def _dataset_spectrum(api: Api, model_id: str, n: int, frames: int) -> str:
    r = api.http.post("/v1/datasets", files={"file": ("runs.tgz", water_runs_archive(n, frames))})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert len(ds["systems"]) == n
    r = api.http.post("/v1/jobs/spectrum", data={"model_id": model_id, "kind": "ir", "dt_fs": str(DT_FS),
                                                 "dataset_id": ds["id"], "system": ".",
                                                 "options": json.dumps(OPTIONS)})
    assert r.status_code == 202, r.text
    job = r.json()
    assert len(job["inputs"]["systems"]) == n and job["progress"]["total"] == n * frames
    return str(job["id"])


def test_spectrum_of_8_trajectories_on_two_workers_equals_one_worker_and_predictions_in_order(
        tmp_path: Path, redis_url: str, water_tgz: Path) -> None:
    from model.committee import load_predictor
    from model.inference import save_predictions_npz
    from model.spectrum_parts import run_spectrum
    from model.spectrum_pipeline import parse_request
    from model.structures import load_structures

    files = {f"run{i}.xyz": rotating_water_xyz(300 + 20 * i, DT_FS, 900.0 + 60.0 * i) for i in range(8)}
    with _service(tmp_path, redis_url, ["predict,batch", "batch"], chunk_frames=25) as (api, workers):
        model_id = _upload_model(api)
        two = _spectrum_job(api, model_id, files)
        assert two["status"] == "succeeded", two
        chunks = _chunks(api, two["id"])
        assert [c["label"] for c in chunks] == list(files) and {c["status"] for c in chunks} == {"done"}
        assert {c["worker_id"] for c in chunks} == {_worker_id(w) for w in workers}  # both took chunks
        assert two["result"]["trajectories"] == 8 and two["result"]["workers"] == 2
        assert two["progress"]["step"] == two["progress"]["total"] == sum(300 + 20 * i for i in range(8))
        names = {f["name"] for f in api.http.get(f"/v1/jobs/{two['id']}/files").json()}
        assert {f"predictions-{i:03d}.npz" for i in range(8)} <= names
        spectrum_two = api.http.get(f"/v1/jobs/{two['id']}/spectrum").json()

        # predictions in chunks of 25 frames, joined in order = one unsplit run
        r = api.http.post("/v1/datasets", files={"file": ("water.tgz", water_tgz.read_bytes())})
        ds = r.json()
        r = api.http.post(f"/v1/models/{model_id}/predict", json={"system": f"dataset:{ds['id']}/valid/global_system"})
        assert r.status_code == 202, r.text
        job = api.wait_job(r.json()["id"], timeout=300)
        assert job["status"] == "succeeded" and job["result"]["frames"] == 80, job
        assert [c["label"] for c in _chunks(api, job["id"])] == ["frames 0-24", "frames 25-49", "frames 50-74",
                                                                   "frames 75-79"]
        (tmp_path / "joined.npz").write_bytes(api.http.get(f"/v1/jobs/{job['id']}/files/predictions.npz").content)
        model = load_predictor(str(MODEL))
        coord, atype, box = load_structures(str(WATER / "dipole" / "validation_data_reformat" / "global_system"),
                                            model.type_map)
        save_predictions_npz(tmp_path / "whole.npz", model, coord, atype, box)
        with np.load(tmp_path / "joined.npz") as got, np.load(tmp_path / "whole.npz") as want:
            assert sorted(got.files) == sorted(want.files)
            for key in want.files:
                if want[key].dtype.kind == "f":
                    np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-14, err_msg=key)
                else:
                    np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        # structures of a request: 60 frames in 3 chunks, rows in order = the synchronous answer
        frames = [{"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.96 + 0.005 * i, 0.1, 0.0],
                                                               [-0.2, 0.93 - 0.004 * i, 0.0]]} for i in range(60)]
        sync = api.http.post(f"/v1/models/{model_id}/predict", json={"structures": frames})
        assert sync.status_code == 200, sync.text
        r = api.http.post(f"/v1/models/{model_id}/predict?job=true", json={"structures": frames})
        job = api.wait_job(r.json()["id"], timeout=300)
        assert job["status"] == "succeeded" and len(_chunks(api, job["id"])) == 3, job
        rows = api.http.get(f"/v1/jobs/{job['id']}/files/predictions.json").json()["results"]
        np.testing.assert_allclose([r["global_tensor"] for r in rows],
                                   [r["global_tensor"] for r in sync.json()["results"]], rtol=1e-12, atol=1e-14)

        stop(workers[1])  # the same spectrum job on one worker
        one = _spectrum_job(api, model_id, files)
        assert one["status"] == "succeeded", one
        assert {c["worker_id"] for c in _chunks(api, one["id"])} == {_worker_id(workers[0])}
        spectrum_one = api.http.get(f"/v1/jobs/{one['id']}/spectrum").json()

    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    library = run_spectrum(model, [tmp_path / n for n in files], parse_request("ir", DT_FS, OPTIONS)).spectrum
    a, b = np.array(spectrum_two["intensities"]["ir"]), np.array(spectrum_one["intensities"]["ir"])
    assert spectrum_two["wavenumber_cm"] == spectrum_one["wavenumber_cm"]
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    np.testing.assert_allclose(a, library.intensities["ir"], rtol=1e-12, atol=1e-12 * np.abs(a).max())
    assert spectrum_two["metadata"]["sources"] == list(files) and spectrum_two["metadata"]["n_trajectories"] == 8


def test_a_killed_worker_loses_only_its_chunk(tmp_path: Path, redis_url: str) -> None:
    with _service(tmp_path, redis_url, ["predict,batch", "batch"]) as (api, workers):
        model_id = _upload_model(api)
        job_id = _dataset_spectrum(api, model_id, 8, 480)
        victim = _worker_id(workers[1])

        def victim_busy() -> dict[str, Any] | None:
            rows = _chunks(api, job_id)
            done = [c for c in rows if c["status"] == "done"]
            running = [c for c in rows if c["status"] == "running" and c["worker_id"] == victim]
            return running[0] if len(done) >= 2 and running else None

        lost = wait_for("a chunk running on the second worker after two are done", victim_busy, timeout=600,
                        every=0.1)
        workers[1].send_signal(signal.SIGKILL)
        workers[1].wait(timeout=30)
        killed_at = time.time()
        before = {c["index"]: c for c in _chunks(api, job_id) if c["status"] == "done"}
        job = api.wait_job(job_id, timeout=600)
        assert job["status"] == "succeeded", job
        after = {c["index"]: c for c in _chunks(api, job_id)}
        assert after[lost["index"]]["attempt"] == 2 and after[lost["index"]]["worker_id"] == _worker_id(workers[0])
        assert all(c["attempt"] == 1 for i, c in after.items() if i != lost["index"])  # nothing else ran twice
        for i, c in before.items():  # the chunks done before the kill were not touched again
            assert after[i]["finished_at"] == c["finished_at"] and after[i]["worker_id"] == c["worker_id"]
        log = api.http.get(f"/v1/jobs/{job_id}/logs").text
        label = lost["label"]
        assert log.count(f"({label}): attempt") == 2 and log.count(f"({label}): done on worker") == 1
        for c in after.values():
            if c["index"] != lost["index"]:
                assert log.count(f"({c['label']}): attempt") == 1
        assert job["result"]["frames"] == 8 * 480 and time.time() - killed_at < 600


def test_cancel_stops_every_chunk(tmp_path: Path, redis_url: str) -> None:
    import redis

    with _service(tmp_path, redis_url, ["predict,batch", "batch"]) as (api, _workers):
        model_id = _upload_model(api)
        job_id = _dataset_spectrum(api, model_id, 8, 480)
        wait_for("two chunks running", lambda: sum(c["status"] == "running" for c in _chunks(api, job_id)) == 2,
                 timeout=600, every=0.1)
        r = api.http.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"], r.text
        job = api.wait_job(job_id, timeout=120)
        assert job["status"] == "cancelled", job
        rows = _chunks(api, job_id)
        assert {c["status"] for c in rows} <= {"cancelled", "done"} and any(c["status"] == "cancelled" for c in rows)
        never = [c for c in rows if c["started_at"] is None]
        assert never and all(c["status"] == "cancelled" for c in never)  # queued chunks never ran
        log = api.http.get(f"/v1/jobs/{job_id}/logs").text
        assert all(f"({c['label']}): attempt" not in log for c in never)
        assert job["progress"]["step"] < 8 * 480
        client = redis.Redis.from_url(redis_url)
        wait_for("the batch queue empty (queued chunks dropped)", lambda: client.llen("batch") == 0, timeout=60)
        spectrum = api.http.get(f"/v1/jobs/{job_id}/spectrum")
        assert spectrum.status_code == 409
