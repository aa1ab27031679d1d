"""Dynamic batching and /metrics against real processes: a Redis broker, the api
(`dptensor serve --no-worker`) and a `dptensor worker` for the predict queue."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from kit import DEEPMD_REF, WATER, Api, dptensor, free_port, service_env, stop, wait_for
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

pytestmark = pytest.mark.e2e
FRAMES = WATER / "dipole" / "validation_data_reformat" / "global_system"
# a 1.5 Å periodic box with the model's 6 Å cutoff: 9³ images × 3 atoms = 2187 neighbour
# candidates per atom. The api's budget (default) lets it through; this worker's (1000)
# refuses it: a request that fails inside the worker, in the middle of a batch.
THIN_CELL_WATER = {"symbols": ["O", "H", "H"], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]],
                   "cell": [[1.5, 0, 0], [0, 1.5, 0], [0, 0, 1.5]]}


def requests_to_send() -> list[dict[str, Any]]:
    """Frames of 192 atoms, single water molecules in different geometries, and one frame
    request with several structures of both kinds."""
    coord = np.load(FRAMES / "set.000" / "coord.npy").reshape(-1, 192, 3)
    types = np.loadtxt(FRAMES / "type.raw", dtype=int).tolist()
    frames = [{"types": types, "positions": coord[i].tolist()} for i in range(6)]
    rng = np.random.default_rng(7)
    waters = [{"symbols": ["O", "H", "H"],
               "positions": (np.array([[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]])
                             + rng.normal(scale=0.05, size=(3, 3))).tolist()} for _ in range(5)]
    return [{"structures": [f]} for f in frames] + [{"structures": [w]} for w in waters] + [
        {"structures": [waters[0], frames[0], waters[1]]}]


def scrape(api: Api) -> list[Sample]:
    r = api.http.get("/metrics")
    assert r.status_code == 200, r.text
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_coalesced_predictions_equal_one_by_one_and_a_bad_request_fails_alone(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    port = free_port()
    # batches wait up to 300 ms while one is in flight: concurrent requests surely coalesce
    env = service_env(data, broker_url=redis_url, port=port, auth="none", predict_batch_wait_ms=300,
                      predict_batch_in_flight=1)
    api = Api(f"http://127.0.0.1:{port}")
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    worker = dptensor("worker", "--queues", "predict,batch", env={**env, "DPTENSOR_MAX_SEARCH_CANDIDATES": "1000"},
                      log=tmp_path / "worker.log")
    try:
        wait_for("service ready", api.ready, timeout=240)  # a loaded 2-core machine: imports take a while
        r = api.http.post("/v1/models", files={"file": ("slim.pt", (DEEPMD_REF / "dipole" / "model_slim.pt")
                                                        .read_bytes())})
        assert r.status_code == 201, r.text
        url = f"/v1/models/{r.json()['id']}/predict"
        bodies = requests_to_send()

        # one by one: each request is a batch of its own (the worker is idle when it arrives)
        alone = []
        for body in bodies:
            r = api.http.post(url, json=body)
            assert r.status_code == 200, r.text
            alone.append(r.json()["results"])
        # where the last one's time went (app/timing.py): every span, and they add up to the whole
        spans = {k: float(v) for k, _, v in (item.strip().partition(";dur=") for item in
                                             r.headers["server-timing"].split(","))}
        assert list(spans) == ["parse", "check", "batch", "queue", "model", "worker", "return", "respond", "app"]
        assert all(v >= 0 for v in spans.values()) and spans["model"] > 0, spans
        assert sum(v for k, v in spans.items() if k != "app") == pytest.approx(spans["app"], rel=0.05, abs=0.5)
        before = wait_for("the worker's metrics of the one-by-one requests", lambda: (
            m if value(m := scrape(api), "dptensor_predict_batch_requests_count") == len(bodies) else None), timeout=30)
        assert value(before, "dptensor_predict_batch_requests_sum") == len(bodies)  # batches of one

        # all at once, with the bad request among them
        mixed = [*bodies[:6], {"structures": [THIN_CELL_WATER]}, *bodies[6:]]
        start = threading.Barrier(len(mixed))

        def post(body: dict[str, Any]) -> httpx.Response:
            with httpx.Client(base_url=api.http.base_url, timeout=60) as client:
                start.wait()
                return client.post(url, json=body)

        with ThreadPoolExecutor(len(mixed)) as pool:
            answers = list(pool.map(post, mixed))
        bad = answers.pop(6)
        assert bad.status_code == 422, bad.text
        # SearchTooCostly (a DataError): the user's input, a 422 — it was a 503 before
        assert "SearchTooCostly" in bad.json()["detail"] and "budget of 1000" in bad.json()["detail"], bad.text
        for body, got, ref in zip(bodies, answers, alone, strict=True):
            assert got.status_code == 200, got.text
            results = got.json()["results"]
            assert len(results) == len(body["structures"])
            for a, b in zip(results, ref, strict=True):
                for key in ("global_tensor", "atomic_tensor"):
                    np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-300)

        # the worker coalesced them (fewer batches than requests), visible in /metrics
        last: list[str] = []  # what the probe saw last, for the failure message

        def coalesced() -> list[Sample] | None:
            m = scrape(api)
            n = value(m, "dptensor_predict_requests_total") - len(bodies)
            last[:] = [f"requests {n:g} of {len(mixed)} (errors {value(m, 'dptensor_predict_requests_total', outcome='error'):g}), "
                       f"batches {value(m, 'dptensor_predict_batch_requests_count') - len(bodies):g}"]
            return m if n == len(mixed) else None  # the worker's heartbeat has published them

        try:
            m = wait_for("the worker's metrics after the concurrent requests", coalesced, timeout=30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; /metrics showed {last}; worker log: {tmp_path / 'worker.log'}") from None
        batches = value(m, "dptensor_predict_batch_requests_count") - len(bodies)
        assert 1 <= batches < len(mixed) / 2, batches
        assert value(m, "dptensor_predict_requests_total", outcome="error") == 1
        assert value(m, "dptensor_predicted_frames_total", source="sync") == 2 * sum(len(b["structures"])
                                                                                   for b in bodies)
        assert value(m, "dptensor_predict_queue_wait_seconds_count") == len(bodies) + batches
        assert all("worker" in s.labels for s in m if s.name.startswith("dptensor_predict"))
        route = "/v1/models/{model_id}/predict"
        assert value(m, "dptensor_http_requests_total", route=route, method="POST", status="200") == 2 * len(bodies)
        assert value(m, "dptensor_http_requests_total", route=route, method="POST", status="422") == 1
        assert value(m, "dptensor_http_request_duration_seconds_count", route=route) == 2 * len(bodies) + 1
        beats = [s for s in m if s.name == "dptensor_worker_last_heartbeat_timestamp_seconds"]
        assert len(beats) == 1 and beats[0].labels["queues"] == "predict,batch"
        assert {s.labels["queue"] for s in m if s.name == "dptensor_queue_depth"} == {"train", "predict", "batch"}

        # a prediction job: jobs by kind and status, frames predicted by jobs
        r = api.http.post(f"{url}?job=true", json=bodies[0])
        assert r.status_code == 202, r.text
        api.wait_job(r.json()["id"])
        m = wait_for("the job's frames in the worker's metrics",
                     lambda: (m if value(m := scrape(api), "dptensor_predicted_frames_total", source="job") == 1
                              else None), timeout=30)
        assert value(m, "dptensor_jobs", kind="predict", status="succeeded") == 1

        # the binary form: three 192-atom frames as .npz in and out, the same numbers
        frames = [b["structures"][0] for b in bodies[:3]]
        buf = io.BytesIO()
        np.savez(buf, positions=np.array([f["positions"] for f in frames]), types=np.array(frames[0]["types"]))
        r = api.http.post(f"{url}.npz", content=buf.getvalue(), headers={"Content-Type": "application/x-npz"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz", r.text
        with np.load(io.BytesIO(r.content), allow_pickle=False) as got:
            for i in range(3):
                np.testing.assert_allclose(got["global_tensor"][i], alone[i][0]["global_tensor"], rtol=1e-12)
                np.testing.assert_allclose(got["atomic_tensor"][i], alone[i][0]["atomic_tensor"], rtol=1e-12)
    finally:
        stop(server)
        stop(worker)
