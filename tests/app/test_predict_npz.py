"""POST /v1/models/{id}/predict.npz: the binary form is checked like JSON before any worker
sees it (the answer itself: tests/e2e/test_serving.py)."""

from __future__ import annotations

import io

import numpy as np
from kit import Users

from app.npz import MEDIA_TYPE


def npz(**arrays: object) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def post(users: Users, model_id: str, body: bytes) -> tuple[int, dict]:
    r = users.client.post(f"/v1/models/{model_id}/predict.npz", content=body,
                          headers={**users.h("alice"), "Content-Type": MEDIA_TYPE})
    return r.status_code, r.json()


def test_bad_npz_bodies_are_422_naming_the_problem(users: Users, model_id: str) -> None:
    code, body = post(users, model_id, b"not a zip")
    assert code == 422 and "not a readable .npz" in body["detail"]
    code, body = post(users, model_id, npz(positions=np.zeros((3, 3))))
    assert code == 422 and "one of 'types' / 'symbols'" in body["detail"]
    pickled = npz(positions=np.zeros((3, 3)), symbols=np.array([{"O": 1}, 2, 3], dtype=object))
    code, body = post(users, model_id, pickled)
    assert code == 422 and "without pickles" in body["detail"]
    code, body = post(users, model_id, npz(positions=np.zeros((2, 3)), symbols=np.array(["O", "H", "H"])))
    assert code == 422 and "positions has 2 rows but there are 3 atoms" in body["detail"]
    code, body = post(users, model_id, npz(positions=np.zeros((1, 3, 3)), symbols=np.array(["O", "H", "Xx"])))
    assert code == 422 and "not in the model's type_map" in body["detail"]
    code, body = post(users, model_id, npz(positions=np.full((1, 3, 3), np.nan), symbols=np.array(["O", "H", "H"])))
    assert code == 422
