"""A worker's typed error maps to HTTP in one place (app/errors.py): the input's fault is a
422 that keeps the problems' JSON paths, anything else a 503."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from jobs.errors import RemoteError, payload
from jobs.settings import Settings


def test_remote_errors_map_to_http(settings: Settings) -> None:
    app = create_app(settings)
    errors = {
        "config": payload("config", "ConfigError", "loss.pref: required key is missing",
                          [("loss.pref", "required key is missing")]),
        "internal": payload("internal", "RuntimeError", "CUDA out of memory"),
    }

    @app.get("/test-remote/{kind}")
    def _raise(kind: str) -> None:
        raise RemoteError(errors[kind])

    with TestClient(app) as client:
        r = client.get("/test-remote/config")
        assert r.status_code == 422
        assert r.json() == {"detail": "ConfigError: loss.pref: required key is missing",
                            "problems": [{"loc": "loss.pref", "msg": "required key is missing"}]}
        r = client.get("/test-remote/internal")
        assert r.status_code == 503 and r.json()["detail"] == "the worker failed: RuntimeError: CUDA out of memory"
