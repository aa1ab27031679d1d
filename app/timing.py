"""Where a synchronous prediction's time went, as a ``Server-Timing`` response header
(docs/service.md): a few clock readings per request, so it is always on.

    parse    request in → the route runs (body read, JSON decode, validation, dependencies)
    check    the caller, the model and the structures checked (one worker thread)
    batch    waiting for batch-mates (0 for a lone request: it leaves at once)
    queue    the batch sent → a worker takes it (broker push, the worker's pick-up)
    model    the forward pass(es) of the batch
    worker   the rest of the worker's time on the batch (decode, split, answer)
    return   the worker done → the api has the answer (result store, notify, decode)
    respond  the answer → the response starts (build, JSON encode)
    app      request in → response start (their sum)

queue, worker and return compare the api's and the worker's wall clocks (the same on one
host). bench/load_predict.py prints their means for one client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Scope

START_KEY = "dptensor.start"  # perf_counter() when the request came in (app.metrics.HttpMetrics)
SPANS_KEY = "dptensor.spans"  # the request's Spans, read when the response starts


@dataclass
class BatchTiming:
    """One batch's clock readings, shared by its requests (app/batching.py)."""

    sent: float = 0.0  # time.time() when the batch left the batcher
    answered: float = 0.0  # time.time() when its answer was back
    worker: dict[str, Any] = field(default_factory=dict)  # {"picked", "model_s", "done"} from the worker


class Spans:
    def __init__(self, scope: Scope) -> None:
        self.start = scope.get(START_KEY) or time.perf_counter()
        self.last = self.start
        self.items: list[tuple[str, float]] = []
        scope[SPANS_KEY] = self
        self.mark("parse")

    def mark(self, name: str) -> None:
        """The span ``name`` ends now (it began where the last one ended)."""
        now = time.perf_counter()
        self.items.append((name, now - self.last))
        self.last = now

    def batch(self, t: BatchTiming) -> None:
        """The batch's spans: the wall-clock readings of api and worker, mapped onto this
        request's clock by the time since the batch left."""
        now_wall, now = time.time(), time.perf_counter()
        sent = now - (now_wall - t.sent)
        self.items.append(("batch", max(0.0, sent - self.last)))
        w = t.worker
        if {"picked", "model_s", "done"} <= w.keys():
            self.items += [("queue", max(0.0, w["picked"] - t.sent)), ("model", w["model_s"]),
                           ("worker", max(0.0, w["done"] - w["picked"] - w["model_s"])),
                           ("return", max(0.0, t.answered - w["done"]))]
        else:
            self.items.append(("worker", max(0.0, t.answered - t.sent)))
        self.last = now - (now_wall - t.answered)

    def header(self) -> bytes:
        now = time.perf_counter()
        items = [*self.items, ("respond", now - self.last), ("app", now - self.start)]
        return ", ".join(f"{name};dur={1e3 * s:.3f}" for name, s in items).encode()
