"""/v1/models: trained and uploaded models; download; predict."""

from __future__ import annotations

import shutil
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, File, Form, Query, Response, UploadFile, status
from fastapi.responses import FileResponse, JSONResponse
from sqlalchemy import select

from app import npz
from app.access import owned, visible
from app.deps import BatcherDep, CurrentUser, QueueDep, SessionDep, SettingsDep
from app.errors import PayloadTooLarge, ServiceUnavailable, Unprocessable
from app.jobs import job_public, submit
from app.predict import COMPONENTS, to_payload, units
from app.schemas import (
    ERRORS,
    ErrorBody,
    JobPublic,
    ModelPublic,
    PredictRequest,
    PredictResponse,
    TensorResult,
)
from jobs.datasets import parse_ref
from jobs.errors import unwrap
from jobs.layout import MODEL_FILE, model_dir, model_file, model_staging
from jobs.queue import EXPORT_TASK, INSPECT_TASK, TaskTimeout
from jobs.tables import Dataset, ModelRecord, new_id
from model.errors import DataError

router = APIRouter(prefix="/models", tags=["models"], responses=ERRORS)
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody, "description": "no worker of the 'predict' queue answered in time"}}

PREDICT_EXAMPLE = {"structures": [{"symbols": ["O", "H", "H"],
                                   "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}]}


def model_public(m: ModelRecord) -> ModelPublic:
    out = ModelPublic.model_validate(m)
    out.committee_size = int((m.info or {}).get("committee_size", 1))
    return out


@router.get("", response_model=list[ModelPublic])
def list_models(session: SessionDep, user: CurrentUser) -> list[ModelPublic]:
    rows = session.scalars(visible(select(ModelRecord), ModelRecord, user).order_by(ModelRecord.created_at.desc()))
    return [model_public(m) for m in rows]


@router.get("/{model_id}", response_model=ModelPublic)
def get_model(model_id: str, session: SessionDep, user: CurrentUser) -> ModelPublic:
    return model_public(owned(session, ModelRecord, model_id, user))


@router.get("/{model_id}/download", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "checkpoint (.pt)"}})
def download_model(model_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> FileResponse:
    """The checkpoint: loadable with `dptensor predict -m` or torch.load(weights_only=True)."""
    m = owned(session, ModelRecord, model_id, user)
    return FileResponse(model_file(settings.root, m.id), filename=f"{m.id}.pt",
                        media_type="application/octet-stream")


EXPORT_FORMATS = {"dp": "application/x-hdf5", "yaml": "application/yaml"}
FROZEN_UPLOAD = ("a frozen TorchScript .pth carries code, not weights, and is never loaded here; convert it "
                 "with DeePMD-kit first: `dp convert-backend frozen.pth model.dp`, then upload model.dp")


@router.get("/{model_id}/export", response_class=FileResponse, responses={
    **UNAVAILABLE, 200: {"content": {k: {} for k in EXPORT_FORMATS.values()},
                         "description": "DeePMD-kit serialized model"}})
def export_model(model_id: str, session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser,
                 format: Annotated[Literal["dp", "yaml"], Query(description="dp (HDF5) or yaml")] = "dp",
                 ) -> FileResponse:
    """The model as DeePMD-kit 3.x's serialized model (written once by a worker): `dp
    convert-backend model.dp model.pth` makes a frozen model for `dp test`,
    DeepDipole/DeepPolar and LAMMPS."""
    m = owned(session, ModelRecord, model_id, user)
    relative = model_file(settings.root, m.id).relative_to(settings.root)
    answer = _call(queue, EXPORT_TASK, {"path": str(relative), "format": format}, settings.model_inspect_timeout_s)
    path = (settings.root / answer["path"]).resolve()
    if settings.root.resolve() not in path.parents:
        raise ServiceUnavailable("the worker answered with a path outside the data directory")
    return FileResponse(path, filename=f"{m.id}.{format}", media_type=EXPORT_FORMATS[format])


def _call(queue: QueueDep, name: str, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    try:
        return queue.call(name, payload, timeout_s)  # a worker's error: RemoteError (app/errors.py)
    except TaskTimeout as exc:
        raise ServiceUnavailable(f"{exc}; is a worker running with --queues predict?") from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelPublic, responses=UNAVAILABLE)
def upload_model(
    session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser,
    file: Annotated[UploadFile, File(description="a dptensor checkpoint, a DeePMD-kit (PyTorch) checkpoint "
                                                 "/ slim checkpoint, or DeePMD-kit's serialized model "
                                                 "(.dp / .yaml)")],
    name: Annotated[str | None, Form(max_length=300)] = None,
) -> ModelPublic:
    """A worker loads the file (weights only, never code) to check it and read its kind,
    type_map and sel_type; the api itself never unpickles uploads."""
    suffix = PurePosixPath(file.filename or "").suffix.lower()
    if suffix == ".pth":
        raise Unprocessable(FROZEN_UPLOAD, [("file", FROZEN_UPLOAD)])
    # a .dp/.yaml is stored as uploaded; the worker reads it and writes MODEL_FILE beside it
    stored = f"upload{suffix}" if suffix in (".dp", ".yaml", ".yml") else MODEL_FILE
    model_id = new_id("mdl")
    staging = model_staging(settings.root, model_id)
    staging.mkdir(parents=True)
    try:
        with open(staging / stored, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        info = _call(queue, INSPECT_TASK, {"path": str((staging / stored).relative_to(settings.root))},
                     settings.model_inspect_timeout_s)
        staging.rename(model_dir(settings.root, model_id))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    s = info["summary"]
    record = ModelRecord(id=model_id, owner_id=user.id, name=name or file.filename or model_id, kind=s["kind"],
                         type_map=s["type_map"], sel_type=s["sel_type"],
                         info={k: s[k] for k in ("rcut", "sel", "precision", "format", "committee_size") if k in s},
                         metrics=info.get("metrics") or {}, source="uploaded", source_job_id=None,
                         size_bytes=model_file(settings.root, model_id).stat().st_size)
    session.add(record)
    session.commit()
    return model_public(record)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_model(model_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> Response:
    m = owned(session, ModelRecord, model_id, user)
    session.delete(m)
    session.commit()
    shutil.rmtree(model_dir(settings.root, m.id), ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{model_id}/predict", response_model=PredictResponse, response_model_exclude_none=True,
             responses={202: {"model": JobPublic, "description": "too large to answer at once: a prediction job"},
                        413: {"model": ErrorBody, "description": "too many structures or atoms"}, **UNAVAILABLE})
def predict(
    model_id: str, session: SessionDep, settings: SettingsDep, queue: QueueDep, batcher: BatcherDep,
    user: CurrentUser, req: Annotated[PredictRequest, Body(openapi_examples={"water molecule": {"value": PREDICT_EXAMPLE}})],
    job: Annotated[bool, Query(description="always run as a job (202), even when small")] = False,
) -> PredictResponse | JSONResponse:
    """Global (per-frame) and per-atom tensors of each structure. Small requests answer at
    once (200); large ones, `job=true` and `system` references become a prediction job (202)
    with the same status API as trainings and a predictions.json / predictions.npz file."""
    m = owned(session, ModelRecord, model_id, user)
    if req.system is not None:
        return _system_job(session, settings, queue, user, m, req.system, req.name)
    if req.derivatives and m.kind != "dipole":
        msg = f"Born charges are derivatives of a dipole; model {m.id} predicts polarizabilities"
        raise Unprocessable(msg, [("derivatives", msg)])
    structures, total_atoms = to_payload(req, m, settings)
    if job or total_atoms > settings.sync_predict_max_atoms:
        created = submit(session, queue, settings, user, kind="predict", name=req.name, model_id=m.id,
                         inputs={"model_id": m.id, "structures": len(structures), "atoms": total_atoms,
                                 "derivatives": req.derivatives},
                         files={"structures.json": structures}, total=len(structures))
        return _accepted(job_public(created, user.name))
    answer = _predict_now(batcher, settings, m, structures, total_atoms, req.derivatives)
    born = answer.get("born") or [None] * len(answer["global"])
    committee = answer.get("committee") or [{}] * len(answer["global"])  # std and deviations of a committee
    results = [TensorResult(global_tensor=g, atomic_tensor=a, born_charges=z and z["z"],
                            born_charges_std=z and z.get("z_std"), sum_rule_violation=z and z["sum_rule_violation"],
                            **c)
               for g, a, z, c in zip(answer["global"], answer["atomic"], born, committee, strict=True)]
    return PredictResponse(model_id=m.id, kind=m.kind, components=COMPONENTS[m.kind], units=units(m.kind),
                           committee_size=answer.get("committee_size", 1), results=results)


def _predict_now(batcher: BatcherDep, settings: SettingsDep, m: ModelRecord, structures: list[dict[str, Any]],
                 total_atoms: int, derivatives: bool) -> dict[str, Any]:
    try:  # coalesced with concurrent requests for this model (app/batching.py)
        envelope = batcher.predict(m.id, {"structures": structures, "derivatives": derivatives},
                                   len(structures), total_atoms, settings.sync_predict_timeout_s)
    except TaskTimeout as exc:
        raise ServiceUnavailable(f"{exc}; is a worker running with --queues predict?") from None
    return unwrap(envelope)  # this request's own error: RemoteError (app/errors.py)


@router.post("/{model_id}/predict.npz", response_class=Response,
             responses={200: {"content": {npz.MEDIA_TYPE: {}}, "description": "global_tensor, atomic_tensor"},
                        413: {"model": ErrorBody, "description": "too many structures or atoms"}, **UNAVAILABLE})
def predict_npz(
    model_id: str, session: SessionDep, settings: SettingsDep, batcher: BatcherDep, user: CurrentUser,
    body: Annotated[bytes, Body(media_type=npz.MEDIA_TYPE, description="positions, types or symbols, [cell]")],
) -> Response:
    """Frames of one system as .npz in and out (app/npz.py): no nested JSON lists to encode,
    send and parse. Answered at once only: above SYNC_PREDICT_MAX_ATOMS, 413 (use a job)."""
    m = owned(session, ModelRecord, model_id, user)
    structures, total_atoms = to_payload(npz.read_request(body), m, settings)
    if total_atoms > settings.sync_predict_max_atoms:
        raise PayloadTooLarge(f"{total_atoms} atoms: at most {settings.sync_predict_max_atoms} answered at once; "
                              "send JSON with ?job=true for a prediction job")
    answer = _predict_now(batcher, settings, m, structures, total_atoms, False)
    return Response(npz.write_response(answer), media_type=npz.MEDIA_TYPE)


def _accepted(job: JobPublic) -> JSONResponse:
    return JSONResponse(job.model_dump(mode="json"), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


def _system_job(session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser,
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

