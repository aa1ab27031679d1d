"""Chunks of a fanned-out job: the row transitions that the planner, the chunk tasks, the
fan-in and the janitor race on, each a compare-and-set UPDATE (as jobs/store.py does for
jobs). docs/service.md ("Fan-out") has the whole design.

While its chunks run, a job stays ``running`` with ``worker_id = FANOUT``: no worker owns
it, the chunks heartbeat on their own rows, the job-level stale sweep leaves it alone and
the fan-in (the chord's callback) takes it back (``claim_fanin``) to combine the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jobs.errors import ErrorPayload, payload
from jobs.tables import FANOUT, TERMINAL, Job, JobChunk, utcnow

__all__ = ["FANOUT"]
DONE, PENDING, RUNNING, FAILED, CANCELLED = "done", "pending", "running", "failed", "cancelled"
OPEN = (PENDING, RUNNING)


@dataclass(frozen=True)
class ChunkSpec:
    label: str
    spec: dict[str, Any]
    total: int | None = None  # frames, when known before it runs


def ensure(session: Session, job_id: str, specs: list[ChunkSpec]) -> list[JobChunk]:
    """The job's chunk rows, created on the first plan; a later plan (a re-delivered job)
    finds them with their state, so completed chunks are not run again."""
    rows = rows_of(session, job_id)
    if rows:
        if len(rows) != len(specs):
            raise RuntimeError(f"job {job_id} has {len(rows)} chunks, its plan now {len(specs)}")
        return rows
    for i, s in enumerate(specs):
        session.add(JobChunk(job_id=job_id, index=i, label=s.label, spec=s.spec, total=s.total))
    session.commit()
    return rows_of(session, job_id)


def rows_of(session: Session, job_id: str) -> list[JobChunk]:
    rows = session.scalars(select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.index)
                           .execution_options(populate_existing=True)).all()
    session.commit()
    return list(rows)


def set_task_ids(session: Session, job_id: str, task_ids: dict[int, str]) -> None:
    for index, task_id in task_ids.items():
        session.execute(update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.index == index)
                        .values(task_id=task_id))
    session.commit()


def hand_over(session: Session, job_id: str, worker_id: str) -> bool:
    """The planner gives the job to its chunks (before sending them: a fast chord's fan-in
    must find the job handed over)."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                          .values(worker_id=FANOUT, heartbeat_at=utcnow()))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def take_back(session: Session, job_id: str, worker_id: str) -> bool:
    """The planner could not send the chunks: the job is its own again (to fail or retry)."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == FANOUT, Job.status == "running")
                          .values(worker_id=worker_id, heartbeat_at=utcnow()))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def claim_fanin(session: Session, job_id: str, worker_id: str) -> tuple[bool, str]:
    """The chord's callback (or errback, or the janitor's re-send) takes the job back from
    its chunks; one delivery wins. The attempt is not counted: it continues the planner's."""
    res = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == FANOUT, Job.status == "running")
                          .values(worker_id=worker_id, heartbeat_at=utcnow()))
    session.commit()
    if res.rowcount == 1:  # type: ignore[attr-defined]
        return True, ""
    job = session.get(Job, job_id, populate_existing=True)
    session.commit()
    if job is None:
        return False, "no such job"
    return False, f"job is {job.status}" + (f" on {job.worker_id}" if job.status == "running" else "")


@dataclass(frozen=True)
class ChunkClaim:
    run: bool
    reason: str = ""  # why not: done | busy | stopped | gone
    attempt: int = 0


def claim(session: Session, job_id: str, index: int, worker_id: str, stale_after_s: float,
          message: dict[str, Any] | None) -> ChunkClaim:
    """Take a chunk for this delivery: pending, or running on a worker that stopped
    heartbeating. ``message`` is how to send this delivery again (kept for the janitor)."""
    for _ in range(3):
        row = session.get(JobChunk, (job_id, index), populate_existing=True)
        job = session.get(Job, job_id, populate_existing=True)
        session.commit()
        if row is None or job is None:
            return ChunkClaim(False, "gone")
        if row.status == DONE:
            return ChunkClaim(False, "done")
        if job.status in TERMINAL or job.cancel_requested or row.status in (FAILED, CANCELLED):
            return ChunkClaim(False, "stopped")
        now = utcnow()
        fresh = row.heartbeat_at is not None and now - row.heartbeat_at < timedelta(seconds=stale_after_s)
        if row.status == RUNNING and fresh and row.worker_id != worker_id:
            return ChunkClaim(False, "busy")
        seen = row.attempt
        res = session.execute(
            update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.index == index, JobChunk.attempt == seen,
                                   JobChunk.status == row.status)
            .values(status=RUNNING, attempt=seen + 1, worker_id=worker_id, heartbeat_at=now, started_at=now,
                    step=0, rate=None, error=None, **({"message": message} if message is not None else {})))
        session.commit()
        if res.rowcount == 1:  # type: ignore[attr-defined]
            return ChunkClaim(True, attempt=seen + 1)
    return ChunkClaim(False, "busy")


def _mine(job_id: str, index: int, worker_id: str) -> Any:
    return (JobChunk.job_id == job_id) & (JobChunk.index == index) & (JobChunk.worker_id == worker_id) & (
        JobChunk.status == RUNNING)


def heartbeat(session: Session, job_id: str, index: int, worker_id: str) -> bool:
    res = session.execute(update(JobChunk).where(_mine(job_id, index, worker_id)).values(heartbeat_at=utcnow()))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def poll(session: Session, job_id: str, index: int, worker_id: str) -> tuple[bool, bool]:
    """(this worker still runs the chunk, the job is to stop: cancelled or finished)."""
    row = session.execute(select(JobChunk.worker_id, JobChunk.status).where(
        JobChunk.job_id == job_id, JobChunk.index == index)).one_or_none()
    job = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    session.commit()
    if row is None or job is None:
        return False, True
    return row.worker_id == worker_id and row.status == RUNNING, bool(job.cancel_requested) or job.status in TERMINAL


def report(session: Session, job_id: str, index: int, worker_id: str, *, step: int, total: int | None,
           rate: float | None) -> None:
    """The chunk's progress, and the job's as the sum over its chunks (frames done, frames/s
    of the chunks running now)."""
    values: dict[str, Any] = {"step": step, "rate": rate}
    if total is not None:
        values["total"] = total
    session.execute(update(JobChunk).where(_mine(job_id, index, worker_id)).values(**values))
    _job_progress(session, job_id)


def _job_progress(session: Session, job_id: str) -> None:
    """The job's progress from its chunks': frames done (sum), frames/s of the chunks running
    now (sum; kept as it was once none runs), the total once every chunk's is known."""
    done, rate, running, known, totals, n = session.execute(
        select(func.coalesce(func.sum(JobChunk.step), 0),
               func.coalesce(func.sum(JobChunk.rate).filter(JobChunk.status == RUNNING), 0.0),
               func.count().filter(JobChunk.status == RUNNING),
               func.count(JobChunk.total), func.coalesce(func.sum(JobChunk.total), 0), func.count())
        .where(JobChunk.job_id == job_id)).one()
    done, totals, rate = int(done or 0), int(totals or 0), float(rate or 0.0)
    values: dict[str, Any] = {"step": done}
    if known == n:
        values["total"] = totals
    if running:
        values["rate"] = rate or None
        values["eta_s"] = (totals - done) / rate if rate and known == n else None
    session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(**values))
    session.commit()


def finish(session: Session, job_id: str, index: int, worker_id: str, status: str, *,
           result: dict[str, Any] | None = None, error: ErrorPayload | None = None) -> bool:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "result": result, "error": error}
    res = session.execute(update(JobChunk).where(_mine(job_id, index, worker_id)).values(**values))
    session.commit()
    _job_progress(session, job_id)
    return res.rowcount == 1  # type: ignore[attr-defined]


def release(session: Session, job_id: str, index: int, worker_id: str, *, count: bool = False) -> bool:
    """Back to pending (a retry after an error, or a worker shutting down); a shutdown does
    not count the attempt."""
    values: dict[str, Any] = {"status": PENDING, "worker_id": None, "heartbeat_at": None, "rate": None}
    if not count:
        values["attempt"] = JobChunk.attempt - 1
    res = session.execute(update(JobChunk).where(_mine(job_id, index, worker_id)).values(**values))
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def close_open(session: Session, job_id: str, status: str = CANCELLED) -> None:
    """The job ended: chunks that never ran (or were stopped) are marked so."""
    session.execute(update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status.in_(OPEN))
                    .values(status=status, finished_at=utcnow(), rate=None))
    session.commit()


def unsent(session: Session, job_id: str, index: int) -> None:
    """The re-send of a swept chunk failed (broker down): stale again, for the next sweep."""
    session.execute(update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.index == index,
                                           JobChunk.status == PENDING, JobChunk.worker_id.is_(None))
                    .values(status=RUNNING, heartbeat_at=utcnow() - timedelta(days=1)))
    session.commit()


@dataclass(frozen=True)
class Sweep:
    resend: list[dict[str, Any]]  # chunk messages to send again (their worker was lost)
    fanin: list[str]  # jobs whose fan-in to send (a chunk failed for good, or the callback was lost)


def sweep_stale(session: Session, stale_after_s: float) -> Sweep:
    """Running chunks of fanned-out jobs (a job running its chunks itself is swept as a
    job) whose worker stopped heartbeating go back to pending and their
    message is sent again (same task id and chord membership, so the chord completes),
    while the job has attempts left; else the chunk fails and the fan-in ends the job.
    Fanned-out jobs whose chunks all ended ``stale_after_s`` ago without a fan-in get one."""
    now = utcnow()
    cutoff = now - timedelta(seconds=stale_after_s)
    stale = session.execute(select(JobChunk, Job.max_attempts).join(Job, Job.id == JobChunk.job_id).where(
        JobChunk.status == RUNNING, JobChunk.heartbeat_at < cutoff, Job.worker_id == FANOUT)).all()
    resend: list[dict[str, Any]] = []
    fanin: set[str] = set()
    for row, max_attempts in stale:
        lost = row.attempt >= max_attempts or row.message is None
        values: dict[str, Any] = {"status": PENDING, "worker_id": None, "heartbeat_at": None, "rate": None}
        if lost:
            msg = (f"chunk {row.index} ({row.label}): gave up after {row.attempt} attempt(s) of at most "
                   f"{max_attempts}: the worker stopped sending heartbeats (killed or lost)")
            values = {"status": FAILED, "finished_at": now, "rate": None,
                      "error": payload("worker_lost", "WorkerLost", msg)}
        res = session.execute(update(JobChunk).where(
            JobChunk.job_id == row.job_id, JobChunk.index == row.index, JobChunk.attempt == row.attempt,
            JobChunk.status == RUNNING, JobChunk.heartbeat_at < cutoff).values(**values))
        session.commit()
        if res.rowcount == 1:  # type: ignore[attr-defined]
            if lost or row.message is None:
                fanin.add(row.job_id)
            else:
                resend.append(row.message)
    # every chunk ended and the job still waits: its callback was lost (sent again at most
    # every stale_after_s: the job's heartbeat_at says when it was last sent)
    waiting = session.scalars(select(Job.id).where(Job.status == "running", Job.worker_id == FANOUT,
                                                   Job.heartbeat_at < cutoff)).all()
    for job_id in waiting:
        still_open, last = session.execute(
            select(func.count(JobChunk.index).filter(JobChunk.status.in_(OPEN)), func.max(JobChunk.finished_at))
            .where(JobChunk.job_id == job_id)).one()
        if still_open or (last is not None and last >= cutoff):
            continue
        res = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == FANOUT, Job.heartbeat_at < cutoff)
                              .values(heartbeat_at=now))
        if res.rowcount == 1:  # type: ignore[attr-defined]
            fanin.add(job_id)
    session.commit()
    return Sweep(resend, sorted(fanin))
