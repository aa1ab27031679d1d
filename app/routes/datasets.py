"""/v1/datasets: upload DeePMD systems (an archive, or one HDF5 file), list, show, delete."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from sqlalchemy import select

from app.access import owned, visible
from app.archive import Extracted, Limits, extract
from app.deps import CurrentUser, SessionDep, SettingsDep
from app.errors import Conflict, PayloadTooLarge, Unprocessable
from app.schemas import ERRORS, DatasetPublic, ErrorBody
from jobs.datasets import summarize
from jobs.layout import FILES, dataset_dir, staging_dir
from jobs.tables import Dataset, Job, new_id

router = APIRouter(prefix="/datasets", tags=["datasets"], responses=ERRORS)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HDF5_SUFFIXES = (".hdf5", ".h5")


def is_hdf5(path: Path) -> bool:
    """HDF5's signature at the start or after a user block (512, 1024, 2048, … bytes)."""
    size, offset = path.stat().st_size, 0
    with open(path, "rb") as f:
        while offset + len(HDF5_SIGNATURE) <= size:
            f.seek(offset)
            if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else 2 * offset
    return False


def hdf5_name(filename: str | None) -> str:
    """The name an uploaded HDF5 file is kept under: its own base name in plain characters,
    ending in .hdf5 or .h5 (systems are referenced as '<name>#/<group>')."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    stem, suffix = base, ".hdf5"
    for s in HDF5_SUFFIXES:
        if base.lower().endswith(s):
            stem, suffix = base[: -len(s)], s
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".")[:100]
    return (stem or "data") + suffix


def place_hdf5(upload: Path, files: Path, limits: Limits, filename: str | None) -> Extracted:
    """A bare HDF5 upload (DeePMD-kit's / dpdata's deepmd/hdf5 layout) kept as one file of
    the dataset, under the per-file and total size caps of archives."""
    name = hdf5_name(filename)
    size = upload.stat().st_size
    cap = min(limits.max_file_bytes, limits.max_total_bytes)
    if size > cap:
        msg = f"{name!r} is {size} bytes; one file of a dataset may have at most {cap} bytes"
        raise PayloadTooLarge(msg, [("file", msg)])
    files.mkdir(parents=True)
    upload.rename(files / name)
    return Extracted(n_files=1, total_bytes=size)


def dataset_public(ds: Dataset) -> DatasetPublic:
    return DatasetPublic(id=ds.id, name=ds.name, reference=f"dataset:{ds.id}", created_at=ds.created_at,
                         size_bytes=ds.size_bytes, n_files=ds.n_files, systems=ds.systems)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic,
             responses={413: {"model": ErrorBody, "description": "upload larger than the upload or file limit"}})
def upload_dataset(
    session: SessionDep, settings: SettingsDep, user: CurrentUser,
    file: Annotated[UploadFile, File(description=".tar.gz / .tgz / .tar / .zip with one or more DeePMD systems, "
                                                 "or one .hdf5 / .h5 file of them (deepmd/hdf5 layout)")],
    name: Annotated[str | None, Form(max_length=300)] = None,
) -> DatasetPublic:
    """Extract (safely) and validate every system; 422 names the file and the problem.
    Nothing is stored unless the whole upload is valid. A bare HDF5 file (told by its
    content) is kept as it is; its systems are '<file>.hdf5#/<group>'."""
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
        if is_hdf5(archive):
            extracted = place_hdf5(archive, files, limits, file.filename)
            systems = summarize(files, what="the HDF5 file")
        elif (file.filename or "").lower().endswith(HDF5_SUFFIXES):
            msg = f"{file.filename!r} is not an HDF5 file (HDF5's signature is missing: damaged, or another format)"
            raise Unprocessable(msg, [("file", msg)])
        else:
            extracted = extract(archive, files, limits, filename=file.filename)
            systems = summarize(files)
        archive.unlink(missing_ok=True)  # an HDF5 upload was moved into the files
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
