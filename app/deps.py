"""Annotated dependencies: ``SessionDep``, ``SettingsDep``, ``QueueDep``, ``BatcherDep``, ``CurrentUser``,
``Credentials`` (the bearer token as sent; ``resolve_user`` says whose it is)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import LOCAL_USER, get_or_create_user, user_for_token
from app.batching import Batcher
from app.errors import Unauthorized
from jobs.queue import TaskQueue
from jobs.settings import Settings
from jobs.tables import User

bearer = HTTPBearer(auto_error=False, description="API token from `dptensor token create --user NAME`")


# The lookups below are coroutines: FastAPI runs a plain function dependency in a worker
# thread, a hop that costs more than the lookup itself.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


async def get_queue(request: Request) -> TaskQueue:
    return request.app.state.queue


async def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def current_user(session: SessionDep, settings: SettingsDep, creds: Credentials) -> User:
    return resolve_user(session, settings, creds)


def resolve_user(session: Session, settings: Settings, creds: HTTPAuthorizationCredentials | None) -> User:
    """The caller: the local user of an auth="none" service (created at its first request),
    else the owner of the bearer token (401 without one)."""
    if settings.auth == "none":
        user = session.scalars(select(User).where(User.name == LOCAL_USER)).one_or_none()
        if user is None or not user.is_admin:  # the first request: no write per request after it
            user = get_or_create_user(session, LOCAL_USER, admin=True)
            session.commit()
        return user
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'",
                           headers={"WWW-Authenticate": "Bearer"})
    found = user_for_token(session, creds.credentials)
    if found is None:
        raise Unauthorized("unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return found


CurrentUser = Annotated[User, Depends(current_user)]
