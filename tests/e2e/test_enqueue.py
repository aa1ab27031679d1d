"""Reliable enqueueing and shutdown (real Redis, real worker processes): a job whose
message the broker lost, or that was never sent, still runs — once; a stopping worker
takes no new work and stops in seconds; a job given back at shutdown resumes at the next
start."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
import redis
from kit import Api, dptensor, free_port, service_env, stop, upload_and_train, wait_for

from jobs.db import session_scope
from jobs.tables import Job

pytestmark = pytest.mark.e2e


def _attempt_lines(api: Api, job_id: str) -> list[str]:
    log = api.http.get(f"/v1/jobs/{job_id}/logs").text
    return [line for line in log.splitlines() if " attempt " in line and " on worker " in line]


def test_lost_and_unsent_messages_are_sent_again_and_run_once(tmp_path: Path, redis_url: str,
                                                              water_tgz: Path) -> None:
    port = free_port()
    # generous staleness: a heartbeat lagging on a loaded machine is not this test's subject
    env = service_env(tmp_path / "data", broker_url=redis_url, port=port, auth="none", stale_after_s=60,
                      heartbeat_interval_s=1, resend_queued_after_s=2, enqueue_grace_s=1)
    api = Api(f"http://127.0.0.1:{port}")
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    worker = None
    try:
        wait_for("api up", lambda: _up(api), 90)
        _, lost = upload_and_train(api, water_tgz, numb_steps=10)
        r = api.http.post("/v1/jobs/train", json={**lost["inputs"]})
        unsent = r.json()
        # the broker restarts empty: both messages are gone; the second row looks as if the
        # api had died between its commit and send_task
        redis.Redis.from_url(redis_url).flushdb()
        with session_scope(f"sqlite:///{tmp_path / 'data' / 'dptensor.sqlite'}") as s:
            s.get(Job, unsent["id"]).enqueued_at = None  # type: ignore[union-attr]
        worker = dptensor("worker", "--queues", "train", env=env, log=tmp_path / "worker.log")
        for job in (lost, unsent):
            done = api.wait_job(job["id"], timeout=240)
            assert done["status"] == "succeeded", done
            assert done["attempt"] == 1  # re-sent messages are duplicates: run once
            assert len(_attempt_lines(api, job["id"])) == 1
    finally:
        stop(server)
        if worker is not None:
            stop(worker)


def _up(api: Api) -> bool:
    try:
        return api.http.get("/v1/health/live").status_code == 200
    except httpx.TransportError:
        return False


def _events(log: str) -> list[str]:
    """The job log's delivery events, in order: 'attempt' (a worker took it), 'given back'."""
    out = []
    for line in log.splitlines():
        if " attempt " in line and " on worker " in line:
            out.append("attempt")
        elif "worker shutting down: job returned to the queue" in line:
            out.append("given back")
    return out


def test_ctrl_c_of_serve_with_a_training_stops_in_seconds_and_resumes_next_start(tmp_path: Path,
                                                                                 water_tgz: Path) -> None:
    port = free_port()
    # generous staleness: on a loaded test machine a heartbeat may lag, which is not this test's subject
    env = service_env(tmp_path / "data", port=port, auth="none", stale_after_s=60, heartbeat_interval_s=1)
    api = Api(f"http://127.0.0.1:{port}")
    job_log = tmp_path / "data" / "jobs"
    serve = dptensor("serve", env=env, log=tmp_path / "serve1.log")
    try:
        wait_for("service ready", api.ready, timeout=120)
        _, job = upload_and_train(api, water_tgz, numb_steps=100000, save_freq=100000)
        wait_for("training to run", lambda: (j := api.job(job["id"]))["status"] == "running"
                 and (j["progress"]["step"] or 0) >= 5, timeout=120)
        t0 = time.monotonic()
        assert stop(serve, signal.SIGINT) == 0
        took = time.monotonic() - t0
    finally:
        stop(serve)
    assert took < 20, f"Ctrl-C took {took:.1f} s"
    log = job_log / job["id"] / "job.log"
    # given back once, and not taken again by the stopping worker
    assert _events(log.read_text())[-2:] == ["attempt", "given back"], log.read_text()[-3000:]
    serve = dptensor("serve", env=env, log=tmp_path / "serve2.log")
    try:
        wait_for("the job to resume at the next start", lambda: _events(log.read_text())[-1] == "attempt"
                 and "resuming from checkpoint" in log.read_text().rsplit("worker shutting down", 1)[1], timeout=180)
        assert api.job(job["id"])["status"] == "running"
        assert api.http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        assert api.wait_job(job["id"], timeout=120)["status"] == "cancelled"
    finally:
        stop(serve, signal.SIGINT)
