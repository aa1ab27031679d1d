"""The workers' Celery app: the api's config (jobs.queue) plus worker-side hooks — announce
the worker and heartbeat in the workers table, and turn a shutdown request into a
checkpoint-and-requeue of the running job.

Workers run the solo pool: the task runs in the worker's main process (one process per
GPU), so CUDA is initialised after any fork there could be, and SIGKILL of that process
is exactly "the job's worker died" for the heartbeat design.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down
from sqlalchemy.orm import Session, sessionmaker

from jobs import store
from jobs.db import init_db, session_factory
from jobs.queue import make_celery
from jobs.settings import Settings, get_settings
from jobs.tables import WorkerRecord, utcnow
from worker.progress import SHUTDOWN

log = logging.getLogger("dptensor.worker")

SETTINGS: Settings = get_settings()
celery: Celery = make_celery(SETTINGS)
if SETTINGS.embedded_broker:
    # the SQLite transport has no broadcast: remote control and events cannot work on it
    celery.conf.worker_enable_remote_control = False
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
QUEUES: list[str] = []
_beat_stop = threading.Event()


@lru_cache(maxsize=1)
def sessions() -> sessionmaker[Session]:
    return session_factory(SETTINGS.db_url)


@lru_cache(maxsize=1)
def device() -> tuple[str, str | None]:
    """(torch device, GPU name or None). Called inside the worker process only."""
    import torch

    name = SETTINGS.worker_device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(torch.device(name)) if name.startswith("cuda") else None
    return name, gpu


def _beat() -> None:
    while not _beat_stop.wait(SETTINGS.heartbeat_interval_s):
        try:
            with sessions()() as session:
                store.upsert_worker(session, WORKER_ID, heartbeat_at=utcnow())
        except Exception:  # database blip: try again next beat
            log.exception("worker heartbeat failed")


@worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    init_db(SETTINGS.db_url)
    dev, gpu = device()
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender is not None else []
    QUEUES[:] = queues
    with sessions()() as session:
        store.upsert_worker(session, WORKER_ID, queues=queues, device=dev, gpu=gpu, pid=os.getpid(),
                            started_at=utcnow(), heartbeat_at=utcnow())
    threading.Thread(target=_beat, name="worker-heartbeat", daemon=True).start()
    log.info("worker %s ready: queues %s, device %s%s", WORKER_ID, queues, dev, f" ({gpu})" if gpu else "")


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    SHUTDOWN.set()  # read by the running job's should_stop: checkpoint and requeue


@worker_shutdown.connect
def _gone(**_: Any) -> None:
    _beat_stop.set()
    try:
        with sessions()() as session:
            record = session.get(WorkerRecord, WORKER_ID)
            if record is not None:
                session.delete(record)
                session.commit()
    except Exception:
        log.exception("could not unregister worker %s", WORKER_ID)


import worker.spectrum  # noqa: E402  (the spectrum task)
import worker.tasks  # noqa: E402,F401  (registers the tasks on `celery`)
