from __future__ import annotations

import subprocess
import sys

import pytest

from jobs.settings import SettingsError, load_settings


def test_defaults_are_embedded_and_local(tmp_path) -> None:
    s = load_settings(data_dir=tmp_path)
    # the embedded broker: the Redis server `dptensor serve` starts on a socket in the data dir
    assert s.embedded_broker and s.broker == f"redis+socket://{tmp_path.resolve() / 'broker.sock'}"
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'dptensor.sqlite'}"
    assert s.results == s.broker
    # a data dir too deep for a unix socket path: the socket goes to a private temp folder
    deep = load_settings(data_dir=tmp_path / ("d" * 120))
    assert len(str(deep.embedded_socket)) <= 100 and deep.embedded_socket.parent.name.startswith("dptensor-")
    assert deep.embedded_socket == load_settings(data_dir=tmp_path / ("d" * 120)).embedded_socket
    # Celery's SQLAlchemy transport on SQLite, the former default, stays available
    sqla = load_settings(data_dir=tmp_path, broker_url=f"dptensor-sqla+sqlite:///{tmp_path}/broker.sqlite")
    assert sqla.sqlite_broker and not sqla.embedded_broker and sqla.results.startswith("db+sqlite:///")
    redis = load_settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/3")
    assert not redis.embedded_broker and redis.results == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize(("overrides", "names"), [
    ({"port": 70000}, "DPTENSOR_PORT"),
    ({"database_url": "mysql://x"}, "DPTENSOR_DATABASE_URL"),
    ({"broker_url": "amqp://x"}, "DPTENSOR_BROKER_URL"),
    ({"auth": "none", "host": "0.0.0.0"}, "would open the service to the network"),
    ({"heartbeat_interval_s": 10, "stale_after_s": 5}, "at least twice"),
])
def test_invalid_settings_fail_fast_naming_the_variable(overrides: dict, names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        load_settings(**overrides)


def test_cli_refuses_no_auth_on_public_host(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--no-auth", "--host", "0.0.0.0",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "would open the service to the network" in out.stderr
    assert not (tmp_path / "dptensor.sqlite").exists()  # refused before touching anything


def test_workers_split_the_cores_and_keep_user_settings(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import os

    from app.serve import cpu_share

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cpu_share(2) == {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "PASSIVE"}
    assert cpu_share(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert "OMP_NUM_THREADS" not in cpu_share(2)
