"""A training job that asks for ``"resources": {"nproc": 2}``: the worker (a real process,
real Redis) launches two gloo ranks, reports their progress, and a cancel stops both."""

from __future__ import annotations

from pathlib import Path

import pytest
from kit import alive, api_and_worker, children, tiny_input, wait_for

pytestmark = pytest.mark.e2e


def test_train_job_with_two_ranks_reports_progress_and_cancel_stops_every_rank(
        tmp_path: Path, redis_url: str, water_tgz: Path) -> None:
    with api_and_worker(tmp_path, "train", user=None, broker_url=redis_url) as run:
        api, worker = run.api, run.worker
        ds = api.http.post("/v1/datasets", files={"file": ("water.tgz", water_tgz.read_bytes())}).json()
        body = {**tiny_input(f"dataset:{ds['id']}/train", f"dataset:{ds['id']}/valid", numb_steps=100000,
                             save_freq=100000), "resources": {"nproc": 2}}
        r = api.http.post("/v1/jobs/train", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        running = wait_for("two ranks past step 5", lambda: (j if (j := api.job(job_id))["status"] == "running"
                                                             and (j["progress"]["step"] or 0) >= 5 else None),
                           timeout=480)
        assert running["progress"]["total"] == 100000
        ranks = [pid for pid in children(worker.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(ranks) >= 2, ranks
        log = api.http.get(f"/v1/jobs/{job_id}/logs").text
        assert "data-parallel training: 2 ranks (CPU, gloo)" in log

        assert api.http.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        done = api.wait_job(job_id, timeout=300)
        assert done["status"] == "cancelled", done
        wait_for("every rank to exit", lambda: not any(alive(pid) for pid in ranks), timeout=60)
        files = {f["name"] for f in api.http.get(f"/v1/jobs/{job_id}/files").json()}
        assert any(name.startswith("model.ckpt-") for name in files), files  # rank 0 saved on the way out
