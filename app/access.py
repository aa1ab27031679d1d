"""Ownership: every dataset, job and model belongs to a user. Another user's object is
reported exactly like a missing one (404), so ids cannot be probed; admins see all."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import Session

from app.errors import NotFound
from jobs.tables import Dataset, Job, ModelRecord, User

Owned = TypeVar("Owned", Dataset, Job, ModelRecord)
S = TypeVar("S", bound=Select)  # a Select of any columns
WHAT = {Dataset: "dataset", Job: "job", ModelRecord: "model"}


def owned(session: Session, table: type[Owned], obj_id: str, user: User) -> Owned:
    obj = session.get(table, obj_id)
    if obj is None or not (user.is_admin or obj.owner_id == user.id):
        raise NotFound(f"{WHAT[table]} {obj_id!r} not found")
    return obj


def visible(query: S, table: type[Owned], user: User) -> S:
    return query if user.is_admin else query.where(table.owner_id == user.id)
