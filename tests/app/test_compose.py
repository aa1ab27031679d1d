"""docker-compose.yml and the Dockerfile: validated by Compose itself (`docker compose
config`, or Debian's `docker-compose config` where the plugin is missing; no Docker engine
is needed for that) and checked for the structure the service relies on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_config_validates() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed (scripts/test installs the latter)")
    done = subprocess.run([*compose, "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    # The YAML anchors resolve: every service gets the shared environment.
    assert resolved["services"]["worker-predict"]["environment"]["DPTENSOR_BROKER_URL"] == "redis://redis:6379/0"
    assert resolved["services"]["api"]["environment"]["DPTENSOR_DATA_DIR"] == "/data"


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: Compose refuses a service with an unknown key."""
    compose = _compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec["services"]["api"]["restart_policy_typo"] = "always"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(spec))
    done = subprocess.run([*compose, "-f", str(broken), "config"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode != 0
    assert "restart_policy_typo" in done.stderr + done.stdout


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


def test_worker_scales_one_per_gpu() -> None:
    """``--scale worker=N``: no fixed name or host port, every GPU visible, one claimed each."""
    worker = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["command"][-2:] == ["--device", "cuda:auto"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["count"] == "all" and device["capabilities"] == ["gpu"]
