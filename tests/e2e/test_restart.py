"""Kill the worker during a training: the job resumes from its last checkpoint on the
next worker, or — with no attempt left — fails with the reason. Never stuck 'running'."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kit import Api, dptensor, free_port, service_env, stop, upload_and_train, wait_for

pytestmark = pytest.mark.e2e


def _running_past(api: Api, job_id: str, step: int) -> dict | None:
    job = api.job(job_id)
    assert job["status"] in ("queued", "running"), job
    return job if job["status"] == "running" and (job["progress"]["step"] or 0) >= step else None


@contextmanager
def _long_training(tmp_path: Path, water_tgz: Path, **env_options: object) -> Iterator[tuple[Api, subprocess.Popen[bytes], dict]]:
    """api + one train worker on the embedded broker, with a training that will not end by
    itself already running; yields (api, worker, job) and stops both processes after."""
    port = free_port()
    env = service_env(tmp_path / "data", port=port, auth="none", **env_options)
    api = Api(f"http://127.0.0.1:{port}")
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    worker = dptensor("worker", "--queues", "train", env=env, log=tmp_path / "worker.log")
    try:
        wait_for("service ready", api.ready, timeout=90)
        _, job = upload_and_train(api, water_tgz, numb_steps=100000, save_freq=100000)
        wait_for("training to run", lambda: _running_past(api, job["id"], 1), timeout=120)
        yield api, worker, job
    finally:
        stop(server)
        stop(worker)


def test_killed_worker_resumes_from_checkpoint(tmp_path: Path, redis_url: str, water_tgz: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    env = service_env(data, broker_url=redis_url, port=port, auth="none")
    api = Api(f"http://127.0.0.1:{port}")
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    first = dptensor("worker", "--queues", "train", env=env, log=tmp_path / "worker1.log")
    second = None
    try:
        wait_for("service ready", api.ready, timeout=90)
        _, job = upload_and_train(api, water_tgz, numb_steps=80, save_freq=5)
        wait_for("training past a checkpoint", lambda: _running_past(api, job["id"], 12), timeout=120)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # the janitor sees the heartbeat go stale and re-sends the job; a new worker resumes it
        wait_for("job requeued", lambda: api.job(job["id"])["status"] == "queued", timeout=60)
        second = dptensor("worker", "--queues", "train", env=env, log=tmp_path / "worker2.log")
        done = api.wait_job(job["id"], timeout=180)
        assert done["status"] == "succeeded", done
        assert done["attempt"] == 2 and done["progress"]["step"] == 80
        log = api.http.get(f"/v1/jobs/{job['id']}/logs").text
        assert "attempt 1/3" in log and "attempt 2/3" in log
        assert "resuming from checkpoint model.ckpt-" in log
        steps = [r["step"] for r in api.http.get(f"/v1/jobs/{job['id']}/lcurve").json()["rows"]]
        assert steps[-1] == 80 and steps[0] == 1
    finally:
        stop(server)
        stop(first)
        if second is not None:
            stop(second)


def test_killed_worker_fails_the_job_when_no_attempt_is_left(tmp_path: Path, water_tgz: Path) -> None:
    """Embedded broker (no redelivery at all): the janitor alone ends the job, with a reason."""
    with _long_training(tmp_path, water_tgz, max_attempts=1) as (api, worker, job):
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        failed = api.wait_job(job["id"], timeout=60)
        assert failed["status"] == "failed"
        assert failed["error"]["type"] == "WorkerLost"
        assert "gave up after 1 attempt(s) of at most 1" in failed["error"]["message"]
        assert "stopped sending heartbeats" in failed["error"]["message"]
        assert failed["inputs"]["training"]["numb_steps"] == 100000  # inputs kept for a resubmit


def test_worker_shutdown_requeues_the_running_job(tmp_path: Path, water_tgz: Path) -> None:
    """SIGTERM (Ctrl-C of serve) is not a failure: checkpoint, back to the queue, attempt not counted."""
    with _long_training(tmp_path, water_tgz) as (api, worker, job):
        assert stop(worker) == 0
        queued = api.job(job["id"])
        assert (queued["status"], queued["attempt"]) == ("queued", 0)
        files = {f["name"] for f in api.http.get(f"/v1/jobs/{job['id']}/files").json()}
        assert "model.ckpt.pt" in files
        assert api.http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
