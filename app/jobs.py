"""Creating and presenting jobs (shared by the train, predict and spectrum routes)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.schemas import JobPublic, LcurvePublic, Progress
from jobs.layout import job_dir
from jobs.queue import JOB_TASKS, BrokerUnavailable, TaskQueue
from jobs.settings import Settings
from jobs.tables import Job, ModelRecord, User, new_id, utcnow
from model.config import InputConfig, parse_section


def submit(session: Session, queue: TaskQueue, settings: Settings, user: User, *, kind: str, inputs: dict[str, Any],
           name: str = "", files: dict[str, Any] | None = None, staged: dict[str, Path] | None = None,
           **fields: Any) -> Job:
    """Store the job (and its input files) first, then enqueue it: the row is the truth,
    the message only a wake-up call. A broker that is down is a 503 and leaves nothing.
    ``files`` are written as JSON; ``staged`` files or folders (already checked uploads
    under the data dir) are moved in under the given names before the job exists."""
    job = Job(id=new_id("job"), kind=kind, owner_id=user.id, name=name, queue=JOB_TASKS[kind][1], inputs=inputs,
              max_attempts=settings.max_attempts, **fields)
    folder = job_dir(settings.root, job.id)
    folder.mkdir(parents=True)
    for fname, content in (files or {}).items():
        (folder / fname).write_text(json.dumps(content, indent=1))
    for fname, src in (staged or {}).items():
        src.rename(folder / fname)  # same file system: the data dir
    session.add(job)
    session.commit()
    try:
        job.task_id = queue.enqueue_job(job.id, kind)
        job.enqueued_at = utcnow()  # until this commits, the janitor may send it too: harmless
    except BrokerUnavailable:  # the user gets a 503: leave no job behind (a late message finds no row)
        session.delete(job)
        session.commit()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    session.commit()
    return job


def _model_of(job: Job) -> str | None:
    return job.model_id or (job.inputs or {}).get("model_id")


def deleted_models(session: Session, jobs: list[Job]) -> set[str]:
    """Models the jobs produced or used that no longer exist (one query)."""
    ids = {m for job in jobs if isinstance(m := _model_of(job), str)}
    if not ids:
        return set()
    return ids - set(session.scalars(select(ModelRecord.id).where(ModelRecord.id.in_(ids))))


def job_public(job: Job, owner: str, deleted: set[str] | frozenset[str] = frozenset()) -> JobPublic:
    unit: Literal["steps", "frames"] = "frames" if job.kind in ("predict", "spectrum", "select") else "steps"
    return JobPublic(
        id=job.id, kind=job.kind, status=job.status, name=job.name, owner=owner, queue=job.queue,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        progress=Progress(step=job.step, total=job.total, unit=unit, rate=job.rate, eta_s=job.eta_s),
        lcurve=job.last_row, attempt=job.attempt, max_attempts=job.max_attempts,
        cancel_requested=job.cancel_requested, model_id=job.model_id, model_deleted=_model_of(job) in deleted,
        result=job.result,
        error=job.error, warnings=job.warnings or [], inputs=job.inputs,
    )


def lcurve_file(root: Path, job: Job, member: int | None = None) -> Path | None:
    """The learning curve a training writes (training.disp_file, default as InputConfig
    says), a committee training's per member (member-<i>/, default 0); None for other jobs."""
    if job.kind != "train":
        return None
    inputs = {k: v for k, v in job.inputs.items() if k != "committee"}
    name = parse_section(inputs, InputConfig).training.disp_file
    if job.inputs.get("committee"):
        return job_dir(root, job.id) / f"member-{member or 0}" / name
    return job_dir(root, job.id) / name


def read_lcurve(path: Path | None) -> LcurvePublic:
    """lcurve.out (header '#  step col col ...', rows of numbers, 'nan' for absent)."""
    if path is None or not path.is_file():
        return LcurvePublic(columns=[], rows=[])
    columns: list[str] = []
    rows: list[dict[str, int | float | None]] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            words = line[1:].split()
            if words and words[0] == "step" and not columns:
                columns = words
            continue
        values = line.split()
        if not columns or len(values) != len(columns):
            continue  # a row being written right now
        row: dict[str, int | float | None] = {}
        for col, text in zip(columns, values, strict=True):
            v = float(text)
            row[col] = None if math.isnan(v) else (int(v) if col == "step" else v)
        rows.append(row)
    return LcurvePublic(columns=columns, rows=rows)
