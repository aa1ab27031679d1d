"""Job state transitions shared by the api, the janitor and the workers.

Every transition that two processes could race on is a compare-and-set UPDATE (the
``attempt`` counter is the version column), so it is atomic on SQLite and PostgreSQL
alike: only one worker ever owns a running job, and a duplicate delivery of a message
(broker redelivery, janitor re-send) is recognised and dropped. docs/service.md has the
whole design.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs import layout
from jobs.errors import ErrorPayload, payload
from jobs.tables import (
    FANOUT,
    TERMINAL,
    Job,
    ModelRecord,
    WorkerMetrics,
    WorkerRecord,
    new_id,
    utcnow,
)


@dataclass(frozen=True)
class Claim:
    run: bool
    attempt: int = 0
    reason: str = ""


def claim(session: Session, job_id: str, worker_id: str, stale_after_s: float) -> Claim:
    """Take ownership of a job for this delivery, or say why the delivery is to be dropped."""
    for _ in range(3):  # a lost compare-and-set means someone else moved the row: look again
        job = session.get(Job, job_id, populate_existing=True)
        if job is None:
            return Claim(False, reason="no such job")
        if job.status in TERMINAL:
            return Claim(False, reason=f"job is already {job.status}")
        now = utcnow()
        fresh = job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(seconds=stale_after_s)
        if job.status == "running" and fresh:
            return Claim(False, reason=f"job is running on {job.worker_id} (fresh heartbeat)")
        if job.status == "running" and job.worker_id == FANOUT:  # its chunks have it (jobs/chunks.py)
            return Claim(False, reason="job is running in chunks")
        if job.attempt >= job.max_attempts:
            _fail_exhausted(session, job, worker_lost=job.status == "running")
            return Claim(False, reason="attempts exhausted")
        seen = job.attempt  # read before the UPDATE: the ORM syncs the in-memory row
        res = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.attempt == seen, Job.status == job.status)
            .values(status="running", attempt=seen + 1, worker_id=worker_id, heartbeat_at=now,
                    started_at=job.started_at or now)
        )
        session.commit()
        if res.rowcount == 1:  # type: ignore[attr-defined]
            return Claim(True, attempt=seen + 1)
    return Claim(False, reason="lost the race for this job")


def _fail_exhausted(session: Session, job: Job, *, worker_lost: bool) -> None:
    msg = (f"gave up after {job.attempt} attempt(s) of at most {job.max_attempts}: "
           + ("the worker stopped sending heartbeats (killed or lost)" if worker_lost
              else "every delivery was interrupted"))
    session.execute(
        update(Job).where(Job.id == job.id, Job.attempt == job.attempt, Job.status.not_in(TERMINAL))
        .values(status="failed", finished_at=utcnow(), worker_id=None,
                error=payload("worker_lost", "WorkerLost", msg))
    )
    session.commit()


def heartbeat(session: Session, job_id: str, worker_id: str) -> bool:
    """Refresh the heartbeat; False when this worker no longer owns the job (fenced off)."""
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(heartbeat_at=utcnow())
    )
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def poll(session: Session, job_id: str, worker_id: str) -> tuple[bool, bool]:
    """(still owned, cancel requested) — one read, no write."""
    row = session.execute(
        select(Job.worker_id, Job.status, Job.cancel_requested).where(Job.id == job_id)
    ).one_or_none()
    session.commit()
    if row is None:
        return False, True
    return row.worker_id == worker_id and row.status == "running", bool(row.cancel_requested)


def report_progress(session: Session, job_id: str, worker_id: str, **values: Any) -> None:
    session.execute(update(Job).where(Job.id == job_id, Job.worker_id == worker_id).values(**values))
    session.commit()


def finish(session: Session, job_id: str, worker_id: str, status: str, *, result: dict[str, Any] | None = None,
           error: ErrorPayload | None = None, warnings: list[str] | None = None) -> bool:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "result": result, "error": error}
    if warnings is not None:
        values["warnings"] = warnings
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running").values(**values)
    )
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def release(session: Session, job_id: str, worker_id: str) -> bool:
    """Worker shutting down cleanly mid-job: back to the queue (unsent: the janitor sends
    it, not the stopping worker, which must take no new work); the attempt does not count."""
    res = session.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
        .values(status="queued", worker_id=None, heartbeat_at=None, attempt=Job.attempt - 1, enqueued_at=None)
    )
    session.commit()
    return res.rowcount == 1  # type: ignore[attr-defined]


def sweep_stale(session: Session, stale_after_s: float) -> tuple[list[Job], list[Job]]:
    """Running jobs whose worker stopped heartbeating: requeue them while attempts remain,
    else fail them with the reason. Returns (requeued, failed); the caller re-sends the
    requeued ones. Never leaves a job 'running' without a live worker. A job running in
    chunks has no worker of its own: its chunks are swept (jobs.chunks.sweep_stale)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    stale = session.scalars(select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff,
                                              Job.worker_id.is_distinct_from(FANOUT))).all()
    requeued, failed = [], []
    for job in stale:
        if job.attempt >= job.max_attempts:
            _fail_exhausted(session, job, worker_lost=True)
            failed.append(job)
            continue
        res = session.execute(
            update(Job).where(Job.id == job.id, Job.attempt == job.attempt, Job.status == "running",
                              Job.heartbeat_at < cutoff)
            .values(status="queued", worker_id=None, heartbeat_at=None, enqueued_at=None)
        )
        session.commit()
        if res.rowcount == 1:  # type: ignore[attr-defined]
            requeued.append(job)
    return requeued, failed


def mark_sent(session: Session, job_id: str, task_id: str | None = None) -> None:
    values: dict[str, Any] = {"enqueued_at": utcnow()}
    if task_id is not None:
        values["task_id"] = task_id
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    session.commit()


def mark_unsent(session: Session, job_id: str) -> None:
    """Its message is not in the broker (a send failed, a stopping worker gave it back)."""
    session.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(enqueued_at=None))
    session.commit()


def take_unsent(session: Session, grace_s: float, resend_after_s: float) -> list[Job]:
    """Queued jobs whose message may not be in the broker: never sent (the api died between
    commit and send, a worker gave it back, a stale job was requeued) for ``grace_s``, or
    sent ``resend_after_s`` ago and still unclaimed (the broker lost it). Each is marked
    sent (compare-and-set: one api replica takes it) and returned for the caller to send.
    A duplicate message is harmless: ``claim`` runs a job once."""
    now = utcnow()
    candidates = session.scalars(select(Job).where(
        Job.status == "queued",
        ((Job.enqueued_at.is_(None)) & (Job.created_at < now - timedelta(seconds=grace_s)))
        | (Job.enqueued_at < now - timedelta(seconds=resend_after_s)))).all()
    taken = []
    for job in candidates:
        same = Job.enqueued_at.is_(None) if job.enqueued_at is None else Job.enqueued_at == job.enqueued_at
        res = session.execute(update(Job).where(Job.id == job.id, Job.status == "queued", same)
                              .values(enqueued_at=now))
        session.commit()
        if res.rowcount == 1:  # type: ignore[attr-defined]
            taken.append(job)
    return taken


def register_trained_model(session: Session, root: Path, job: Job, model_file: Path, summary: dict[str, Any],
                           metrics: dict[str, Any]) -> ModelRecord:
    """Copy the final model out of the job folder (so deleting a job never breaks a model)."""
    record = ModelRecord(
        id=new_id("mdl"), owner_id=job.owner_id, name=job.name or f"trained by {job.id}", kind=summary["kind"],
        type_map=summary["type_map"], sel_type=summary["sel_type"],
        info={k: summary[k] for k in ("rcut", "sel", "precision", "committee_size") if k in summary},
        metrics=metrics, source="trained",
        source_job_id=job.id, size_bytes=model_file.stat().st_size,
    )
    dest = layout.model_file(root, record.id)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, dest)
    session.add(record)
    session.commit()
    return record


def upsert_worker(session: Session, worker_id: str, **values: Any) -> None:
    record = session.get(WorkerRecord, worker_id)
    if record is None:
        session.add(WorkerRecord(id=worker_id, **values))
    else:
        for key, value in values.items():
            setattr(record, key, value)
    session.commit()


def live_workers(session: Session, stale_after_s: float) -> list[WorkerRecord]:
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    return list(session.scalars(select(WorkerRecord).where(WorkerRecord.heartbeat_at >= cutoff)).all())


def save_worker_metrics(session: Session, worker_id: str, exposition: str) -> None:
    record = session.get(WorkerMetrics, worker_id)
    if record is None:
        session.add(WorkerMetrics(id=worker_id, exposition=exposition, updated_at=utcnow()))
    else:
        record.exposition, record.updated_at = exposition, utcnow()
    session.commit()


def live_worker_metrics(session: Session, stale_after_s: float) -> list[tuple[WorkerRecord, str]]:
    """(worker, its metrics text) for the workers that still heartbeat."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    rows = session.execute(select(WorkerRecord, WorkerMetrics.exposition)
                           .join(WorkerMetrics, WorkerMetrics.id == WorkerRecord.id)
                           .where(WorkerRecord.heartbeat_at >= cutoff)).all()
    return [(w, text) for w, text in rows]
