"""One job delivery, for every job task: claim the row, run the body with a monitor
(heartbeat, cancel flag) and a job log, and record the outcome. Job tasks take only a
job id — the row holds the inputs, so a redelivered or re-sent message is harmless
(store.claim decides)."""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Task

from jobs import store
from jobs.datasets import FILES
from jobs.queue import JOB_TASKS
from jobs.tables import Job
from worker import state
from worker.progress import JobMonitor, job_log

log = logging.getLogger("dptensor.worker")


@dataclass
class Outcome:
    status: str  # succeeded | cancelled | interrupted (worker shutting down)
    result: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None


JobBody = Callable[[Job, Path, JobMonitor, logging.Logger], Outcome]


def _for_user(text: str, root: Path) -> str:
    """Server paths of dataset files back to the references the user wrote."""
    return re.sub(re.escape(str(root / "datasets")) + r"/([A-Za-z0-9_-]+)/" + FILES + r"/?",
                  r"dataset:\1/", text)


def _error(exc: BaseException, root: Path) -> dict[str, Any]:
    """Type, message and the last frames of the traceback (header kept) for the job row."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    short = tb if len(tb) <= 7 else [tb[0], "  ...\n", *tb[-6:]]
    return {"type": type(exc).__name__, "message": _for_user(str(exc), root),
            "traceback": _for_user("".join(short), root)[-4000:]}


def run_job(task: Task, job_id: str, body: JobBody) -> str:
    st = state.current()
    settings, worker_id = st.settings, st.worker_id
    try:
        with st.sessions() as session:
            claim = store.claim(session, job_id, worker_id, settings.stale_after_s)
            job = session.get(Job, job_id)
    except Exception as exc:  # database unreachable: try the message again later, do not lose it
        raise task.retry(exc=exc, countdown=5, max_retries=None) from None
    if not claim.run or job is None:
        log.info("job %s: delivery dropped (%s)", job_id, claim.reason)
        return f"dropped: {claim.reason}"
    folder = store.job_dir(settings.root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    with job_log(folder / "job.log") as jlog, JobMonitor(st.sessions, job_id, worker_id, poll_s=settings.cancel_poll_s,
                                                         heartbeat_s=settings.heartbeat_interval_s,
                                                         shutdown=st.shutdown) as monitor:
        dev, gpu = st.device()
        jlog.info("attempt %d/%d on worker %s, device %s%s", claim.attempt, job.max_attempts, worker_id, dev,
                  f" ({gpu})" if gpu else "")
        try:
            outcome = body(job, folder, monitor, jlog)
        except Exception as exc:  # every failure is kept on the job: message, traceback, inputs
            jlog.error("failed: %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc())
            with st.sessions() as session:
                store.finish(session, job_id, worker_id, "failed", error=_error(exc, settings.root))
            return "failed"
        if monitor.lost.is_set():
            jlog.warning("another worker took this job over; this attempt stops here")
            return "lost"
        if outcome.status == "interrupted":
            jlog.warning("worker shutting down: job returned to the queue (resumes from its checkpoint)")
            with st.sessions() as session:
                released = store.release(session, job_id, worker_id)
            if released:
                name, queue = JOB_TASKS[job.kind]
                task.app.send_task(name, args=[job_id], queue=queue, ignore_result=True)
            return "interrupted"
        with st.sessions() as session:
            if outcome.model_id is not None:
                store.report_progress(session, job_id, worker_id, model_id=outcome.model_id)
            store.finish(session, job_id, worker_id, outcome.status, result=outcome.result)
        jlog.info("%s", outcome.status)
        return outcome.status
