"""Celery tasks: thin glue over model/. Job tasks take only a job id — the row holds the
inputs, so a redelivered or re-sent message is harmless (store.claim decides)."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Task

from jobs import store
from jobs.datasets import FILES, resolve_refs
from jobs.queue import INSPECT_TASK, JOB_TASKS, PREDICT_TASK
from jobs.tables import Job
from model.errors import DptensorError
from worker.celery_app import SETTINGS, WORKER_ID, celery, device, sessions
from worker.predict import Stopped, inspect, load_cached, predict_structures, predict_system
from worker.progress import SHUTDOWN, JobMonitor, clean_row, finite, job_log, report

log = logging.getLogger("dptensor.worker")


@dataclass
class Outcome:
    status: str  # succeeded | cancelled | interrupted (worker shutting down)
    result: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None


def _for_user(text: str) -> str:
    """Server paths of dataset files back to the references the user wrote."""
    return re.sub(re.escape(str(SETTINGS.root / "datasets")) + r"/([A-Za-z0-9_-]+)/" + FILES + r"/?",
                  r"dataset:\1/", text)


def _error(exc: BaseException) -> dict[str, Any]:
    """Type, message and the last frames of the traceback (header kept) for the job row."""
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    short = tb if len(tb) <= 7 else [tb[0], "  ...\n", *tb[-6:]]
    return {"type": type(exc).__name__, "message": _for_user(str(exc)),
            "traceback": _for_user("".join(short))[-4000:]}


def run_job(task: Task, job_id: str, body: Callable[[Job, Path, JobMonitor, logging.Logger], Outcome]) -> str:
    root = SETTINGS.root
    try:
        with sessions()() as session:
            claim = store.claim(session, job_id, WORKER_ID, SETTINGS.stale_after_s)
            job = session.get(Job, job_id)
    except Exception as exc:  # database unreachable: try the message again later, do not lose it
        raise task.retry(exc=exc, countdown=5, max_retries=None) from None
    if not claim.run or job is None:
        log.info("job %s: delivery dropped (%s)", job_id, claim.reason)
        return f"dropped: {claim.reason}"
    folder = store.job_dir(root, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    with job_log(folder / "job.log") as jlog, JobMonitor(sessions(), job_id, WORKER_ID, poll_s=SETTINGS.cancel_poll_s,
                                                         heartbeat_s=SETTINGS.heartbeat_interval_s) as monitor:
        dev, gpu = device()
        jlog.info("attempt %d/%d on worker %s, device %s%s", claim.attempt, job.max_attempts, WORKER_ID, dev,
                  f" ({gpu})" if gpu else "")
        try:
            outcome = body(job, folder, monitor, jlog)
        except Exception as exc:  # every failure is kept on the job: message, traceback, inputs
            jlog.error("failed: %s: %s\n%s", type(exc).__name__, exc, traceback.format_exc())
            with sessions()() as session:
                store.finish(session, job_id, WORKER_ID, "failed", error=_error(exc))
            return "failed"
        if monitor.lost.is_set():
            jlog.warning("another worker took this job over; this attempt stops here")
            return "lost"
        if outcome.status == "interrupted":
            jlog.warning("worker shutting down: job returned to the queue (resumes from its checkpoint)")
            with sessions()() as session:
                released = store.release(session, job_id, WORKER_ID)
            if released:
                name, queue = JOB_TASKS[job.kind]
                celery.send_task(name, args=[job_id], queue=queue, ignore_result=True)
            return "interrupted"
        with sessions()() as session:
            if outcome.model_id is not None:
                store.report_progress(session, job_id, WORKER_ID, model_id=outcome.model_id)
            store.finish(session, job_id, WORKER_ID, outcome.status, result=outcome.result)
        jlog.info("%s", outcome.status)
        return outcome.status


def _stopped(monitor: JobMonitor) -> str:
    if monitor.cancel.is_set():
        return "cancelled"
    return "interrupted" if SHUTDOWN.is_set() else "cancelled"


# --- training ------------------------------------------------------------------------------

def _train(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    from model.checkpoint import read_checkpoint
    from model.train import TrainProgress, train

    resolved = resolve_refs(job.inputs, SETTINGS.root)
    (folder / "input.resolved.json").write_text(json.dumps(resolved, indent=1))
    prefix = (job.inputs.get("training") or {}).get("save_ckpt", "model.ckpt")
    latest = folder / f"{prefix}.pt"
    restart = latest if latest.exists() else None
    if restart is not None:
        jlog.info("resuming from checkpoint %s (step %s)", latest.resolve().name, read_checkpoint(latest)["train"]["step"])

    def progress(p: TrainProgress) -> None:
        row = clean_row(p.row)
        values: dict[str, Any] = {"step": p.step, "total": p.numb_steps, "rate": finite(p.steps_per_s),
                                  "eta_s": finite(p.eta_s)}
        if row is not None:
            values["last_row"] = row
            jlog.info("step %d/%d  %.1f steps/s  %s", p.step, p.numb_steps, p.steps_per_s,
                      "  ".join(f"{k} {v:.3e}" for k, v in row.items() if v is not None))
        report(sessions(), job.id, WORKER_ID, **values)

    result = train(resolved, folder, restart=restart, device=device()[0], on_progress=progress,
                   should_stop=monitor.should_stop, progress_every_s=SETTINGS.progress_every_s)
    metrics = {k: finite(v) for k, v in result.metrics.items()}
    if result.cancelled:
        return Outcome(_stopped(monitor), {"steps_done": result.steps_done, "checkpoint": latest.name})
    ck = read_checkpoint(result.model_path)
    with sessions()() as session:
        record = store.register_trained_model(session, SETTINGS.root, job, result.model_path, ck, metrics)
    jlog.info("registered model %s", record.id)
    return Outcome("succeeded", {"model_id": record.id, "steps_done": result.steps_done, "metrics": metrics},
                   model_id=record.id)


@celery.task(name=JOB_TASKS["train"][0], bind=True)
def train_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, _train)


# --- prediction jobs -------------------------------------------------------------------------

def _predict_job(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    model = load_cached(str(store.model_dir(SETTINGS.root, job.inputs["model_id"]) / "model.pt"), device()[0])

    def progress(done: int, total: int) -> None:
        report(sessions(), job.id, WORKER_ID, step=done, total=total)
        if monitor.should_stop():
            raise Stopped

    try:
        if "system" in job.inputs:
            path = resolve_refs({"training": {"training_data": {"systems": [job.inputs["system"]]}}},
                                SETTINGS.root)["training"]["training_data"]["systems"][0]
            n = predict_system(model, Path(path), folder / "predictions.npz", progress)
            return Outcome("succeeded", {"file": "predictions.npz", "frames": n})
        structures = json.loads((folder / "structures.json").read_text())
        glob, atomic = predict_structures(model, structures, progress)
        out = [{"global_tensor": g, "atomic_tensor": a} for g, a in zip(glob, atomic, strict=True)]
        (folder / "predictions.json").write_text(json.dumps({"model_id": job.inputs["model_id"], "kind": model.kind,
                                                             "results": out}))
        return Outcome("succeeded", {"file": "predictions.json", "frames": len(out)})
    except Stopped:
        return Outcome(_stopped(monitor))


@celery.task(name=JOB_TASKS["predict"][0], bind=True)
def predict_job_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, _predict_job)


# --- synchronous calls (predict queue): the answer travels back through the result backend ---

def _answer(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return {"ok": True, **fn()}
    except DptensorError as exc:  # the user's fault: 422 in the api
        return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        log.exception("synchronous task failed")
        return {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}


@celery.task(name=PREDICT_TASK)
def predict_task(payload: dict[str, Any]) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        path = store.model_dir(SETTINGS.root, payload["model_id"]) / "model.pt"
        glob, atomic = predict_structures(load_cached(str(path), device()[0]), payload["structures"])
        return {"global": glob, "atomic": atomic}

    return _answer(run)


@celery.task(name=INSPECT_TASK)
def inspect_task(payload: dict[str, Any]) -> dict[str, Any]:
    return _answer(lambda: inspect(SETTINGS.root, payload["path"]))
