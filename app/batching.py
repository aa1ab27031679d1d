"""Dynamic batching of synchronous predictions, on the api side of the queue.

Concurrent requests for the same model join one *open batch*; the batch is sent as one
``dptensor.predict_batch`` task, the predict worker runs all its frames in one forward
pass per kind of structure and answers each request separately (worker/tasks.py), and
each request thread takes its own answer back. A batch is sent

* at once when no batch of this model is in flight (an idle worker: no added latency),
* else once it has waited ``predict_batch_wait_ms`` and fewer than
  ``predict_batch_in_flight`` batches of the model are unanswered (requests keep joining
  while the worker is busy: the busier, the larger the batches),
* at once when it is full (``predict_batch_max_frames`` / ``predict_batch_max_atoms``).

Why here and not in the worker: Celery's solo pool with ``prefetch_multiplier=1`` and
late acks hands a worker one message at a time, so a worker cannot see the requests
queued behind the one it runs without raising prefetch (messages held by one busy worker,
invisible to the others) or bypassing Celery's consumer. Grouping before the broker also
divides the broker and result-backend round trips — most of a small request's cost — by
the batch size. The price: requests coalesce within one api process, not across replicas.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from jobs.queue import PREDICT_BATCH_TASK, TaskQueue, TaskTimeout
from jobs.settings import Settings


@dataclass
class Batch:
    requests: list[dict[str, Any]] = field(default_factory=list)  # {"structures", "derivatives"}
    frames: int = 0
    atoms: int = 0
    closed: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    answers: list[dict[str, Any]] | None = None
    error: Exception | None = None

    def add(self, request: dict[str, Any], frames: int, atoms: int) -> int:
        self.requests.append(request)
        self.frames += frames
        self.atoms += atoms
        return len(self.requests) - 1


class Batcher:
    def __init__(self, queue: TaskQueue, settings: Settings) -> None:
        self.queue = queue
        self.enabled = settings.predict_batching
        self.wait_s = settings.predict_batch_wait_ms / 1000
        self.max_frames = settings.predict_batch_max_frames
        self.max_atoms = settings.predict_batch_max_atoms
        self.max_in_flight = settings.predict_batch_in_flight
        self._cond = threading.Condition()
        self._open: dict[str, Batch] = {}
        self._in_flight: defaultdict[str, int] = defaultdict(int)

    def predict(self, model_id: str, request: dict[str, Any], frames: int, atoms: int,
                timeout_s: float) -> dict[str, Any]:
        """This request's answer envelope from the worker (jobs.errors.answer: its result or
        its own error, never a batch-mate's). ``request``: {"structures", "derivatives"}."""
        with self._cond:
            batch = self._open.get(model_id)
            if batch is not None and (batch.frames + frames > self.max_frames
                                      or batch.atoms + atoms > self.max_atoms):
                self._close(model_id, batch)  # no room: its leader sends it now
                batch = None
            leader = batch is None
            if batch is None:
                batch = self._open[model_id] = Batch()
            index = batch.add(request, frames, atoms)
            if not self.enabled or batch.frames >= self.max_frames or batch.atoms >= self.max_atoms:
                self._close(model_id, batch)
        if leader:
            self._send(model_id, batch, timeout_s)
        elif not batch.done.wait(2 * timeout_s + 5.0):  # the leader's wait, then its call
            raise TaskTimeout(f"no worker of the 'predict' queue answered within {timeout_s:g} s")
        if batch.error is not None:
            raise batch.error
        assert batch.answers is not None
        return batch.answers[index]

    def _close(self, model_id: str, batch: Batch) -> None:
        batch.closed = True
        if self._open.get(model_id) is batch:
            del self._open[model_id]
        self._cond.notify_all()

    def _send(self, model_id: str, batch: Batch, timeout_s: float) -> None:
        with self._cond:
            opened = time.monotonic()
            while not batch.closed:
                waited = time.monotonic() - opened
                busy = self._in_flight[model_id]
                if busy == 0 or (waited >= self.wait_s and busy < self.max_in_flight) or waited > timeout_s:
                    self._close(model_id, batch)
                    break
                # woken by a batch-mate filling it or by an answered batch of this model
                self._cond.wait(self.wait_s - waited if waited < self.wait_s else timeout_s)
            self._in_flight[model_id] += 1
        try:
            payload = {"model_id": model_id, "requests": batch.requests, "sent_at": time.time()}
            answers = self.queue.call(PREDICT_BATCH_TASK, payload, timeout_s)["answers"]
            if len(answers) != len(batch.requests):
                raise RuntimeError(f"the worker answered {len(answers)} of {len(batch.requests)} requests")
            batch.answers = answers
        except Exception as exc:  # the batch never ran (timeout, broker): every request gets it
            batch.error = exc
        finally:
            with self._cond:
                self._in_flight[model_id] -= 1
                if not self._in_flight[model_id]:
                    del self._in_flight[model_id]
                self._cond.notify_all()
            batch.done.set()
