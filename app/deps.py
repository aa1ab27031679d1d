"""Annotated dependencies: ``SessionDep``, ``SettingsDep``, ``QueueDep``, ``BatcherDep``, ``CurrentUser``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from app.auth import LOCAL_USER, get_or_create_user, user_for_token
from app.batching import Batcher
from app.errors import Unauthorized
from jobs.queue import TaskQueue
from jobs.settings import Settings
from jobs.tables import User

bearer = HTTPBearer(auto_error=False, description="API token from `dptensor token create --user NAME`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessions
    with factory() as session:
        yield session


def get_queue(request: Request) -> TaskQueue:
    return request.app.state.queue


def get_batcher(request: Request) -> Batcher:
    return request.app.state.batcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
QueueDep = Annotated[TaskQueue, Depends(get_queue)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]


def current_user(session: SessionDep, settings: SettingsDep,
                 creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
    if settings.auth == "none":
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
