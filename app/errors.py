"""One exception tree for the api, mapped to HTTP in one place (``install``).

    ApiError                    status  when
    ├── NotFound                404     no such object, or it belongs to someone else
    ├── Unauthorized            401     missing or unknown bearer token
    ├── Forbidden               403     admin-only endpoint (objects of others are 404, not 403)
    ├── Conflict                409     the object is in the wrong state (e.g. in use)
    ├── PayloadTooLarge         413     over an upload / request size limit
    ├── Unprocessable           422     input is invalid; ``problems`` = [(location, message)]
    └── ServiceUnavailable      503     no worker answered, broker down

jobs.queue.BrokerUnavailable (broker or result backend unreachable) becomes a 503 too.

model.errors.DataError / ConfigError / CheckpointError become 422 too, keeping the file
name or JSON path they carry; so does a worker's answer with such an error (jobs.errors.
RemoteError of an input kind), any other worker error is a 503. Every error body has the
same shape::

    {"detail": "one line", "problems": [{"loc": "training.numb_steps", "msg": "..."}]}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.archive import ArchiveError
from jobs.errors import RemoteError
from jobs.queue import BrokerUnavailable
from model.errors import CheckpointError, ConfigError, DataError


class ApiError(Exception):
    status = 500

    def __init__(self, detail: str, problems: list[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problems = problems or []
        self.headers = headers


class NotFound(ApiError):
    status = 404


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class Unprocessable(ApiError):
    status = 422


class ServiceUnavailable(ApiError):
    status = 503


def body(detail: str, problems: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    return {"detail": detail, "problems": [{"loc": loc, "msg": msg} for loc, msg in problems or []]}


def _loc(parts: tuple[Any, ...]) -> str:
    """('body', 'structures', 0, 'positions') -> structures[0].positions"""
    out = ""
    for p in parts:
        if p in ("body", "query", "path"):
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.detail, exc.problems), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        problems = [(p or "(document)", m) for p, m in exc.problems]
        return JSONResponse(body(f"invalid input: {exc}", problems), status_code=422)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        return JSONResponse(body(f"invalid data: {exc}", [(exc.path or "", exc.detail)]), status_code=422)

    @app.exception_handler(CheckpointError)
    async def _ckpt(_: Request, exc: CheckpointError) -> JSONResponse:
        return JSONResponse(body(f"invalid model file: {exc}"), status_code=422)

    @app.exception_handler(RemoteError)
    async def _remote(_: Request, exc: RemoteError) -> JSONResponse:
        if exc.caused_by_input:
            return JSONResponse(body(str(exc), exc.problems), status_code=422)
        return JSONResponse(body(f"the worker failed: {exc}"), status_code=503)

    @app.exception_handler(ArchiveError)
    async def _archive(_: Request, exc: ArchiveError) -> JSONResponse:
        return JSONResponse(body(f"rejected archive: {exc}", [(exc.member or "", str(exc))]), status_code=422)

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        return JSONResponse(body(f"the job queue is unavailable, try again shortly: {exc}"), status_code=503,
                            headers={"Retry-After": "10"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            elif err["type"] == "json_invalid":
                msg = f"malformed JSON: {err.get('ctx', {}).get('error', msg)}"
            problems.append((_loc(tuple(err["loc"])), msg))
        text = "; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in problems[:5])
        return JSONResponse(body(f"invalid request: {text}", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400:  # FastAPI could not decode the body (documented: schemas.ERRORS)
            detail = ("the request body could not be read: JSON must be UTF-8 text, a form must be "
                      "well-formed multipart")
        return JSONResponse(body(detail, [("body", detail)] if exc.status_code == 400 else None),
                            status_code=exc.status_code, headers=exc.headers)
