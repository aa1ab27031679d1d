from __future__ import annotations

import subprocess
import sys

from fastapi.testclient import TestClient
from kit import Users

from app.main import create_app
from jobs.settings import load_settings


def test_tokens(users: Users) -> None:
    c = users.client
    assert c.get("/v1/me").status_code == 401
    assert c.get("/v1/me", headers={"Authorization": "Bearer dpt_wrong"}).json()["detail"] == "unknown or revoked token"
    assert c.get("/v1/me", headers=users.h("alice")).json() == {"name": "alice", "is_admin": False}
    r = c.post("/v1/admin/tokens", json={"user": "carol"}, headers=users.h("alice"))
    assert r.status_code == 403
    r = c.post("/v1/admin/tokens", json={"user": "carol", "colour": "red"}, headers=users.h("admin"))
    assert r.status_code == 422 and r.json()["problems"][0]["loc"] == "colour"
    r = c.post("/v1/admin/tokens", json={"user": "carol"}, headers=users.h("admin"))
    assert r.status_code == 201
    token = r.json()["token"]
    assert c.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "carol"


def test_token_cli(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "create", "--user", "dave", "--admin",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    with TestClient(create_app(load_settings(data_dir=tmp_path))) as c:
        assert c.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json() == {"name": "dave",
                                                                                       "is_admin": True}


def test_no_auth_mode_on_loopback(tmp_path) -> None:
    with TestClient(create_app(load_settings(data_dir=tmp_path, auth="none"))) as c:
        assert c.get("/v1/me").json() == {"name": "local", "is_admin": True}


def test_a_fresh_service_gets_one_admin_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.auth import ensure_first_admin, user_for_token
    from jobs.db import init_db, session_scope

    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    init_db(url)
    with session_scope(url) as s:
        token = ensure_first_admin(s)
        assert token is not None
        user = user_for_token(s, token)
        assert user is not None and user.is_admin and user.name == "admin"
    with session_scope(url) as s:
        assert ensure_first_admin(s) is None  # only once
