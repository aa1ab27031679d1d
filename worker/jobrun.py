"""One job delivery, for every job task: claim the row, run the body with a monitor
(heartbeat, cancel flag) and a job log, and record the outcome. Job tasks take only a
job id — the row holds the inputs, so a redelivered or re-sent message is harmless
(store.claim decides)."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Task

from jobs import chunks, layout, store
from jobs.errors import RemoteError, error_payload
from jobs.layout import shown_as_refs
from jobs.tables import Job
from worker import state
from worker.progress import JobMonitor, job_log

log = logging.getLogger("dptensor.worker")


@dataclass
class Outcome:
    status: str  # succeeded | cancelled | interrupted (worker shutting down) | fanned_out (worker/fanout.py)
    result: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None


JobBody = Callable[[Job, Path, JobMonitor, logging.Logger], Outcome]


def run_job(task: Task, job_id: str, body: JobBody, *, resume: bool = False) -> str:
    """``resume``: a fanned-out job's fan-in, which takes the job back from its chunks
    (jobs.chunks.claim_fanin) instead of claiming a queued one."""
    st = state.current()
    settings, worker_id = st.settings, st.worker_id
    if st.shutdown.is_set():  # a stopping worker takes no new work: the janitor sends it again
        with st.sessions() as session:
            store.mark_unsent(session, job_id)
        log.info("job %s: delivery given back (worker stopping)", job_id)
        return "dropped: worker stopping"
    try:
        with st.sessions() as session:
            if resume:
                run, reason = chunks.claim_fanin(session, job_id, worker_id)
                claim = store.Claim(run, reason=reason)
            else:
                claim = store.claim(session, job_id, worker_id, settings.stale_after_s)
            job = session.get(Job, job_id)
    except Exception as exc:  # database unreachable: try the message again later, do not lose it
        raise task.retry(exc=exc, countdown=5, max_retries=None) from None
    if not claim.run or job is None:
        log.info("job %s: delivery dropped (%s)", job_id, claim.reason)
        return f"dropped: {claim.reason}"
    folder = layout.job_dir(settings.root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    with job_log(folder / "job.log") as jlog, JobMonitor(st.sessions, job_id, worker_id, poll_s=settings.cancel_poll_s,
                                                         heartbeat_s=settings.heartbeat_interval_s,
                                                         shutdown=st.shutdown) as monitor:
        dev, gpu = st.device()
        if resume:
            jlog.info("chunks returned: gathering them on worker %s", worker_id)
        else:
            jlog.info("attempt %d/%d on worker %s, device %s%s", claim.attempt, job.max_attempts, worker_id, dev,
                      f" ({gpu})" if gpu else "")
        try:
            outcome = body(job, folder, monitor, jlog)
        except Exception as exc:  # every failure is kept on the job: message, traceback, inputs
            jlog.error("failed: %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc())
            with st.sessions() as session:
                error = exc.error if isinstance(exc, RemoteError) else error_payload(  # a chunk's own error
                    exc, with_traceback=True, shown=lambda text: shown_as_refs(text, settings.root))
                store.finish(session, job_id, worker_id, "failed", error=error)
            return "failed"
        if outcome.status == "fanned_out":  # the chunks have the job now (monitor sees it as lost)
            return outcome.status
        if monitor.lost.is_set():
            jlog.warning("another worker took this job over; this attempt stops here")
            return "lost"
        if outcome.status == "interrupted":
            jlog.warning("worker shutting down: job returned to the queue (resumes from its checkpoint)")
            with st.sessions() as session:  # not re-sent from here: this worker must not take it back
                store.release(session, job_id, worker_id)
            return "interrupted"
        with st.sessions() as session:
            if outcome.model_id is not None:
                store.report_progress(session, job_id, worker_id, model_id=outcome.model_id)
            store.finish(session, job_id, worker_id, outcome.status, result=outcome.result)
        jlog.info("%s", outcome.status)
        return outcome.status
