"""Dynamic batching of synchronous predictions, on the api side of the queue.

Concurrent requests for the same model join one *open batch*; the batch is sent as one
message, the predict worker runs all its frames in one forward pass per kind of structure
and answers each request separately (worker/tasks.py), and each request takes its own
answer back. A batch is sent

* at once when no batch of this model is in flight (an idle worker: no added latency —
  a lone request never waits for the window),
* else once it has waited ``predict_batch_wait_ms`` and fewer than
  ``predict_batch_in_flight`` batches of the model are unanswered, or as soon as a batch
  in flight is answered after that (requests keep joining while the worker is busy: the
  busier, the larger the batches),
* at once when it is full (``predict_batch_max_frames`` / ``predict_batch_max_atoms``).

A batch that leaves when a slot frees (window over, or a batch answered) takes at most
half of the requests this process holds for the model — waiting, or answered and not yet
returned to their callers; the rest stay for the next batch. Clients that send again when
answered then split into two halves: one computed by the worker while the api answers the
other and takes its next requests. Without the cap they settle into whatever split the
start gave — 1 and 15 for 16 clients (the first request leaves alone to an idle worker,
the other 15 gather behind it), which leaves the worker idle while the api works through
the 15 and runs half of the batches as single frames.

Everything here runs on the api's event loop: a waiting request is a future, not a
thread, and nothing wakes up unless a request arrives, a window ends or an answer comes
back (idle is idle). Why here and not in the worker: a worker handed one message at a
time cannot see the requests queued behind the one it runs, and grouping before the
broker divides the broker round trips — most of a small request's cost — by the batch
size. The price: requests coalesce within one api process, not across replicas.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from app.timing import BatchTiming
from jobs.queue import PREDICT_BATCH_TASK, TaskQueue
from jobs.settings import Settings

# sends one batch {"model_id", "requests", "sent_at"} and waits for {"answers": [...]}
Sender = Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]]


Answer = tuple[dict[str, Any], BatchTiming]  # a request's envelope and its batch's clock readings


@dataclass
class Batch:
    requests: list[dict[str, Any]] = field(default_factory=list)  # {"structures", "derivatives"}
    answers: list[asyncio.Future[Answer]] = field(default_factory=list)  # one per request
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (frames, atoms) per request
    frames: int = 0
    atoms: int = 0
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False
    timing: BatchTiming = field(default_factory=BatchTiming)

    def add(self, request: dict[str, Any], frames: int, atoms: int) -> asyncio.Future[Answer]:
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        answer.add_done_callback(_retrieved)
        self.requests.append(request)
        self.answers.append(answer)
        self.sizes.append((frames, atoms))
        self.frames += frames
        self.atoms += atoms
        return answer

    def split(self, keep: int) -> Batch:
        """The requests after the first ``keep``, moved to a new batch (opened when this one was)."""
        rest = Batch(opened=self.opened)
        for request, answer, size in zip(self.requests[keep:], self.answers[keep:], self.sizes[keep:], strict=True):
            rest.requests.append(request)
            rest.answers.append(answer)
            rest.sizes.append(size)
            rest.frames += size[0]
            rest.atoms += size[1]
        del self.requests[keep:], self.answers[keep:], self.sizes[keep:]
        self.frames -= rest.frames
        self.atoms -= rest.atoms
        return rest


class Batcher:
    def __init__(self, send: Sender, settings: Settings) -> None:
        self.send = send
        self.enabled = settings.predict_batching
        self.wait_s = settings.predict_batch_wait_ms / 1000
        self.max_frames = settings.predict_batch_max_frames
        self.max_atoms = settings.predict_batch_max_atoms
        self.max_in_flight = settings.predict_batch_in_flight
        self._open: dict[str, Batch] = {}
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._held: defaultdict[str, int] = defaultdict(int)  # requests in predict(), per model
        self._tasks: set[asyncio.Task[None]] = set()  # batches being sent (a task needs a reference)

    async def predict(self, model_id: str, request: dict[str, Any], frames: int, atoms: int,
                      timeout_s: float) -> tuple[dict[str, Any], BatchTiming]:
        """This request's answer envelope from the worker (jobs.errors.answer: its result or
        its own error, never a batch-mate's) and its batch's clock readings.
        ``request``: {"structures", "derivatives"}."""
        self._held[model_id] += 1
        try:
            answer = self._join(model_id, request, frames, atoms, timeout_s)
            return await asyncio.shield(answer)  # a client gone does not cancel its batch-mates
        finally:
            self._held[model_id] -= 1
            if not self._held[model_id]:
                del self._held[model_id]

    def _join(self, model_id: str, request: dict[str, Any], frames: int, atoms: int,
              timeout_s: float) -> asyncio.Future[Answer]:
        batch = self._open.get(model_id)
        if batch is not None and (batch.frames + frames > self.max_frames or batch.atoms + atoms > self.max_atoms):
            self._dispatch(model_id, batch, timeout_s)  # no room: it leaves now, this one opens the next
            batch = None
        if batch is None:
            batch = self._open[model_id] = Batch()
            self._window(model_id, batch, timeout_s)
        answer = batch.add(request, frames, atoms)
        if (not self.enabled or not self._in_flight[model_id] or batch.frames >= self.max_frames
                or batch.atoms >= self.max_atoms):
            self._dispatch(model_id, batch, timeout_s)
        return answer

    def _window(self, model_id: str, batch: Batch, timeout_s: float) -> None:
        if self.enabled and self._in_flight[model_id] and self.wait_s > 0:
            asyncio.get_running_loop().call_later(self.wait_s, self._window_ended, model_id, batch, timeout_s)

    def _window_ended(self, model_id: str, batch: Batch, timeout_s: float) -> None:
        if not batch.closed and self._in_flight[model_id] < self.max_in_flight:
            self._dispatch(model_id, batch, timeout_s, half=True)
        # else it leaves when a batch in flight is answered (_sent)

    def _dispatch(self, model_id: str, batch: Batch, timeout_s: float, *, half: bool = False) -> None:
        """``half``: it leaves because a slot is free; it takes at most half of the requests
        held (the module's docstring) and the rest stay open."""
        keep = max(1, -(-self._held[model_id] // 2))  # ≥ 1: requests whose callers left are still sent
        rest = batch.split(keep) if half and len(batch.requests) > keep else None
        if self._open.get(model_id) is batch:
            del self._open[model_id]
        batch.closed = True
        self._in_flight[model_id] += 1
        if rest is not None:
            self._open[model_id] = rest
            self._window(model_id, rest, timeout_s)
        task = asyncio.get_running_loop().create_task(self._sent(model_id, batch, timeout_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sent(self, model_id: str, batch: Batch, timeout_s: float) -> None:
        try:
            batch.timing.sent = time.time()
            payload = {"model_id": model_id, "requests": batch.requests, "sent_at": batch.timing.sent}
            reply = await self.send(payload, timeout_s)
            batch.timing.answered, batch.timing.worker = time.time(), reply.get("timing") or {}
            answers = reply["answers"]
            if len(answers) != len(batch.requests):
                raise RuntimeError(f"the worker answered {len(answers)} of {len(batch.requests)} requests")
            for future, envelope in zip(batch.answers, answers, strict=True):
                future.set_result((envelope, batch.timing))
        except Exception as exc:  # the batch never ran (timeout, broker): every request gets it
            for future in batch.answers:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._in_flight[model_id] -= 1
            if not self._in_flight[model_id]:
                del self._in_flight[model_id]
            waiting = self._open.get(model_id)
            if waiting is not None:
                left = self.wait_s - (time.monotonic() - waiting.opened)
                if left <= 0:
                    self._dispatch(model_id, waiting, timeout_s, half=True)  # its window is over: the slot is its
                else:  # its timer may have fired already (timers and this clock differ by up to a loop turn)
                    asyncio.get_running_loop().call_later(left, self._window_ended, model_id, waiting, timeout_s)


def celery_sender(queue: TaskQueue) -> Sender:
    """A batch as one ``dptensor.predict_batch`` Celery task; the blocking call takes a
    worker thread per batch in flight (not per request)."""

    async def send(payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        return await run_in_threadpool(queue.call, PREDICT_BATCH_TASK, payload, timeout_s)

    return send


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Every request of a failed batch may have gone (clients disconnected): its error is
    then nobody's, and asyncio would log it as never retrieved."""
    if not future.cancelled():
        future.exception()
