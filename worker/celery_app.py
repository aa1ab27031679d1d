"""The workers' Celery app: the api's config (jobs.queue) plus worker-side hooks — announce
the worker and heartbeat in the workers table, and turn a shutdown request into a
checkpoint-and-requeue of the running job. The task modules are registered through
Celery's ``include=`` (they define shared tasks and import nothing from here).

Workers run the solo pool: the task runs in the worker's main process (one process per
GPU), so CUDA is initialised after any fork there could be, and SIGKILL of that process
is exactly "the job's worker died" for the heartbeat design.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

from jobs import store
from jobs.db import init_db
from jobs.queue import make_celery
from jobs.settings import Settings
from jobs.tables import WorkerMetrics, WorkerRecord, utcnow
from worker import metrics, state
from worker.quiet import QuietLoop

log = logging.getLogger("dptensor.worker")

TASK_MODULES = ["worker.tasks", "worker.spectrum", "worker.select", "worker.sync_predict"]


def create_celery(settings: Settings) -> Celery:
    celery = make_celery(settings, include=TASK_MODULES)
    # Celery's remote control (inspect, revoke, ping) is not used: cancelling is the job row,
    # liveness the workers table. Off, a worker holds no mailbox queue nor its pub/sub
    # connection, and the SQLite transport (no broadcast) could not carry it anyway.
    celery.conf.worker_enable_remote_control = False
    celery.steps["consumer"].add(QuietLoop)  # an idle worker sleeps (worker/quiet.py)
    return celery


def _beat(st: state.WorkerState, pushed: str) -> None:
    """Every heartbeat_interval_s: the heartbeat, and this worker's metrics when they changed
    since the last push (an idle worker's do not; /metrics lags by at most one beat)."""
    while not st.beat_stop.wait(st.settings.heartbeat_interval_s):
        try:
            text = metrics.exposition()
            with st.sessions() as session:
                store.upsert_worker(session, st.worker_id, heartbeat_at=utcnow())
                if text != pushed:
                    store.save_worker_metrics(session, st.worker_id, text)
                    pushed = text
        except Exception:  # database blip: try again next beat
            log.exception("worker heartbeat failed")


@worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    st = state.current()
    init_db(st.settings.db_url)
    dev, gpu = st.device()
    queues = [q.name for q in sender.app.amqp.queues.consume_from.values()] if sender is not None else []
    st.queues[:] = queues
    with st.sessions() as session:
        store.upsert_worker(session, st.worker_id, queues=queues, device=dev, gpu=gpu, pid=os.getpid(),
                            started_at=utcnow(), heartbeat_at=utcnow())
        pushed = metrics.exposition()
        store.save_worker_metrics(session, st.worker_id, pushed)
    threading.Thread(target=_beat, args=(st, pushed), name="worker-heartbeat", daemon=True).start()
    log.info("worker %s ready: queues %s, device %s%s", st.worker_id, queues, dev, f" ({gpu})" if gpu else "")


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    state.current().shutdown.set()  # read by the running job's should_stop: checkpoint and requeue


@worker_shutdown.connect
def _gone(**_: Any) -> None:
    st = state.current()
    st.beat_stop.set()
    try:
        with st.sessions() as session:
            for table in (WorkerMetrics, WorkerRecord):
                record = session.get(table, st.worker_id)
                if record is not None:
                    session.delete(record)
            session.commit()
    except Exception:
        log.exception("could not unregister worker %s", st.worker_id)
