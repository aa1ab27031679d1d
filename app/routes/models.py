"""/v1/models: trained and uploaded models; download; predict."""

from __future__ import annotations

import shutil
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from app.access import owned, visible
from app.deps import (
    CurrentUser,
    QueueDep,
    SessionDep,
    SettingsDep,
)
from app.errors import ServiceUnavailable, Unprocessable
from app.schemas import (
    ERRORS,
    ErrorBody,
    ModelPublic,
)
from jobs.layout import MODEL_FILE, model_dir, model_file, model_staging
from jobs.queue import EXPORT_TASK, INSPECT_TASK, TaskTimeout
from jobs.tables import ModelRecord, new_id

router = APIRouter(prefix="/models", tags=["models"], responses=ERRORS)
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": ErrorBody, "description": "no worker of the 'predict' queue answered in time"}}

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
