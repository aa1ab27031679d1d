"""Job-store tests run on SQLite and on PostgreSQL (skipped only when no server answers on
127.0.0.1:5432): the ``session`` fixture gives each test a fresh database of each."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from jobs.db import init_db, session_factory
from jobs.tables import User

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _pg_schema() -> Iterator[str]:
    try:
        engine = create_engine(PG, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG}: {exc}")
    schema = f"dptensor_test_{secrets.token_hex(4)}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{PG}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def session(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        yield from _with(url)
    else:
        for url in _pg_schema():
            yield from _with(url)


def _with(url: str) -> Iterator[Session]:
    init_db(url)
    with session_factory(url)() as s:
        s.add(User(name="u"))
        s.commit()
        yield s
