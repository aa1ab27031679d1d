"""Broker down: every call that needs it is the documented JSON 503 within the broker
timeout, and nothing is left half-written (no job, no model, no staging files). The broker
is a real Redis URL on a port where nothing listens."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kit import Users, free_port, tiny_input
from sqlalchemy import func, select

from jobs.db import session_scope
from jobs.settings import Settings, load_settings
from jobs.tables import Job, ModelRecord

WATER = {"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data", broker_url=f"redis://127.0.0.1:{free_port()}/0",
                         broker_timeout_s=1.0, janitor_interval_s=3600)


def _is_503(r, started: float) -> None:
    assert time.monotonic() - started < 15, "a down broker must be answered within a short timeout"
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"].startswith("the job queue is unavailable")


def test_sync_predict_and_model_upload(users: Users, model_id: str, settings: Settings) -> None:
    t0 = time.monotonic()
    _is_503(users.client.post(f"/v1/models/{model_id}/predict", json={"structures": [WATER]},
                              headers=users.h("alice")), t0)
    t0 = time.monotonic()
    _is_503(users.client.post("/v1/models", files={"file": ("m.pt", b"not inspected")}, headers=users.h("alice")), t0)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(ModelRecord)) == 1  # the fixture's only
    assert [p.name for p in (settings.root / "models").iterdir()] == []


def test_job_submission_leaves_no_job(users: Users, dataset: dict, settings: Settings) -> None:
    raw = tiny_input(f"dataset:{dataset['id']}/train", f"dataset:{dataset['id']}/valid")
    t0 = time.monotonic()
    _is_503(users.client.post("/v1/jobs/train", json=raw, headers=users.h("alice")), t0)
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    jobs = settings.root / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == []
