"""The only place the api talks to Celery: tasks are sent **by name**, so the api never
imports the worker (nor torch). The workers build their Celery app from the same config.

Queues: ``train`` (hours, GPU), ``predict`` (sub-second synchronous calls: predictions and
checkpoint inspection) and ``batch`` (minutes: prediction jobs and spectra). Short calls
never wait behind a long job because each queue is consumed by its own worker process.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import kombu.transport.sqlalchemy as kombu_sqla
from celery import Celery
from kombu import Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.transport import TRANSPORT_ALIASES
from redis.exceptions import RedisError
from sqlalchemy import Engine, create_engine, event

from jobs.db import sqlite_pragmas
from jobs.errors import unwrap
from jobs.results import FALLBACK_S, ResultNotifier
from jobs.settings import Settings

QUEUES = ("train", "predict", "batch")
# job kind -> (task name, queue)
JOB_TASKS: dict[str, tuple[str, str]] = {
    "train": ("dptensor.train", "train"),
    "predict": ("dptensor.predict_job", "batch"),
    "spectrum": ("dptensor.spectrum", "batch"),
    "select": ("dptensor.select", "batch"),
}
PREDICT_BATCH_TASK = "dptensor.predict_batch"  # coalesced synchronous predictions (app/batching.py)
INSPECT_TASK = "dptensor.inspect_model"
EXPORT_TASK = "dptensor.export_model"  # a model as DeePMD-kit's serialized model (.dp / .yaml)
# a fanned-out job (worker/fanout.py): its chunks, and the chord's callback that combines them
CHUNK_TASK = "dptensor.chunk"
FANIN_TASK = "dptensor.fanin"


class TaskTimeout(Exception):
    """No worker answered a synchronous call in time."""


class BrokerUnavailable(Exception):
    """The broker (or the result backend) cannot be reached within the broker timeout."""


# what an unreachable Redis / SQLite broker raises through kombu, redis-py and the socket layer
BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuOperationalError, RedisError, OSError)


class EmbeddedChannel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel with WAL + busy timeout: api and workers share the file."""

    def _engine_from_config(self) -> Engine:
        engine = create_engine(self.connection.client.hostname, connect_args={"timeout": 30})
        event.listen(engine, "connect", sqlite_pragmas)
        return engine


class EmbeddedTransport(kombu_sqla.Transport):
    """The embedded broker (no server): messages in ``<data_dir>/broker.sqlite``.
    kombu hands every transport option to create_engine, so the polling interval (1 s by
    default, too slow for synchronous predictions) is set on this class instead."""

    Channel = EmbeddedChannel
    polling_interval = 0.05


TRANSPORT_ALIASES["dptensor-sqla"] = "jobs.queue:EmbeddedTransport"


def celery_config(settings: Settings) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "broker_url": settings.broker,
        "result_backend": settings.results,
        "task_queues": [Queue(q, routing_key=q) for q in QUEUES],
        "task_default_queue": "predict",
        # a message is acknowledged only after its task returns; a worker killed mid-task
        # leaves it unacknowledged (redelivered), and the job row decides whether to run it
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 3600,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
    }
    conf["broker_connection_timeout"] = settings.broker_timeout_s
    if not settings.sqlite_broker:
        # Idle is idle: each of these wakes an idle worker. BRPOP returns as soon as a message
        # arrives; its time-out (polling_interval) sets how often it is sent again (kombu's
        # default: every second) and how long a stopping worker waits for its reply (a popped
        # message must not be lost): 10 s. Unacknowledged messages are redelivered after
        # visibility_timeout; looking for them once a minute delays that by a minute at most.
        # Re-authentication is for streaming credential providers, which are not used here.
        conf["broker_transport_options"] = {"visibility_timeout": settings.visibility_timeout_s,
                                            "socket_connect_timeout": settings.broker_timeout_s,
                                            "polling_interval": 10,
                                            "unacked_restore_interval": min(60, settings.visibility_timeout_s),
                                            "reauth_check_interval": 300}
        conf["redis_socket_connect_timeout"] = settings.broker_timeout_s
        conf["result_backend_transport_options"] = {"retry_policy": {"timeout": settings.broker_timeout_s}}
    return conf


def broker_kind(settings: Settings) -> str:
    """In words, for people: /v1/health/ready and the serve banner."""
    if settings.embedded_broker:
        return "embedded (Redis on a unix socket, started by dptensor serve)"
    return "embedded (SQLite)" if settings.sqlite_broker else "redis"


def make_celery(settings: Settings, include: list[str] | None = None) -> Celery:
    """The Celery app of both sides; the workers pass their task modules as ``include``."""
    EmbeddedTransport.polling_interval = settings.embedded_poll_s
    celery = Celery("dptensor", include=include)
    celery.conf.update(celery_config(settings))
    return celery


class TaskQueue:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery = make_celery(settings)
        # the Redis result backend notifies (jobs/results.py); the embedded one (SQLite) is read in a loop
        self.notifier = ResultNotifier(self.celery) if settings.results.startswith(("redis", "rediss")) else None

    def _send(self, name: str, args: list[Any], queue: str, **options: Any) -> Any:
        """send_task with a bounded wait: an unreachable broker is a BrokerUnavailable
        after ``broker_timeout_s``, not kombu's retries for many seconds."""
        timeout = self.settings.broker_timeout_s
        policy = {"max_retries": 2, "interval_start": 0, "interval_step": timeout / 4, "interval_max": timeout / 4}
        try:
            return self.celery.send_task(name, args=args, queue=queue, retry=True, retry_policy=policy, **options)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"the broker is unreachable ({type(exc).__name__}: {exc})") from None
        except RuntimeError as exc:  # Celery's Redis result consumer gives up with a RuntimeError
            if isinstance(exc.__cause__, BROKER_ERRORS):
                cause = exc.__cause__
                raise BrokerUnavailable(f"the result backend is unreachable ({type(cause).__name__}: {cause})"
                                        ) from None
            raise

    def enqueue_job(self, job_id: str, kind: str) -> str:
        name, queue = JOB_TASKS[kind]
        return str(self._send(name, [job_id], queue, ignore_result=True).id)

    def resend(self, message: dict[str, Any]) -> None:
        """Send a chunk's message again as its worker received it (jobs.chunks: the same task
        id and chord membership, so the chord completes when it does)."""
        self._send(message["task"], message["args"], message["queue"], **message["options"])

    def send_fanin(self, job_id: str) -> None:
        self._send(FANIN_TASK, [job_id], "batch", ignore_result=True)

    def call(self, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send a task to the ``predict`` queue and wait for its answer (jobs.errors.answer):
        the result, or RemoteError with the worker's typed error. Woken by the Redis result
        backend's notification, else reading the backend with a 1 → 10 ms backoff."""
        task_id = str(uuid.uuid4())
        event = self.notifier.register(task_id) if self.notifier is not None else None
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        try:
            self._send(name, [payload], "predict", expires=timeout_s, task_id=task_id)
            while True:
                try:
                    meta = self.celery.backend.get_task_meta(task_id, cache=False)
                except BROKER_ERRORS as exc:
                    raise BrokerUnavailable(f"the result backend is unreachable ({type(exc).__name__}: {exc})"
                                            ) from None
                if meta["status"] == "SUCCESS":
                    return unwrap(meta["result"])
                if meta["status"] in ("FAILURE", "REVOKED"):
                    raise RuntimeError(f"task {name} failed in the worker: {meta.get('result')!r}")
                left = deadline - time.monotonic()
                if left < 0:
                    raise TaskTimeout(f"no worker of the 'predict' queue answered within {timeout_s:g} s")
                if event is not None:
                    event.wait(min(left, FALLBACK_S))
                    event.clear()  # the result was stored before its notification: the next read sees it
                else:
                    time.sleep(min(left, delay))
                    delay = min(delay * 1.5, 0.01)
        finally:
            if self.notifier is not None:
                self.notifier.unregister(task_id)
            with contextlib.suppress(*BROKER_ERRORS):  # the backend went away: its entry expires by itself
                self.celery.backend.forget(task_id)

    def ping_broker(self, timeout_s: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
