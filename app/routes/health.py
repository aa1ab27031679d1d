"""/v1/health: liveness (the process answers) and readiness (database, broker, workers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import QueueDep, SessionDep, SettingsDep
from app.schemas import Check, Live, Ready, WorkerPublic
from jobs.queue import QUEUES, broker_kind
from jobs.store import live_workers

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Live)
def live() -> Live:
    return Live()


@router.get("/ready", response_model=Ready,
            responses={503: {"model": Ready, "description": "not ready: see which check failed"}})
def ready(session: SessionDep, settings: SettingsDep, queue: QueueDep) -> Ready | JSONResponse:
    """Ready when the database and the broker answer and at least one worker heartbeats.
    Workers report their queues and device (GPU name or CPU)."""
    try:
        session.execute(text("SELECT 1"))
        db = Check(ok=True)
    except Exception as exc:  # any driver error means "not ready", reported as such
        db = Check(ok=False, detail=str(exc).splitlines()[0])
    try:
        queue.ping_broker()
        broker = Check(ok=True, detail=broker_kind(settings))
    except Exception as exc:
        broker = Check(ok=False, detail=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    workers = [WorkerPublic.model_validate(w) for w in live_workers(session, settings.stale_after_s)] if db.ok else []
    served = {q for w in workers for q in w.queues}
    body = Ready(ready=db.ok and broker.ok and bool(workers), database=db, broker=broker, workers=workers,
                 queues_without_worker=[q for q in QUEUES if q not in served],
                 gpu=any(w.gpu for w in workers))
    if not body.ready:
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    return body
