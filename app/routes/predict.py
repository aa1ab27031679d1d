"""/v1/models/{id}/predict and /predict.npz: synchronous predictions, and the prediction
jobs that large ones become.

The service's hot path, kept lean: coroutines (no worker thread per request); the caller
and the model read with prebuilt statements, in the event loop on SQLite (``_read``);
requests coalesced with concurrent ones (app/batching.py) and sent to a predict worker
straight over Redis (jobs/rpc.py); each response's ``Server-Timing`` header says where
its time went (app/timing.py). This router is the first of /v1: FastAPI tries routes in
order, and the ~60 regex matches of the routes before it cost more than the rest of the
routing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import npz
from app.access import owned
from app.batching import Batcher
from app.deps import Credentials, resolve_user
from app.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable
from app.jobs import job_public, submit
from app.predict import COMPONENTS, Target, prediction_target, to_payload, units
from app.routes.models import UNAVAILABLE
from app.schemas import ERRORS, ErrorBody, JobPublic, PredictRequest, PredictResponse, TensorResult
from app.timing import Spans
from jobs.datasets import parse_ref
from jobs.errors import unwrap
from jobs.queue import TaskQueue, TaskTimeout
from jobs.settings import Settings
from jobs.tables import Dataset, ModelRecord, User
from model.errors import DataError


class _ParsedBody(Request):
    """A predict request's JSON body parsed into its PredictRequest by pydantic's own JSON
    parser: FastAPI's json.loads and then validation of the nested lists took ~40% of the
    api's time on a 192-atom request. A body that does not validate is handed over as
    plain JSON, so FastAPI reports its problems exactly as for any other route."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = PredictRequest.model_validate_json(body)
            except ValidationError:
                self._json = json.loads(body)
        return self._json


class PredictRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parsed(request: Request) -> Response:
            return await handler(_ParsedBody(request.scope, request.receive))

        return parsed


router = APIRouter(prefix="/models", tags=["models"], responses=ERRORS, route_class=PredictRoute)
P = ParamSpec("P")
T = TypeVar("T")
PREDICT_EXAMPLE = {"structures": [{"symbols": ["O", "H", "H"],
                                   "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}]}
TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {"model": ErrorBody, "description": "too many structures or atoms"}}


@router.post("/{model_id}/predict", response_model=PredictResponse, response_model_exclude_none=True,
             responses={202: {"model": JobPublic, "description": "too large to answer at once: a prediction job"},
                        **TOO_LARGE, **UNAVAILABLE})
async def predict(
    model_id: str, request: Request, creds: Credentials,
    req: Annotated[PredictRequest, Body(openapi_examples={"water molecule": {"value": PREDICT_EXAMPLE}})],
    job: Annotated[bool, Query(description="always run as a job (202), even when small")] = False,
) -> Response:
    """Global (per-frame) and per-atom tensors of each structure. Small requests answer at
    once (200); large ones, `job=true` and `system` references become a prediction job (202)
    with the same status API as trainings and a predictions.json / predictions.npz file."""
    spans = Spans(request.scope)
    state = request.app.state
    settings: Settings = state.settings
    m, structures, total_atoms, as_job = await _read(state.engine, _check, state.engine, settings, creds, model_id,
                                                     req, job)
    if as_job:  # it writes a job row and sends a message: a worker thread
        return await run_in_threadpool(_submit_job, state.sessions, settings, state.queue, creds, m, req,
                                       structures, total_atoms)
    spans.mark("check")
    answer = await _predict_now(state.batcher, settings, m.id, structures, total_atoms, req.derivatives, spans)
    born = answer.get("born") or [None] * len(answer["global"])
    committee = answer.get("committee") or [{}] * len(answer["global"])  # std and deviations of a committee
    # the worker's float lists as they are (validating 192×3 floats again cost as much as
    # encoding them), and the response encoded here: returned as a model, FastAPI would
    # validate it once more
    results = [TensorResult.model_construct(global_tensor=g, atomic_tensor=a, born_charges=z and z["z"],
                                            born_charges_std=z and z.get("z_std"),
                                            sum_rule_violation=z and z["sum_rule_violation"], **c)
               for g, a, z, c in zip(answer["global"], answer["atomic"], born, committee, strict=True)]
    out = PredictResponse.model_construct(model_id=m.id, kind=m.kind, components=COMPONENTS[m.kind],
                                          units=units(m.kind), committee_size=answer.get("committee_size", 1),
                                          results=results)
    return Response(out.model_dump_json(exclude_none=True), media_type="application/json")


async def _read(engine: Engine, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """The prediction routes' database reads. SQLite in WAL mode: in the event loop, for a
    read never waits for a writer and costs less than the hop to a worker thread; a
    database server: from a worker thread, as every other route does."""
    if engine.dialect.name == "sqlite":
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)


def _check(engine: Engine, settings: Settings, creds: HTTPAuthorizationCredentials | None, model_id: str,
           req: PredictRequest, job: bool) -> tuple[Target, list[dict[str, Any]], int, bool]:
    """The caller, the model and the structures (reads only); the last item says the request
    is to be a job (system reference, job=true, too large)."""
    with engine.connect() as conn:
        m = prediction_target(conn, settings, creds, model_id)
    if req.system is not None:
        return m, [], 0, True
    if req.derivatives and m.kind != "dipole":
        msg = f"Born charges are derivatives of a dipole; model {m.id} predicts polarizabilities"
        raise Unprocessable(msg, [("derivatives", msg)])
    structures, total_atoms = to_payload(req, m, settings)
    return m, structures, total_atoms, job or total_atoms > settings.sync_predict_max_atoms


async def _predict_now(batcher: Batcher, settings: Settings, model_id: str, structures: list[dict[str, Any]],
                       total_atoms: int, derivatives: bool, spans: Spans) -> dict[str, Any]:
    try:  # coalesced with concurrent requests for this model (app/batching.py)
        envelope, timing = await batcher.predict(model_id, {"structures": structures, "derivatives": derivatives},
                                                 len(structures), total_atoms, settings.sync_predict_timeout_s)
    except TaskTimeout as exc:
        raise ServiceUnavailable(f"{exc}; is a worker running with --queues predict?") from None
    spans.batch(timing)
    return unwrap(envelope)  # this request's own error: RemoteError (app/errors.py)


@router.post("/{model_id}/predict.npz", response_class=Response,
             responses={200: {"content": {npz.MEDIA_TYPE: {}}, "description": "global_tensor, atomic_tensor"},
                        **TOO_LARGE, **UNAVAILABLE})
async def predict_npz(
    model_id: str, request: Request, creds: Credentials,
    body: Annotated[bytes, Body(media_type=npz.MEDIA_TYPE, description="positions, types or symbols, [cell]")],
) -> Response:
    """Frames of one system as .npz in and out (app/npz.py): no nested JSON lists to encode,
    send and parse. Answered at once only: above SYNC_PREDICT_MAX_ATOMS, 413 (use a job)."""
    spans = Spans(request.scope)
    state = request.app.state
    m, structures, total_atoms = await _read(state.engine, _check_npz, state.engine, state.settings, creds,
                                             model_id, body)
    spans.mark("check")
    answer = await _predict_now(state.batcher, state.settings, m.id, structures, total_atoms, False, spans)
    return Response(npz.write_response(answer), media_type=npz.MEDIA_TYPE)


def _check_npz(engine: Engine, settings: Settings, creds: HTTPAuthorizationCredentials | None, model_id: str,
               body: bytes) -> tuple[Target, list[dict[str, Any]], int]:
    with engine.connect() as conn:
        m = prediction_target(conn, settings, creds, model_id)
    structures, total_atoms = to_payload(npz.read_request(body), m, settings)
    if total_atoms > settings.sync_predict_max_atoms:
        raise PayloadTooLarge(f"{total_atoms} atoms: at most {settings.sync_predict_max_atoms} answered at once; "
                              "send JSON with ?job=true for a prediction job")
    return m, structures, total_atoms


# --- requests that become jobs (a worker thread: they write) -------------------------------

def _submit_job(sessions: sessionmaker[Session], settings: Settings, queue: TaskQueue,
                creds: HTTPAuthorizationCredentials | None, m: Target, req: PredictRequest,
                structures: list[dict[str, Any]], total_atoms: int) -> JSONResponse:
    with sessions() as session:
        user = resolve_user(session, settings, creds)
        record = owned(session, ModelRecord, m.id, user)
        if req.system is not None:
            return _system_job(session, settings, queue, user, record, req.system, req.name)
        created = submit(session, queue, settings, user, kind="predict", name=req.name, model_id=record.id,
                         inputs={"model_id": record.id, "structures": len(structures), "atoms": total_atoms,
                                 "derivatives": req.derivatives},
                         files={"structures.json": structures}, total=len(structures))
        return _accepted(job_public(created, user.name))


def _accepted(job: JobPublic) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _system_job(session: Session, settings: Settings, queue: TaskQueue, user: User,
                m: ModelRecord, ref: str, name: str) -> JSONResponse:
    try:
        ds_id, sub = parse_ref(ref)
    except ValueError as exc:
        raise Unprocessable(str(exc), [("system", str(exc))]) from None
    ds = session.get(Dataset, ds_id)
    if ds is None or not (user.is_admin or ds.owner_id == user.id):
        raise Unprocessable(f"dataset {ds_id} not found", [("system", f"dataset {ds_id} not found")])
    system = next((s for s in ds.systems if s["path"] == (sub or ".")), None)
    if system is None:
        msg = f"no system at {sub or '.'!r} in dataset {ds_id}; it has {[s['path'] for s in ds.systems][:10]}"
        raise Unprocessable(msg, [("system", msg)])
    unknown = sorted(set(system["type_counts"]) - set(m.type_map)) if system.get("type_map") else []
    if unknown:
        err = DataError(f"element(s) {unknown} are not in the model's type_map {m.type_map}", path=ref)
        raise Unprocessable(str(err), [("system", str(err))])
    created = submit(session, queue, settings, user, kind="predict", name=name, model_id=m.id,
                     inputs={"model_id": m.id, "system": ref}, dataset_ids=[ds_id], total=system["frames"])
    return _accepted(job_public(created, user.name))

