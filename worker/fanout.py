"""Fan-out of a batch job over the worker pool with Celery's canvas: the job's task plans
chunks (one per trajectory of a spectrum, a range of frames of a prediction), hands the
job to them and sends a chord — ``dptensor.chunk`` per chunk, ``dptensor.fanin`` as its
callback (and errback). Every idle batch worker takes chunks; the fan-in combines their
results in chunk order. No scheduler of our own: the broker distributes, the chord joins.

- Results: each chunk writes its results into the job folder and then marks its row done
  (jobs/chunks.py); a chunk delivered again (duplicate, re-send, re-planned job) that is
  done returns at once, so nothing is computed twice.
- Failure: an internal error retries the chunk alone (Celery retry, DPTENSOR_CHUNK_RETRIES);
  a user error (bad frame) fails the job at the fan-in, naming the chunk.
- A worker dying mid-chunk: acks_late keeps the message; the janitor sees the chunk's
  heartbeat go stale and sends its message again (same task id and chord membership,
  stored at claim), so another worker redoes only that chunk.
- Cancel: the job's cancel flag. Running chunks poll it and stop at their next step; a
  queued chunk reads it when a worker takes it and returns without computing (Celery's
  revoke would need the workers' remote control, which is off: idle workers sleep,
  worker/quiet.py). The fan-in then ends the job as cancelled.
- One chunk, DPTENSOR_FANOUT=false or the SQLite broker (no broadcast, no chord join):
  the job's own worker runs its chunks in turn, through the same functions.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from celery import Task, chord, current_app, shared_task
from celery.exceptions import Ignore, Reject
from sqlalchemy.orm import Session, sessionmaker

from jobs import chunks, layout
from jobs.chunks import ChunkSpec
from jobs.errors import USER_KINDS, ErrorPayload, RemoteError, error_payload
from jobs.layout import shown_as_refs
from jobs.queue import CHUNK_TASK, FANIN_TASK
from jobs.tables import Job, JobChunk
from worker import state
from worker.jobrun import Outcome, run_job
from worker.predict import Stopped
from worker.progress import JobMonitor, ThrottledFrames, job_log

log = logging.getLogger("dptensor.worker")
FANNED_OUT = "fanned_out"  # Outcome.status: the chunks have the job now


@dataclass
class ChunkRun:
    """What a chunk body gets besides the job: its row, progress and stop."""

    row: JobChunk
    count: int  # chunks of the job
    progress: Callable[[int, int], None]  # (frames done, frames total)
    should_stop: Callable[[], bool]
    jlog: logging.Logger


class FanoutKind(Protocol):
    """A job kind that runs in chunks (worker/spectrum.py, worker/predict_job.py)."""

    def plan(self, job: Job, folder: Path) -> list[ChunkSpec]: ...

    def run(self, job: Job, folder: Path, chunk: ChunkRun) -> dict[str, Any]:
        """Compute the chunk, write its results into the job folder, return a small summary."""
        ...

    def combine(self, job: Job, folder: Path, rows: list[JobChunk], jlog: logging.Logger) -> Outcome: ...


KINDS: dict[str, FanoutKind] = {}


def register(kind: str, impl: FanoutKind) -> None:
    KINDS[kind] = impl


class ChunkMonitor(JobMonitor):
    """The job monitor on a chunk's row: heartbeat the chunk, stop on the job's cancel."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, index: int, worker_id: str,
                 **kw: Any) -> None:
        super().__init__(sessions, job_id, worker_id, **kw)
        self.name, self.index = f"monitor-{job_id}-{index}", index

    def _heartbeat(self, session: Session) -> bool:
        return chunks.heartbeat(session, self.job_id, self.index, self.worker_id)

    def _poll(self, session: Session) -> tuple[bool, bool]:
        return chunks.poll(session, self.job_id, self.index, self.worker_id)


class ChunkProgress(ThrottledFrames):
    """Frames done / total and frames/s into the chunk's row (and the job's sum), at most
    every progress_every_s."""

    def __init__(self, job_id: str, index: int, jlog: logging.Logger, label: str) -> None:
        self.state, self.job_id, self.index, self.jlog, self.label = state.current(), job_id, index, jlog, label
        super().__init__(self.state.settings.progress_every_s)

    def write(self, done: int, total: int, rate: float | None) -> None:
        with self.state.sessions() as session:
            chunks.report(session, self.job_id, self.index, self.state.worker_id, step=done, total=total, rate=rate)
        if done:
            self.jlog.info("%s: predicted %d/%d frames, %.1f frames/s", self.label, done, total, rate or 0.0)


def _tag(row: JobChunk, count: int) -> str:
    return f"chunk {row.index + 1}/{count} ({row.label})" if count > 1 else row.label


def _execute(kind: FanoutKind, job: Job, folder: Path, row: JobChunk, count: int, should_stop: Callable[[], bool],
             jlog: logging.Logger) -> dict[str, Any]:
    tag = _tag(row, count)
    return kind.run(job, folder, ChunkRun(row, count, ChunkProgress(job.id, row.index, jlog, tag), should_stop, jlog))


# --- the job task's body: plan, then run inline or fan out; the fan-in: combine ----------------

def _fanout_possible(n_open: int) -> bool:
    settings = state.current().settings
    return n_open > 1 and settings.fanout and not settings.sqlite_broker


def drive(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    """The body of a chunked job's task and of its fan-in; picks up wherever the job is."""
    kind = KINDS[job.kind]
    st = state.current()
    with st.sessions() as session:
        rows = chunks.rows_of(session, job.id) or chunks.ensure(session, job.id, kind.plan(job, folder))
    failed = [r for r in rows if r.status == chunks.FAILED]
    if failed:
        first = failed[0]
        error = cast(ErrorPayload, first.error) if first.error else error_payload(RuntimeError("failed"))
        with st.sessions() as session:
            chunks.close_open(session, job.id)
        error = {**error, "message": f"{_tag(first, len(rows))}: {error['message']}"}
        raise RemoteError(error)
    if job.cancel_requested or monitor.cancel.is_set():  # the row as claimed: the monitor may not have polled yet
        with st.sessions() as session:
            chunks.close_open(session, job.id)
        return Outcome("cancelled")
    if monitor.should_stop():
        return Outcome(monitor.stopped())
    todo = [r for r in rows if r.status != chunks.DONE]
    if todo and _fanout_possible(len(todo)):
        return _fan_out(job, todo, jlog)
    for row in todo:  # in this worker, one after the other
        with st.sessions() as session:
            claim = chunks.claim(session, job.id, row.index, st.worker_id, st.settings.stale_after_s, None)
            row = session.get(JobChunk, (job.id, row.index)) or row
        if not claim.run:
            raise RuntimeError(f"{_tag(row, len(rows))} cannot run here ({claim.reason})")
        try:
            summary = _execute(kind, job, folder, row, len(rows), monitor.should_stop, jlog)
        except (Stopped, InterruptedError):
            with st.sessions() as session:
                chunks.release(session, job.id, row.index, st.worker_id)
                if monitor.cancel.is_set():
                    chunks.close_open(session, job.id)
            return Outcome(monitor.stopped())
        except Exception as exc:  # the job fails with it (run_job); the chunk says which one
            with st.sessions() as session:
                chunks.finish(session, job.id, row.index, st.worker_id, chunks.FAILED, error=error_payload(exc))
                chunks.close_open(session, job.id)
            raise
        with st.sessions() as session:
            chunks.finish(session, job.id, row.index, st.worker_id, chunks.DONE, result=summary)
    with st.sessions() as session:
        rows = chunks.rows_of(session, job.id)
    return kind.combine(job, folder, rows, jlog)


def _fan_out(job: Job, todo: list[JobChunk], jlog: logging.Logger) -> Outcome:
    st = state.current()
    ids = {r.index: str(uuid.uuid4()) for r in todo}
    header = [current_app.signature(CHUNK_TASK, args=(job.id, r.index), queue="batch", task_id=ids[r.index])
              for r in todo]
    fanin = current_app.signature(FANIN_TASK, args=(job.id,), queue="batch", immutable=True)
    errback = current_app.signature(FANIN_TASK, args=(job.id,), queue="batch", immutable=True)
    with st.sessions() as session:
        chunks.set_task_ids(session, job.id, ids)  # first: a cancel must find them
        if not chunks.hand_over(session, job.id, st.worker_id):
            return Outcome("lost")
    try:
        chord(header, fanin.on_error(errback)).apply_async()
    except Exception:
        with st.sessions() as session:
            chunks.take_back(session, job.id, st.worker_id)
        raise
    jlog.info("fanned out %d chunks to the batch workers", len(todo))
    return Outcome(FANNED_OUT)


@shared_task(name=FANIN_TASK, bind=True)
def fanin_task(self: Task, job_id: str) -> str:
    """The chord's callback (and errback): every chunk has returned (or the janitor saw the
    callback lost); take the job back and combine, fail or cancel it."""
    return run_job(self, job_id, drive, resume=True)


# --- a chunk, on any batch worker ------------------------------------------------------------

def _message(task: Task, job_id: str, index: int) -> dict[str, Any]:
    """This delivery as it can be sent again (what Celery's own retry sends)."""
    req = task.request
    options = {"task_id": req.id, "group_id": req.group, "group_index": req.group_index, "chord": req.chord,
               "root_id": req.root_id, "parent_id": req.parent_id}
    return {"task": CHUNK_TASK, "args": [job_id, index], "queue": "batch",
            "options": {k: v for k, v in options.items() if v is not None}}


@shared_task(name=CHUNK_TASK, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True)
def chunk_task(self: Task, job_id: str, index: int) -> dict[str, Any]:
    """Returns {"index", "status"}: done | failed | cancelled | stopped (the chord's part)."""
    st = state.current()
    settings, worker_id = st.settings, st.worker_id
    if st.shutdown.is_set():  # a stopping worker takes no new work: back to the queue
        raise Reject("worker stopping", requeue=True)
    try:
        with st.sessions() as session:
            claim = chunks.claim(session, job_id, index, worker_id, settings.stale_after_s,
                                 _message(self, job_id, index))
            row, job = session.get(JobChunk, (job_id, index)), session.get(Job, job_id)
    except Exception as exc:  # database unreachable: try the message again later, do not lose it
        raise self.retry(exc=exc, countdown=5) from None
    if claim.reason == "busy":  # running elsewhere, alive: that delivery answers for the chord
        log.info("chunk %d of job %s: delivery dropped (running elsewhere)", index, job_id)
        raise Ignore()
    if not claim.run or row is None or job is None:
        log.info("chunk %d of job %s: %s", index, job_id, claim.reason)
        return {"index": index, "status": claim.reason}
    if claim.attempt > job.max_attempts:
        msg = f"gave up after {claim.attempt - 1} attempt(s) of at most {job.max_attempts}"
        with st.sessions() as session:
            chunks.finish(session, job_id, index, worker_id, chunks.FAILED,
                          error=error_payload(RuntimeError(msg)))
        return {"index": index, "status": chunks.FAILED}
    kind = KINDS[job.kind]
    folder = layout.job_dir(settings.root, job_id)
    with st.sessions() as session:
        count = len(chunks.rows_of(session, job_id))
    tag = _tag(row, count)
    with job_log(folder / "job.log") as jlog, ChunkMonitor(
            st.sessions, job_id, index, worker_id, poll_s=settings.cancel_poll_s,
            heartbeat_s=settings.heartbeat_interval_s, shutdown=st.shutdown) as monitor:
        jlog.info("%s: attempt %d on worker %s", tag, claim.attempt, worker_id)
        try:
            summary = _execute(kind, job, folder, row, count, monitor.should_stop, jlog)
        except (Stopped, InterruptedError):
            return _stopped(self, monitor, job_id, index, tag, jlog)
        except Exception as exc:
            return _failed(self, exc, claim.attempt, job_id, index, tag, jlog)
        if monitor.lost.is_set():
            jlog.warning("%s: another worker took it over; this attempt stops here", tag)
            raise Ignore()
        with st.sessions() as session:
            if not chunks.finish(session, job_id, index, worker_id, chunks.DONE, result=summary):
                jlog.warning("%s: taken over or ended meanwhile; this attempt's result is not counted", tag)
                raise Ignore()
        jlog.info("%s: done on worker %s", tag, worker_id)
    return {"index": index, "status": chunks.DONE}


def _stopped(task: Task, monitor: JobMonitor, job_id: str, index: int, tag: str,
             jlog: logging.Logger) -> dict[str, Any]:
    st = state.current()
    if monitor.lost.is_set():
        jlog.warning("%s: another worker took it over; this attempt stops here", tag)
        raise Ignore()
    if monitor.cancel.is_set():
        with st.sessions() as session:
            chunks.finish(session, job_id, index, st.worker_id, chunks.CANCELLED)
        jlog.info("%s: stopped (job cancelled)", tag)
        return {"index": index, "status": chunks.CANCELLED}
    with st.sessions() as session:  # the worker is shutting down: another one takes the chunk
        chunks.release(session, job_id, index, st.worker_id)
    jlog.warning("%s: worker shutting down, chunk back to the queue", tag)
    raise Reject("worker stopping", requeue=True)


def _failed(task: Task, exc: Exception, attempt: int, job_id: str, index: int, tag: str,
            jlog: logging.Logger) -> dict[str, Any]:
    """An internal error is retried (this chunk alone) up to chunk_retries times; a user
    error or the last retry fails the chunk, and the fan-in the job."""
    st = state.current()
    settings = st.settings
    error = error_payload(exc, with_traceback=True, shown=lambda text: shown_as_refs(text, settings.root))
    if error["kind"] not in USER_KINDS and attempt <= settings.chunk_retries:
        jlog.warning("%s: %s: %s — retry %d of %d", tag, type(exc).__name__, exc, attempt, settings.chunk_retries)
        with st.sessions() as session:
            chunks.release(session, job_id, index, st.worker_id, count=True)
        raise task.retry(exc=exc, countdown=1)  # bounded here, by the chunk's attempts
    jlog.error("%s failed: %s: %s\n%s", tag, type(exc).__name__, exc, traceback.format_exc())
    with st.sessions() as session:
        chunks.finish(session, job_id, index, st.worker_id, chunks.FAILED, error=error)
    return {"index": index, "status": chunks.FAILED}
