"""Api tests: the real app (TestClient) on a temporary data dir with the embedded broker (one
Redis server for the session, as `dptensor serve` starts it).
No worker runs here — jobs stay queued; tests/e2e covers workers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # kit.py, shared test helpers

from kit import Users, water_archive

from app.auth import create_token
from app.embedded_broker import EmbeddedBroker
from app.main import create_app
from jobs.db import session_scope
from jobs.settings import Settings, load_settings
from jobs.tables import ModelRecord, User


@pytest.fixture(scope="session")
def water_tgz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return water_archive(tmp_path_factory.mktemp("archive"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded broker (the Redis server `dptensor serve` starts) for the api tests."""
    embedded = EmbeddedBroker(load_settings(data_dir=tmp_path_factory.mktemp("broker")))
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def settings(tmp_path: Path, broker: EmbeddedBroker) -> Settings:
    import redis

    with redis.Redis(unix_socket_path=str(broker.socket)) as client:
        client.flushdb()  # no test sees another's messages
    return load_settings(data_dir=tmp_path / "data", broker_url=f"redis+socket://{broker.socket}",
                         max_upload_bytes=3 << 20, max_json_bytes=1 << 20, sync_predict_max_atoms=1000,
                         max_atoms_per_structure=500, max_archive_members=200, janitor_interval_s=3600)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def users(client: TestClient, settings: Settings) -> Users:
    with session_scope(settings.db_url) as s:
        tokens = {name: create_token(s, name, admin=name == "admin") for name in ("alice", "bob", "admin")}
    return Users(client, tokens)


@pytest.fixture
def dataset(users: Users, water_tgz: Path) -> dict:
    r = users.client.post("/v1/datasets", files={"file": ("water.tgz", water_tgz.read_bytes())},
                          headers=users.h("alice"))
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
def model_id(users: Users, settings: Settings) -> str:
    """A model row owned by alice (no file: validation happens before any worker call)."""
    with session_scope(settings.db_url) as s:
        alice = s.scalars(select(User).where(User.name == "alice")).one()
        s.add(ModelRecord(id="mdl-000000000001", owner_id=alice.id, name="m", kind="dipole", type_map=["O", "H"],
                          sel_type=[0], info={"rcut": 6.0, "sel": [46, 92], "precision": "float64"}, metrics={}, source="uploaded", size_bytes=0))
    return "mdl-000000000001"
