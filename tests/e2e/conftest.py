"""End-to-end: real processes (``dptensor serve`` / ``dptensor worker``), a real broker
(Redis on 127.0.0.1:6379, or the embedded SQLite one), real HTTP."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kit import water_archive

# a database of its own, flushed before use; DPTENSOR_TEST_REDIS_URL lets parallel checkouts
# on one machine keep apart
REDIS_URL = os.environ.get("DPTENSOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(scope="session")
def water_tgz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return water_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL} ({exc}); start redis-server (CI does)")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
