"""/v1/datasets: upload DeePMD systems as an archive, list, show, delete."""

from __future__ import annotations

import shutil
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from sqlalchemy import select

from app.access import owned, visible
from app.archive import Limits, extract
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.errors import Conflict
from app.schemas import ERRORS, DatasetPublic, ErrorBody
from jobs.datasets import summarize
from jobs.layout import FILES, dataset_dir, staging_dir
from jobs.tables import Dataset, Job, new_id

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERRORS)


def dataset_public(ds: Dataset) -> DatasetPublic:
    return DatasetPublic(id=ds.id, name=ds.name, reference=f"dataset:{ds.id}", created_at=ds.created_at,
                         size_bytes=ds.size_bytes, n_files=ds.n_files, systems=ds.systems)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic,
             responses={413: {"model": ErrorBody, "description": "archive larger than the upload limit"}})
def upload_dataset(
    session: SessionDep, settings: SettingsDep, user: CurrentUser,
    file: Annotated[UploadFile, File(description=".tar.gz / .tgz / .tar / .zip with one or more DeePMD systems")],
    name: Annotated[str | None, Form(max_length=300)] = None,
) -> DatasetPublic:
    """Extract (safely) and validate every system; 422 names the file and the problem.
    Nothing is stored unless the whole archive is valid."""
    root = settings.root
    ds_id = new_id("ds")
    staging = staging_dir(root, f"{ds_id}-{uuid.uuid4().hex[:6]}")
    staging.mkdir(parents=True)
    try:
        archive = staging / "upload"
        with open(archive, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        files = staging / FILES
        limits = Limits(settings.max_archive_members, settings.max_archive_bytes, settings.max_archive_file_bytes)
        extracted = extract(archive, files, limits, filename=file.filename)
        systems = summarize(files)
        archive.unlink()
        final = dataset_dir(root, ds_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ds = Dataset(id=ds_id, owner_id=user.id, name=name or file.filename or ds_id, size_bytes=extracted.total_bytes,
                 n_files=extracted.n_files, systems=systems)
    session.add(ds)
    session.commit()
    return dataset_public(ds)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep, user: CurrentUser) -> list[DatasetPublic]:
    rows = session.scalars(visible(select(Dataset), Dataset, user).order_by(Dataset.created_at.desc())).all()
    return [dataset_public(d) for d in rows]


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, session: SessionDep, user: CurrentUser) -> DatasetPublic:
    return dataset_public(owned(session, Dataset, dataset_id, user))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               responses={409: {"model": ErrorBody, "description": "a queued or running job reads it"}})
def delete_dataset(dataset_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> Response:
    ds = owned(session, Dataset, dataset_id, user)
    active = session.scalars(select(Job).where(Job.status.in_(("queued", "running")))).all()
    users = [j.id for j in active if ds.id in (j.dataset_ids or [])]
    if users:
        raise Conflict(f"dataset {ds.id} is used by active job(s) {users}; cancel them first")
    session.delete(ds)
    session.commit()
    shutil.rmtree(dataset_dir(settings.root, ds.id), ignore_errors=True)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
