"""Worker tests call the task bodies in this process (real SQLite store, real training,
no broker): the glue between a job row and model/. tests/e2e runs real worker processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # kit.py, shared test helpers

from kit import water_archive


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data dir with the water dataset; worker settings come from the environment, as
    in a real worker process."""
    data = tmp_path_factory.mktemp("worker-data")
    env = {"DPTENSOR_DATA_DIR": str(data), "DPTENSOR_HEARTBEAT_INTERVAL_S": "0.5", "DPTENSOR_STALE_AFTER_S": "3",
           "DPTENSOR_PROGRESS_EVERY_S": "0.2", "DPTENSOR_WORKER_DEVICE": "cpu"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from jobs.settings import get_settings

    get_settings.cache_clear()
    yield data
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ctx(root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The worker's state and Celery app (built from the test settings, as at worker start),
    a user and a dataset."""
    from app.archive import Limits, extract
    from app.auth import get_or_create_user
    from jobs.datasets import summarize
    from jobs.db import init_db, session_scope
    from jobs.layout import FILES
    from jobs.settings import load_settings
    from jobs.tables import Dataset
    from worker import state
    from worker.celery_app import create_celery

    settings = load_settings()
    assert settings.root == root.resolve()
    state.start(settings)
    create_celery(settings)  # the tasks' app (shared tasks bind to it)
    init_db(settings.db_url)
    archive = water_archive(tmp_path_factory.mktemp("archive"))
    files = root / "datasets" / "ds-water" / FILES
    extract(archive, files, Limits(1000, 1 << 30, 1 << 30))
    with session_scope(settings.db_url) as s:
        user = get_or_create_user(s, "alice")
        s.add(Dataset(id="ds-water", owner_id=user.id, name="water", systems=summarize(files)))
        uid = user.id
    return {"root": root, "owner_id": uid, "db": settings.db_url}
