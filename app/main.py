"""create_app(): routers, error handlers, limits, the janitor. Imports neither torch nor
the worker (a test checks): the api image carries no torch."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import errors
from app.batching import Batcher, celery_sender
from app.janitor import Janitor
from app.limits import BodySizeLimit
from app.metrics import install_metrics
from app.predict_rpc import PredictRpc
from app.routes import api
from app.routes.page import install_page
from jobs.db import engine_for, init_db, session_factory
from jobs.queue import TaskQueue
from jobs.settings import Settings, get_settings

DESCRIPTION = """Train and serve DeePMD-style dipole / polarizability models.

1. `POST /v1/datasets` an archive of DeePMD systems → its id `ds-…`
2. `POST /v1/jobs/train` a DeePMD-kit input.json whose systems are `dataset:<id>[/<path>]`
3. poll `GET /v1/jobs/{id}` → `model_id` when it has succeeded
4. `POST /v1/models/{id}/predict` structures → dipoles / polarizabilities

Authenticate with `Authorization: Bearer <token>` (`dptensor token create --user NAME`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.root.mkdir(parents=True, exist_ok=True)
    init_db(settings.db_url)
    sessions = session_factory(settings.db_url)
    queue = TaskQueue(settings)
    # synchronous predictions: straight over the broker's Redis (jobs/rpc.py); the SQLite
    # broker (kept for comparison) has only Celery
    rpc = None if settings.sqlite_broker else PredictRpc(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        janitor = Janitor(sessions, queue, settings)
        janitor.start()
        # what starting made (modules, routes, schemas: ~150k objects) is never garbage; a
        # full collection walked it all, stopping every request ~100 ms every few seconds
        gc.freeze()
        try:
            yield
        finally:
            janitor.stop()
            if rpc is not None:
                await rpc.close()

    # FastAPI's OpenTelemetry hooks are off: /metrics is the service's telemetry, and the
    # hooks looked for a configured provider at every request
    app = FastAPI(title="dptensor", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    app.state.settings, app.state.sessions, app.state.queue = settings, sessions, queue
    app.state.engine = engine_for(settings.db_url)  # the prediction routes read with it (routes/predict.py)
    app.state.batcher = Batcher(rpc or celery_sender(queue), settings)
    errors.install(app)

    def limit_for(method: str, path: str) -> int:
        uploads = method == "POST" and path in ("/v1/datasets", "/v1/models", "/v1/jobs/spectrum")
        return settings.max_upload_bytes if uploads else settings.max_json_bytes

    app.add_middleware(BodySizeLimit, limit_for=limit_for)
    install_metrics(app, sessions, queue, settings)
    app.include_router(api)
    install_page(app)
    return app
