"""/v1/jobs/select: active learning with a committee model — the frames of a trajectory (an
upload or a system of a dataset) whose committee deviation falls in [lo, hi), written as an
unlabelled DeePMD system to label next (`dptensor select` as a job)."""

from __future__ import annotations

import shutil
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from app.access import owned
from app.deps import CurrentUser, QueueDep, SessionDep, SettingsDep
from app.errors import Unprocessable
from app.jobs import job_public, submit
from app.routes.spectra import trajectory_source
from app.schemas import ERRORS, ErrorBody, JobPublic
from jobs.tables import ModelRecord
from model.errors import ConfigError
from model.spectrum_pipeline import parse_request

router = APIRouter(prefix="/jobs", tags=["committees"], responses=ERRORS)

# the trajectory is read as for a spectrum of the model's kind (same readers and checks)
READ_AS = {"dipole": "ir", "polar": "raman"}


@router.post("/select", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic,
             responses={413: {"model": ErrorBody, "description": "upload larger than DPTENSOR_MAX_UPLOAD_BYTES"}})
def submit_selection(
    session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser, response: Response,
    model_id: Annotated[str, Form(description="a committee model (committee_size ≥ 2)")],
    lo: Annotated[float, Form(ge=0, description="frames with deviation ≥ lo are candidates")],
    hi: Annotated[float, Form(gt=0, description="frames with deviation ≥ hi count as failed")],
    max_frames: Annotated[int | None, Form(ge=1, description="at most this many candidates (seeded random)")] = None,
    criterion: Annotated[Literal["atomic", "global"], Form(description="devi_atomic_max or devi_global")] = "atomic",
    file: Annotated[UploadFile | None, File(description="extended XYZ, LAMMPS dump, ASE .traj (optionally .gz), "
                                                        "or a .tar.gz/.zip holding one DeePMD npy system")] = None,
    dataset_id: Annotated[str | None, Form(description="instead of a file: an uploaded dataset")] = None,
    system: Annotated[str | None, Form(description="the system's path in the dataset")] = None,
    name: Annotated[str, Form(max_length=300)] = "",
) -> JobPublic:
    """Queue a `select` job (batch queue). Its files: candidates.tar.gz (the selected frames as
    a DeePMD system: type.raw, type_map.raw, set.000/coord.npy, box.npy or nopbc),
    selection.json (counts: accurate < lo, candidates, failed ≥ hi; chosen frames; the
    histogram), histogram.csv and deviation.txt (every frame)."""
    model = owned(session, ModelRecord, model_id, user)
    if int((model.info or {}).get("committee_size", 1)) < 2:
        msg = f"model {model.id} is a single model: selection needs a committee (committee_size ≥ 2)"
        raise Unprocessable(msg, [("model_id", msg)])
    if hi <= lo:
        raise ConfigError(f"must be > lo ({lo}), got {hi}", path="hi")
    request = parse_request(READ_AS[model.kind], 1.0)
    source = trajectory_source(settings, session, user, [file] if file is not None else None, dataset_id, system,
                               request, model)
    if "trajectory" not in source.inputs and "system" not in source.inputs:
        msg = f"a selection reads one trajectory; {system!r} names {len(source.inputs['systems'])} systems"
        raise Unprocessable(msg, [("system", msg)])
    inputs = {"model_id": model.id, "lo": lo, "hi": hi, "max_frames": max_frames, "criterion": criterion,
              **source.inputs}
    try:
        job = submit(session, queue, settings, user, kind="select", inputs=inputs, model_id=model.id,
                     name=name or f"selection from {source.title}", staged=source.staged, total=source.frames,
                     dataset_ids=[source.dataset_id] if source.dataset_id else [])
    finally:
        for path in source.staged.values():
            shutil.rmtree(path.parent, ignore_errors=True)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job, user.name)
