"""Checking prediction requests against a model (type_map, sizes, cells) before any worker
sees them, and turning them into the worker's payload: types as model indices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from app.auth import LOCAL_USER, hash_token
from app.deps import resolve_user
from app.errors import NotFound, PayloadTooLarge, Unprocessable
from app.schemas import PredictRequest
from jobs.settings import Settings
from jobs.tables import ModelRecord, Token, User
from model.errors import DataError
from model.search_budget import perpendicular_widths, plan_search

COMPONENTS = {"dipole": ["x", "y", "z"],
              "polar": ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]}
# A model predicts in the units of its training labels; these are DeePMD-kit's conventions.
UNITS = {"dipole": "e·Å", "polar": "Å³"}


def units(kind: str) -> dict[str, str]:
    return {"positions": "Å", "cell": "Å", "global_tensor": UNITS[kind], "atomic_tensor": UNITS[kind]}


class ModelFacts(Protocol):
    """What the checks read of a model (a ModelRecord or a Target)."""

    @property
    def type_map(self) -> list[Any]: ...

    @property
    def info(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Target:
    """The model of a synchronous prediction, read as one row without the ORM."""

    id: str
    kind: Literal["dipole", "polar"]
    type_map: list[Any]
    info: dict[str, Any]


# built once: building a statement costs more than running it. The caller's row, with the
# model's columns joined on (None when there is no such model): one read per request.
_MODEL_COLUMNS = (ModelRecord.owner_id, ModelRecord.kind, ModelRecord.type_map, ModelRecord.info)
_MODEL_ON = ModelRecord.id == bindparam("model_id")
_BY_NAME = (select(User.id, User.is_admin, *_MODEL_COLUMNS).select_from(User).outerjoin(ModelRecord, _MODEL_ON)
            .where(User.name == bindparam("name")))
_BY_TOKEN = (select(User.id, User.is_admin, *_MODEL_COLUMNS).select_from(User)
             .join(Token, Token.user_id == User.id).outerjoin(ModelRecord, _MODEL_ON)
             .where(Token.token_hash == bindparam("token_hash")))
_MODEL = select(*_MODEL_COLUMNS).where(_MODEL_ON)


def prediction_target(conn: Connection, settings: Settings, creds: HTTPAuthorizationCredentials | None,
                      model_id: str) -> Target:
    """The model, if the caller may use it: app.deps.resolve_user's rules for who calls,
    app.access.owned's for the model (another user's is a 404, like a missing one) — read
    as columns, without the ORM."""
    row: Any = None
    if settings.auth == "none":
        row = conn.execute(_BY_NAME, {"name": LOCAL_USER, "model_id": model_id}).one_or_none()
        row = row if row is not None and row.is_admin else None
    elif creds is not None and creds.scheme.lower() == "bearer":
        row = conn.execute(_BY_TOKEN, {"token_hash": hash_token(creds.credentials), "model_id": model_id}
                           ).one_or_none()
    if row is None:  # a fresh service's first request (creates its user), or a 401
        with Session(conn.engine) as session:
            user = resolve_user(session, settings, creds)
            caller, admin = user.id, user.is_admin
        row = conn.execute(_MODEL, {"model_id": model_id}).one_or_none()
    else:
        caller, admin = row.id, row.is_admin
    if row is None or row.kind is None or not (admin or row.owner_id == caller):
        raise NotFound(f"model {model_id!r} not found")
    return Target(model_id, row.kind, list(row.type_map), dict(row.info or {}))


def to_payload(req: PredictRequest, model: ModelFacts, settings: Settings) -> tuple[list[dict[str, Any]], int]:
    """Validated structures as {"types", "positions", "cell"}; returns (them, total atoms)."""
    assert req.structures is not None
    if len(req.structures) > settings.max_structures:
        raise PayloadTooLarge(f"{len(req.structures)} structures: at most {settings.max_structures} per request")
    index = {name: i for i, name in enumerate(model.type_map)}
    ntypes = len(model.type_map)
    rcut = float(model.info["rcut"]) if isinstance(model.info.get("rcut"), int | float) else None
    problems: list[tuple[str, str]] = []
    out: list[dict[str, Any]] = []
    total = 0
    for i, s in enumerate(req.structures):
        loc = f"structures[{i}]"
        n = len(s.positions)
        total += n
        if n > settings.max_atoms_per_structure:
            raise PayloadTooLarge(f"{loc}: {n} atoms, at most {settings.max_atoms_per_structure} per structure")
        if s.symbols is not None:
            unknown = sorted({x for x in s.symbols if x not in index})
            if unknown:
                problems.append((f"{loc}.symbols", f"element(s) {unknown} are not in the model's type_map "
                                                   f"{model.type_map}"))
                continue
            types = [index[x] for x in s.symbols]
        else:
            types = list(s.types or [])
            bad = sorted({t for t in types if t >= ntypes})
            if bad:
                problems.append((f"{loc}.types", f"type index(es) {bad} out of range for the model's type_map "
                                                 f"{model.type_map} ({ntypes} types)"))
                continue
        cell = None
        if s.periodic:
            cell = s.cell
            if cell is not None and abs(float(np.linalg.det(np.asarray(cell)))) < 1e-6:
                problems.append((f"{loc}.cell", "the cell is singular (zero volume)"))
                continue
            if cell is not None and rcut is not None:
                try:  # the worker applies the same rule; here it costs the worker nothing
                    plan_search(n, perpendicular_widths(np.asarray(cell, dtype=np.float64)), rcut,
                                settings.max_search_candidates)
                except DataError as exc:
                    problems.append((f"{loc}.cell", exc.detail))
                    continue
        out.append({"types": types, "positions": s.positions, "cell": cell})
    if problems:
        text = "; ".join(f"{loc}: {msg}" for loc, msg in problems[:5])
        raise Unprocessable(f"invalid structures: {text}", problems)
    return out, total
