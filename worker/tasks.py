"""Celery tasks: thin glue over model/ — training, prediction jobs, and the synchronous
predict / inspect calls. Shared tasks, registered on the worker's app through ``include=``
(worker.celery_app); the process state comes from worker.state."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from jobs import layout, store
from jobs.datasets import resolve_refs
from jobs.errors import answer
from jobs.queue import EXPORT_TASK, INSPECT_TASK, JOB_TASKS, PREDICT_BATCH_TASK
from jobs.resources import split_resources
from jobs.tables import Job
from model.committee import Predictor
from model.inference import committee_size
from worker import (
    metrics,
    predict_job,  # noqa: F401 - registers the prediction job's chunks
    state,
)
from worker.fanout import drive
from worker.jobrun import Outcome, run_job
from worker.predict import (
    Prediction,
    born_structures,
    export,
    inspect,
    load_cached,
    predict_requests,
)
from worker.progress import JobMonitor, clean_row, finite, report

log = logging.getLogger("dptensor.worker")


# --- training ------------------------------------------------------------------------------

def _train(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    from model.checkpoint import read_checkpoint
    from model.config import read_input
    from model.launch import train_data_parallel
    from model.train import TrainProgress, train

    st = state.current()
    inputs, resources = split_resources(job.inputs)
    members = int(inputs.pop("committee", 0) or 0)  # validated by the api
    resolved = resolve_refs(inputs, st.settings.root)
    (folder / "input.resolved.json").write_text(json.dumps(resolved, indent=1))
    if members:
        return _train_committee(job, folder, monitor, jlog, resolved, members)
    parsed = read_input(resolved)  # once in this process: train() takes it as it is
    latest = folder / f"{parsed.config.training.save_ckpt}.pt"
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
        report(st.sessions, job.id, st.worker_id, **values)

    device = st.device()[0]
    if resources.nproc > 1:  # the ranks run beside this process; cancel reaches them through rank 0
        jlog.info("data-parallel training: %d ranks (%s)", resources.nproc,
                  "one per GPU" if device.startswith("cuda") else "CPU, gloo")
        result = train_data_parallel(parsed, folder, nproc=resources.nproc, restart=restart,
                                     device="cuda" if device.startswith("cuda") else device,
                                     on_progress=progress, should_stop=monitor.should_stop,
                                     progress_every_s=st.settings.progress_every_s)
    else:
        result = train(parsed, folder, restart=restart, device=device, on_progress=progress,
                       should_stop=monitor.should_stop, progress_every_s=st.settings.progress_every_s)
    metrics = {k: finite(v) for k, v in result.metrics.items()}
    if result.cancelled:
        return Outcome(monitor.stopped(), {"steps_done": result.steps_done, "checkpoint": latest.name})
    ck = read_checkpoint(result.model_path)
    with st.sessions() as session:
        record = store.register_trained_model(session, st.settings.root, job, result.model_path, ck, metrics)
    jlog.info("registered model %s", record.id)
    return Outcome("succeeded", {"model_id": record.id, "steps_done": result.steps_done, "metrics": metrics},
                   model_id=record.id)


def _train_committee(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger, resolved: dict[str, Any],
                     members: int) -> Outcome:
    """K members in member-<i>/ of the job folder (each with its lcurve.out), progress
    summed over members; the committee file is registered as one model."""
    import time

    from model.checkpoint import model_summary
    from model.committee import Committee, load_predictor
    from model.committee_train import train_committee
    from model.train import TrainProgress

    st = state.current()
    steps: dict[int, int] = {}
    start = time.monotonic()

    def progress(member: int, p: TrainProgress) -> None:
        steps[member] = p.step
        done, total = sum(steps.values()), p.numb_steps * members
        rate = done / max(time.monotonic() - start, 1e-9)
        values: dict[str, Any] = {"step": done, "total": total, "rate": finite(rate),
                                  "eta_s": finite((total - done) / rate) if rate > 0 else None}
        row = clean_row(p.row)
        if row is not None:
            values["last_row"] = {"member": member, **row}
            jlog.info("member %d: step %d/%d  %.1f steps/s  %s", member, p.step, p.numb_steps, p.steps_per_s,
                      "  ".join(f"{k} {v:.3e}" for k, v in row.items() if v is not None))
        report(st.sessions, job.id, st.worker_id, **values)

    result = train_committee(resolved, folder, members, device=st.device()[0], on_progress=progress,
                             should_stop=monitor.should_stop, resume=True)
    jlog.info("committee of %d trained (%d at once)", members, result.concurrent)
    if result.cancelled:
        return Outcome(monitor.stopped(), {"steps_done": [m.steps_done for m in result.members]})
    committee = load_predictor(result.model_path)
    assert isinstance(committee, Committee)
    summary = {**model_summary(committee.member(0)), "committee_size": committee.size}
    metrics = {k: finite(v) for k, v in result.metrics.items()}
    with st.sessions() as session:
        record = store.register_trained_model(session, st.settings.root, job, result.model_path, summary, metrics)
    jlog.info("registered committee model %s", record.id)
    return Outcome("succeeded", {"model_id": record.id, "committee_size": members, "metrics": metrics,
                                 "member_metrics": [{k: finite(v) for k, v in m.metrics.items()}
                                                    for m in result.members],
                                 "steps_done": [m.steps_done for m in result.members]}, model_id=record.id)


@shared_task(name=JOB_TASKS["train"][0], bind=True)
def train_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, _train)


# --- prediction jobs: in chunks of frames (worker/predict_job.py, worker/fanout.py) ---------

@shared_task(name=JOB_TASKS["predict"][0], bind=True)
def predict_job_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, drive)


def _request_answer(model: Predictor, req: dict[str, Any], res: Prediction | Exception,
                    arrays: bool) -> dict[str, Any]:
    """One request's result from its share of the coalesced pass (or its own error); its
    tensors as arrays, or as lists (JSON: a Celery result)."""
    if isinstance(res, Exception):
        raise res
    glob, atomic = (res[0], res[1]) if arrays else (res[0].tolist(), [a.tolist() for a in res[1]])
    out: dict[str, Any] = {"global": glob, "atomic": atomic, "committee": res[2],
                           "committee_size": committee_size(model)}
    if req.get("derivatives"):
        out["born"] = born_structures(model, req["structures"])
    return out


def run_batch(payload: dict[str, Any], *, arrays: bool = False) -> dict[str, Any]:
    """Requests coalesced by the api (app/batching.py): {"model_id", "requests": [{"structures",
    "derivatives"}, …], "sent_at"} → {"ok": True, "answers": [one envelope per request
    (jobs.errors.answer): its result, or its own error — never a batch-mate's], "timing":
    {"picked", "model_s", "done"}} (wall clock; the api's Server-Timing header, app/timing.py).
    Sent over Redis (worker/sync_predict.py; ``arrays``: each answer's global [n, dim] and
    atomic [nat, dim] tensors as float64 arrays) or, on the SQLite broker, as a Celery task
    (lists)."""
    picked = time.time()
    st = state.current()
    if isinstance(payload.get("sent_at"), int | float):
        metrics.QUEUE_WAIT.observe(max(0.0, picked - payload["sent_at"]))
    requests: list[dict[str, Any]] = payload["requests"]
    metrics.BATCH_REQUESTS.observe(len(requests))
    metrics.BATCH_FRAMES.observe(sum(len(r["structures"]) for r in requests))
    model_s = 0.0

    def run() -> dict[str, Any]:
        nonlocal model_s
        model = load_cached(str(layout.model_file(st.settings.root, payload["model_id"])), st.device()[0],
                            st.settings.max_search_candidates)
        t0 = time.perf_counter()
        results = predict_requests(model, [r["structures"] for r in requests])
        model_s = time.perf_counter() - t0
        metrics.COMPUTE.observe(model_s)
        answers: list[dict[str, Any]] = []
        for req, res in zip(requests, results, strict=True):
            envelope = answer(partial(_request_answer, model, req, res, arrays), log)
            answers.append(envelope)
            metrics.REQUESTS.labels("ok" if envelope["ok"] else "error").inc()
            if envelope["ok"]:
                metrics.FRAMES.labels("sync").inc(len(req["structures"]))
        return {"answers": answers}

    out = answer(run, log)  # a model that cannot load: the same error for every request
    if not out["ok"]:
        metrics.REQUESTS.labels("error").inc(len(requests))
    return {**out, "timing": {"picked": picked, "model_s": model_s, "done": time.time()}}


@shared_task(name=PREDICT_BATCH_TASK)
def predict_batch_task(payload: dict[str, Any]) -> dict[str, Any]:
    return run_batch(payload)


@shared_task(name=INSPECT_TASK)
def inspect_task(payload: dict[str, Any]) -> dict[str, Any]:
    return answer(lambda: inspect(state.current().settings.root, payload["path"]), log)


@shared_task(name=EXPORT_TASK)
def export_task(payload: dict[str, Any]) -> dict[str, Any]:
    return answer(lambda: export(state.current().settings.root, payload["path"], payload["format"]), log)
