"""/docs describes every endpoint: a response model (or documented content), a summary,
and the error shape."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from kit import Users


def test_every_route_is_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    ops = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert len(ops) >= 19
    for path, method, op in ops:
        assert path.startswith("/v1/"), path
        ok = next(code for code in op["responses"] if code.startswith("2"))
        content = op["responses"][ok].get("content")
        assert content or ok == "204", (path, method)
        if content and "application/json" in content:
            assert content["application/json"]["schema"], (path, method)
        if "health" not in path:
            assert "404" in op["responses"] and "422" in op["responses"], (path, method)
    schemas = spec["components"]["schemas"]
    for name in ("JobPublic", "DatasetPublic", "ModelPublic", "PredictRequest", "PredictResponse", "Structure",
                 "ErrorBody", "Ready", "LcurvePublic"):
        assert name in schemas
    assert schemas["Structure"]["additionalProperties"] is False
    train = spec["paths"]["/v1/jobs/train"]["post"]
    assert "water dipole" in train["requestBody"]["content"]["application/json"]["examples"]


def test_undecodable_body_gets_a_documented_status(users: Users) -> None:
    """A JSON body that is not UTF-8: the status and the error shape are in the contract."""
    spec = users.client.get("/openapi.json").json()
    r = users.client.post("/v1/jobs/train", content=b'{"model": "\xff\xfe"}', headers={
        **users.h("alice"), "Content-Type": "application/json"})
    assert str(r.status_code) in spec["paths"]["/v1/jobs/train"]["post"]["responses"], r.text
    assert r.status_code == 400 and r.json()["problems"][0]["loc"] == "body"
    assert "UTF-8" in r.json()["detail"]


def test_timestamps_are_rfc3339_with_offset(users: Users, dataset: dict) -> None:
    ds = users.client.get(f"/v1/datasets/{dataset['id']}", headers=users.h("alice")).json()
    assert datetime.fromisoformat(ds["created_at"]).utcoffset() == timedelta(0), ds["created_at"]
    assert ds["created_at"].endswith("Z")


def test_text_routes_document_their_errors_as_json(client: TestClient) -> None:
    """/logs answers text/plain, but its 401/404/422 are JSON error bodies — documented so."""
    logs = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/logs"]["get"]["responses"]
    assert list(logs["200"]["content"]) == ["text/plain"]
    for code in ("401", "404", "422"):
        assert list(logs[code]["content"]) == ["application/json"], (code, logs[code])
    r = client.get("/v1/jobs/job-000000000000/logs")
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"
