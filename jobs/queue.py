"""The only place the api talks to Celery: tasks are sent **by name**, so the api never
imports the worker (nor torch). The workers build their Celery app from the same config.

Queues: ``train`` (hours, GPU), ``predict`` (sub-second synchronous calls: predictions and
checkpoint inspection) and ``batch`` (minutes: prediction jobs and spectra). Short calls
never wait behind a long job because each queue is consumed by its own worker process.
"""

from __future__ import annotations

import time
from typing import Any

import kombu.transport.sqlalchemy as kombu_sqla
from celery import Celery
from kombu import Queue
from kombu.transport import TRANSPORT_ALIASES
from sqlalchemy import Engine, create_engine, event

from jobs.db import sqlite_pragmas
from jobs.settings import Settings

QUEUES = ("train", "predict", "batch")
# job kind -> (task name, queue)
JOB_TASKS: dict[str, tuple[str, str]] = {
    "train": ("dptensor.train", "train"),
    "predict": ("dptensor.predict_job", "batch"),
    "spectrum": ("dptensor.spectrum", "batch"),
}
PREDICT_TASK = "dptensor.predict"
INSPECT_TASK = "dptensor.inspect_model"


class TaskTimeout(Exception):
    """No worker answered a synchronous call in time."""


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
    if not settings.embedded_broker:
        conf["broker_transport_options"] = {"visibility_timeout": settings.visibility_timeout_s}
        conf["result_backend_transport_options"] = {"retry_policy": {"timeout": 5.0}}
    return conf


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

    def enqueue_job(self, job_id: str, kind: str) -> str:
        name, queue = JOB_TASKS[kind]
        return str(self.celery.send_task(name, args=[job_id], queue=queue, ignore_result=True).id)

    def call(self, name: str, payload: dict[str, Any], timeout_s: float) -> Any:
        """Send a task to the ``predict`` queue and wait for its return value. Polls the
        result backend (thread-safe, unlike the shared pub/sub consumer of AsyncResult.get)."""
        result = self.celery.send_task(name, args=[payload], queue="predict", expires=timeout_s)
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        try:
            while True:
                meta = self.celery.backend.get_task_meta(result.id, cache=False)
                if meta["status"] == "SUCCESS":
                    return meta["result"]
                if meta["status"] in ("FAILURE", "REVOKED"):
                    raise RuntimeError(f"task {name} failed in the worker: {meta.get('result')!r}")
                if time.monotonic() > deadline:
                    raise TaskTimeout(f"no worker of the 'predict' queue answered within {timeout_s:g} s")
                time.sleep(delay)
                delay = min(delay * 1.5, 0.05)
        finally:
            result.forget()

    def ping_broker(self, timeout_s: float = 2.0) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
