"""/v1/me and /v1/admin/tokens (token management; also `dptensor token create`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.auth import create_token
from app.deps import CurrentUser, SessionDep
from app.errors import Forbidden
from app.schemas import ERRORS, ErrorBody, TokenCreate, TokenCreated, UserPublic

router = APIRouter(tags=["users"], responses=ERRORS)


@router.get("/me", response_model=UserPublic)
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/admin/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated,
             responses={403: {"model": ErrorBody, "description": "admins only"}})
def new_token(req: TokenCreate, session: SessionDep, user: CurrentUser) -> TokenCreated:
    """Create a token for a user (created if new). The token is shown only in this answer."""
    if not user.is_admin:
        raise Forbidden("only admins can create tokens")
    token = create_token(session, req.user, admin=req.admin, label=req.label)
    return TokenCreated(user=req.user, admin=req.admin, token=token)
