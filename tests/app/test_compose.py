"""docker-compose.yml and the Dockerfile, checked by parsing (Docker does not run here, so
`docker compose config` itself is not executed by the tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_services() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"redis", "postgres", "api", "worker", "worker-predict"} <= set(services)
    for name in ("redis", "postgres", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert "--appendonly" in services["redis"]["command"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    for name in ("api", "worker", "worker-predict"):
        assert "dptensor-data:/data" in services[name]["volumes"], name
        env = services[name]["environment"]
        assert env["DPTENSOR_BROKER_URL"].startswith("redis://redis:")
        assert env["DPTENSOR_DATABASE_URL"].startswith("postgresql+psycopg2://")
    for name in ("worker", "worker-predict"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["build"]["target"] == "api" and services["worker"]["build"]["target"] == "worker"
    assert set(spec["volumes"]) == {"redis-data", "postgres-data", "dptensor-data"}


def test_dockerfile_targets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "AS api" in text and "AS worker" in text
    api = text.split("AS api", 1)[1].split("FROM", 1)[0]
    installs = [line for line in api.splitlines() if not line.lstrip().startswith("#")]
    assert "torch" not in "\n".join(installs) and "pip install --no-deps ." in api
    assert "download.pytorch.org/whl/cu" in text.split("AS worker", 1)[1]
