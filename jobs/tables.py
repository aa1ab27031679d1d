"""SQLAlchemy tables of the job store (named tables.py, not models.py: "model" means a
trained network in this project). Shared by the api and the workers."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_KINDS = ("train", "predict", "spectrum", "select")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
FANOUT = "fan-out"  # jobs.worker_id of a running job while its chunks run (jobs/chunks.py)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # naive UTC: SQLite has no time zones


def new_id(prefix: str) -> str:
    """Short ids that say what they name (``ds-…``, ``job-…``, ``mdl-…``) for curl users."""
    return f"{prefix}-{secrets.token_hex(6)}"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256: a leaked DB leaks no token
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    n_files: Mapped[int] = mapped_column(Integer, default=0)
    systems: Mapped[list[Any]] = mapped_column(JSON, default=list)  # per-system summaries


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # train | predict | spectrum
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(300), default="")
    queue: Mapped[str] = mapped_column(String(32))
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)  # as submitted (dataset references, not paths)
    model_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # predict: model used
    dataset_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)  # datasets it reads
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # type, message, traceback
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # progress
    step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)  # steps (or frames) per second
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_row: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # latest lcurve row
    # delivery bookkeeping (see docs/service.md, "heartbeats")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # when its message was last handed to the broker; NULL: not (yet) sent — the janitor
    # sends it (transactional outbox: the row is committed first, the send may be lost)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class JobChunk(Base):
    """One piece of a fanned-out job (a trajectory of a spectrum, a range of frames of a
    prediction): run by any batch worker as a Celery chord member, with its own claim,
    heartbeat and attempts (jobs/chunks.py). Its results live in the job's folder; the row
    says which are complete, so a chunk is never computed twice. A table of its own:
    init_db creates it on an existing database."""

    __tablename__ = "job_chunks"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0-based, the order of the results
    label: Mapped[str] = mapped_column(String(300), default="")  # e.g. the trajectory, "frames 0-999"
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what to compute (kind-specific)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|running|done|failed|cancelled
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # deliveries that started it
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # how to send its message again (task, args, chord membership) when its worker is lost
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ModelRecord(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))  # dipole | polar
    type_map: Mapped[list[Any]] = mapped_column(JSON)
    sel_type: Mapped[list[Any]] = mapped_column(JSON)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # rcut, sel, precision, format
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(String(16))  # trained | uploaded
    source_job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerRecord(Base):
    """Workers announce themselves and heartbeat here: readiness works on any broker
    (the embedded transport has no broadcast, so Celery's inspect/ping cannot)."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # celery hostname, unique per process
    queues: Mapped[list[Any]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(64))
    gpu: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)



class WorkerMetrics(Base):
    """A worker's own Prometheus metrics (batch sizes, queue wait, frames predicted) in the
    text exposition format, rewritten at each heartbeat: workers are separate processes,
    possibly on other machines, so the api's /metrics re-exports them from here
    (app/metrics.py) with a ``worker`` label. A table of its own: init_db creates it on an
    existing database without a migration."""

    __tablename__ = "worker_metrics"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the worker's id (workers.id)
    exposition: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
