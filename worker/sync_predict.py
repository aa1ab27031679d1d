"""A predict worker's serving thread for synchronous prediction batches (jobs/rpc.py).

Beside Celery's consumer, in each worker of the ``predict`` queue on a Redis broker: it
blocks in BRPOP on the batch list, runs a batch as the ``dptensor.predict_batch`` task
would (worker.tasks.run_batch) and publishes the answer on the channel the sending api named.
Idle, it wakes once per ``IDLE_WAIT_S`` (a BRPOP that timed out). A stopping worker pushes
a word onto a list of its own that the same BRPOP watches: the wait ends at once, and a
batch popped before it is answered first — none is lost by a clean shutdown. (A killed
worker's batch is: its requests get the api's 503 at their deadline.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import redis
from celery.signals import worker_ready, worker_shutting_down
from redis.exceptions import RedisError

from jobs.rpc import REQUESTS, pack, redis_py_url, unpack
from jobs.settings import Settings
from worker import state
from worker.tasks import run_batch

log = logging.getLogger("dptensor.worker")
IDLE_WAIT_S = 30  # BRPOP's time-out: how often an idle worker wakes up for nothing
STOP_WAIT_S = 10.0  # a stopping worker waits this long for the batch in hand


class SyncServer:
    def __init__(self, settings: Settings) -> None:
        self.client = redis.Redis.from_url(redis_py_url(settings.broker),
                                           socket_connect_timeout=settings.broker_timeout_s,
                                           socket_timeout=IDLE_WAIT_S + settings.broker_timeout_s)
        self.stop_list = f"{REQUESTS}.stop.{uuid.uuid4().hex}"  # this worker's alone
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="sync-predict", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ends the wait for a batch at once; the batch in hand is answered first."""
        self.stopping.set()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(self.stop_list, b"stop")
                pipe.expire(self.stop_list, 60)
                pipe.execute()
        except RedisError:  # the broker is gone: nothing can come from it either
            return
        self.thread.join(STOP_WAIT_S)

    def _serve(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:  # BRPOP takes from the first list that has something: batches before the stop word
                item = self.client.brpop([REQUESTS, self.stop_list], timeout=IDLE_WAIT_S)
            except Exception as exc:  # RedisError mostly; the thread must outlive anything
                if self.stopping.is_set():
                    return
                log.warning("synchronous predictions: broker unreachable (%s); retrying in %.1f s", exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(2 * backoff, 10.0)
                continue
            backoff = 0.5
            if item is None or item[0] != REQUESTS.encode():
                continue
            try:
                self._answer(item[1])
            except Exception:  # a bad message or a broker blip while answering: the next one
                log.exception("synchronous prediction batch failed")

    def _answer(self, data: bytes | str) -> None:
        message = unpack(data)
        if message["deadline"] < time.time():
            log.warning("synchronous prediction batch dropped: its api stopped waiting %.1f s ago",
                        time.time() - message["deadline"])
            return
        reply = run_batch(message["batch"], arrays=True)  # the tensors travel as bytes, not decimal text
        self.client.publish(message["reply_to"], pack({"id": message["id"], "reply": reply}))


_server: SyncServer | None = None


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _server
    st = state.current()
    queues = {q.name for q in sender.app.amqp.queues.consume_from.values()} if sender is not None else set()
    if "predict" in queues and not st.settings.sqlite_broker:
        _server = SyncServer(st.settings)
        _server.start()


@worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _server is not None:
        _server.stop()
