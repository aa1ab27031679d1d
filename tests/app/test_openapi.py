"""/docs describes every endpoint: a response model (or documented content), a summary,
and the error shape."""

from __future__ import annotations

from fastapi.testclient import TestClient


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
