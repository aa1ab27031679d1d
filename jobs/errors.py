"""The one error payload that crosses the queue: a worker turns an exception into it (for
the job row, or as the answer to a synchronous call) and the api turns it back into an
exception mapped to HTTP in one place (app/errors.py). Typed by ``kind``, never by
matching class names as strings::

    {"kind": "config" | "data" | "checkpoint"   the user's input: 422 on a synchronous call
             | "internal"                         a worker bug or crash
             | "worker_lost",
     "type": "ConfigError",                       the exception class, for people
     "message": "one line",
     "problems": [{"loc": "training.numb_steps", "msg": "..."}],   JSON path / file + message
     "traceback": "..." | None}                   job rows only
"""

from __future__ import annotations

import logging
import traceback as tb
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from model.errors import CheckpointError, ConfigError, DataError

ErrorKind = Literal["config", "data", "checkpoint", "internal", "worker_lost"]
USER_KINDS: frozenset[str] = frozenset({"config", "data", "checkpoint"})  # caused by the input


class ProblemPayload(TypedDict):
    loc: str
    msg: str


class ErrorPayload(TypedDict):
    kind: ErrorKind
    type: str
    message: str
    problems: list[ProblemPayload]
    traceback: str | None


def payload(kind: ErrorKind, type_: str, message: str, problems: list[tuple[str, str]] | None = None,
            traceback: str | None = None) -> ErrorPayload:
    return {"kind": kind, "type": type_, "message": message,
            "problems": [{"loc": loc, "msg": msg} for loc, msg in problems or []], "traceback": traceback}


def error_payload(exc: BaseException, *, with_traceback: bool = False,
                  shown: Callable[[str], str] = lambda text: text) -> ErrorPayload:
    """The payload of an exception; ``shown`` rewrites server paths as the user knows them."""
    kind: ErrorKind = "internal"
    problems: list[tuple[str, str]] = []
    if isinstance(exc, ConfigError):
        kind, problems = "config", [(shown(loc), shown(msg)) for loc, msg in exc.problems]
    elif isinstance(exc, DataError):
        kind, problems = "data", [(shown(exc.path or ""), shown(exc.detail))]
    elif isinstance(exc, CheckpointError):
        kind = "checkpoint"
    trace = None
    if with_traceback:  # the last frames (header kept)
        lines = tb.format_exception(type(exc), exc, exc.__traceback__)
        short = lines if len(lines) <= 7 else [lines[0], "  ...\n", *lines[-6:]]
        trace = shown("".join(short))[-4000:]
    return payload(kind, type(exc).__name__, shown(str(exc)), problems, trace)


class RemoteError(Exception):
    """A synchronous task answered with an error payload (raised on the api side)."""

    def __init__(self, error: ErrorPayload) -> None:
        super().__init__(f"{error['type']}: {error['message']}")
        self.error = error

    @property
    def caused_by_input(self) -> bool:
        return self.error["kind"] in USER_KINDS

    @property
    def problems(self) -> list[tuple[str, str]]:
        return [(p["loc"], p["msg"]) for p in self.error["problems"]]


def answer(fn: Callable[[], dict[str, Any]], log: logging.Logger) -> dict[str, Any]:
    """The envelope of a synchronous task's answer: ``{"ok": True, ...}`` or
    ``{"ok": False, "error": <ErrorPayload>}``; an internal error is also logged."""
    try:
        return {"ok": True, **fn()}
    except Exception as exc:
        error = error_payload(exc)
        if error["kind"] not in USER_KINDS:
            log.exception("synchronous task failed")
        return {"ok": False, "error": error}


def unwrap(envelope: dict[str, Any]) -> dict[str, Any]:
    """The api side of ``answer``: the result, or RemoteError."""
    if not envelope.get("ok"):
        raise RemoteError(envelope["error"])
    return envelope
