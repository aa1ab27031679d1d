"""Bearer API tokens. Only their SHA-256 is stored; the token is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.tables import Token, User

TOKEN_PREFIX = "dpt_"
LOCAL_USER = "local"  # the user of an auth="none" (loopback-only) service


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_user(session: Session, name: str, *, admin: bool = False) -> User:
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        user = User(name=name, is_admin=admin)
        session.add(user)
        session.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    return user


def create_token(session: Session, user_name: str, *, admin: bool = False, label: str = "") -> str:
    user = get_or_create_user(session, user_name, admin=admin)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(Token(user_id=user.id, token_hash=hash_token(token), label=label))
    session.commit()
    return token


def ensure_first_admin(session: Session) -> str | None:
    """A token for user "admin" when no admin has a token yet (a fresh service), else None:
    the one-command start must leave its user a way in."""
    has_admin = session.scalars(
        select(User.id).join(Token, Token.user_id == User.id).where(User.is_admin.is_(True)).limit(1)
    ).first()
    return None if has_admin is not None else create_token(session, "admin", admin=True, label="first start")


def user_for_token(session: Session, token: str) -> User | None:
    return session.scalars(
        select(User).join(Token, Token.user_id == User.id).where(Token.token_hash == hash_token(token))
    ).one_or_none()
