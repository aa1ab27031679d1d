"""/v1/jobs: submit a training, follow any job (status, progress, learning curve, logs),
cancel it, download its files."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.responses import FileResponse, PlainTextResponse
from sqlalchemy import func, select, update

from app.access import owned, visible
from app.deps import CurrentUser, QueueDep, SessionDep, SettingsDep
from app.errors import Conflict, NotFound
from app.jobs import deleted_models, job_public, lcurve_file, read_lcurve, submit
from app.schemas import (
    ERRORS,
    JSON_ERRORS,
    CancelPublic,
    ChunkPublic,
    ErrorBody,
    FileInfo,
    JobList,
    JobPublic,
    LcurvePublic,
    Problem,
    Progress,
    TrainCheck,
)
from jobs import chunks
from jobs.datasets import check_refs, training_systems
from jobs.layout import job_dir
from jobs.resources import split_resources
from jobs.settings import Settings
from jobs.tables import TERMINAL, Dataset, Job, User, utcnow
from model.config import InputConfig, parse_with_notes
from model.errors import ConfigError
from model.keys import MAX_COMMITTEE_MEMBERS as MAX_MEMBERS
from model.sizing import TRAINING_BYTES_PER_PARAMETER, count_parameters, training_activation_bytes

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERRORS)

PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

TRAIN_EXAMPLE = {
    "model": {"type_map": ["O", "H"], "atom_exclude_types": [1],
              "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 3.8, "rcut": 4.0,
                             "neuron": [25, 50, 100], "axis_neuron": 6, "type_one_side": True},
              "fitting_net": {"type": "dipole", "neuron": [100, 100, 100]}},
    "learning_rate": {"type": "exp", "start_lr": 0.01, "decay_steps": 5000},
    "loss": {"type": "tensor", "pref": 1.0, "pref_atomic": 1.0},
    "training": {"training_data": {"systems": ["dataset:ds-0123456789ab/dipole/training_data_reformat"],
                                   "batch_size": "auto"},
                 "validation_data": {"systems": ["dataset:ds-0123456789ab/dipole/validation_data_reformat"],
                                     "batch_size": 1, "numb_btch": 3},
                 "numb_steps": 2000, "disp_freq": 100, "save_freq": 500},
}


def _size_problems(cfg: InputConfig, settings: Settings) -> list[tuple[str, str]]:
    """Job-size caps (settings), checked before a worker allocates anything."""
    problems = []
    if cfg.training.numb_steps > settings.max_train_steps:
        problems.append(("training.numb_steps", f"{cfg.training.numb_steps} steps: at most "
                                                f"{settings.max_train_steps} (DPTENSOR_MAX_TRAIN_STEPS)"))
    sel = cfg.model.descriptor.sel
    ntypes = len(cfg.model.type_map) if cfg.model.type_map else (len(sel) if isinstance(sel, list) else 1)
    n = count_parameters(cfg.model, ntypes)
    if n > settings.max_model_parameters:
        gb = n * TRAINING_BYTES_PER_PARAMETER / 1e9
        problems.append(("model", f"the descriptor and fitting_net neuron sizes give {n:,} parameters "
                                  f"(~{gb:,.1f} GB to train): at most {settings.max_model_parameters:,} "
                                  "(DPTENSOR_MAX_MODEL_PARAMETERS)"))
    return problems


def _activation_problem(cfg: InputConfig, systems: list[dict[str, Any]], settings: Settings
                        ) -> tuple[str, str] | None:
    """A training step's activations (model/sizing.py) over the cap, for the largest batch of
    the training systems; not checked for sel "auto" (the neighbours come from the data)."""
    sel, spec = cfg.model.descriptor.sel, cfg.training.training_data.batch_size
    if not isinstance(sel, list) or not systems:
        return None
    if isinstance(spec, str):  # "auto[:N]": frames of at least N atoms (model/batching.py)
        target = int(spec.split(":", 1)[1]) if ":" in spec else 32
        sizes = [max(1, math.ceil(target / s["atoms"])) * s["atoms"] for s in systems]
    else:  # one size for all, or per system: the largest for each (an upper estimate)
        frames = spec if isinstance(spec, int) else max(spec)
        sizes = [frames * s["atoms"] for s in systems]
    atoms = max(sizes)
    need = training_activation_bytes(cfg.model, sum(sel), atoms)
    if need <= settings.max_train_activation_bytes:
        return None
    return ("training.training_data.batch_size",
            f"a batch of {atoms:,} atoms with sel {sel} (up to {sum(sel):,} neighbours each) and embedding "
            f"{cfg.model.descriptor.neuron} needs ~{need / 2**30:,.1f} GiB of activations per training step: "
            f"at most {settings.max_train_activation_bytes / 2**30:,.1f} GiB (DPTENSOR_MAX_TRAIN_ACTIVATION_BYTES); "
            "use a smaller batch_size, sel or neuron")


def committee_size(raw: dict[str, Any]) -> int:
    """The optional top-level "committee": K of a training request (0 when absent)."""
    value = raw.get("committee")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MEMBERS:
        raise ConfigError(f"must be an integer from 1 to {MAX_MEMBERS} (members of the committee), got {value!r}",
                          path="committee")
    return value


def validate_train_input(raw: dict[str, Any], session: SessionDep, user: User,
                         settings: Settings) -> tuple[InputConfig, list[str], list[str]]:
    """The library's own schema, the job-size caps and dataset references. Returns (the
    config, its notes on ignored keys, dataset ids). ``resources`` (ranks asked for) is
    checked here and is not part of the input.json."""
    raw, _ = split_resources(raw, settings.max_train_nproc)
    cfg, notes = parse_with_notes(raw, InputConfig)
    problems = [(f"training.{key}", "must be a plain file name (it is written in the job folder)")
                for key in ("disp_file",) if not PLAIN_NAME.match(getattr(cfg.training, key))]
    problems += _size_problems(cfg, settings)
    if problems:
        raise ConfigError.from_problems(problems)

    def lookup(ds_id: str) -> list[dict[str, Any]] | None:
        ds = session.get(Dataset, ds_id)
        return ds.systems if ds is not None and (user.is_admin or ds.owner_id == user.id) else None

    used = check_refs(raw, cfg.model.fitting_net.type, cfg.model.type_map, lookup)
    problem = _activation_problem(cfg, training_systems(raw, lookup), settings)
    if problem is not None:
        raise ConfigError.from_problems([problem])
    return cfg, notes, used


@router.post("/train", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def submit_training(
    session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser, response: Response,
    input_json: Annotated[dict[str, Any], Body(
        description="A DeePMD-kit input.json. training_data/validation_data systems refer to uploaded "
                    "datasets: 'dataset:<id>' (all its systems) or 'dataset:<id>/<path>'. An extra key "
                    "'resources': {'nproc': N} trains with N data-parallel ranks on the worker's host.",
        openapi_examples={"water dipole": {"value": TRAIN_EXAMPLE}})],
    name: Annotated[str, Query(max_length=300)] = "",
) -> JobPublic:
    """Validate input.json with the model library's rules (422 lists each problem with its JSON
    path; ignored DeePMD-kit keys come back as warnings) and queue the training. A top-level
    `"committee": K` trains K members with different seeds (weights and batch order) and
    registers them as one committee model; each member's learning curve is
    GET /v1/jobs/{id}/lcurve?member=i."""
    members = committee_size(input_json)
    body = {k: v for k, v in input_json.items() if k != "committee"}
    cfg, notes, used = validate_train_input(body, session, user, settings)
    job = submit(session, queue, settings, user, kind="train", inputs=input_json, name=name,
                 files={"input.json": split_resources(body)[0]}, warnings=notes, dataset_ids=used,
                 total=cfg.training.numb_steps * (members or 1))
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job, user.name)


@router.post("/train/check", response_model=TrainCheck)
def check_training(
    session: SessionDep, settings: SettingsDep, user: CurrentUser,
    input_json: Annotated[dict[str, Any], Body(openapi_examples={"water dipole": {"value": TRAIN_EXAMPLE}})],
) -> TrainCheck:
    """Validate input.json exactly as POST /v1/jobs/train does, without starting anything:
    200 with `valid` and the problems (JSON path + message) instead of a 422 (for editors
    that check while the user types)."""
    try:
        committee_size(input_json)
        body = {k: v for k, v in input_json.items() if k != "committee"}
        _, notes, used = validate_train_input(body, session, user, settings)
    except ConfigError as exc:
        problems = [Problem(loc=p or "(document)", msg=m) for p, m in exc.problems]
        return TrainCheck(valid=False, problems=problems, warnings=[], dataset_ids=[])
    return TrainCheck(valid=True, problems=[], warnings=notes, dataset_ids=used)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep, user: CurrentUser,
    kind: Literal["train", "predict", "spectrum"] | None = None,
    status_: Annotated[Literal["queued", "running", "succeeded", "failed", "cancelled"] | None,
                       Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    query = visible(select(Job, User.name).join(User, User.id == Job.owner_id), Job, user)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status_ is not None:
        query = query.where(Job.status == status_)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.execute(query.order_by(Job.created_at.desc()).limit(limit).offset(offset)).all()
    deleted = deleted_models(session, [job for job, _ in rows])
    return JobList(items=[job_public(job, owner, deleted) for job, owner in rows], total=total)


def _job_and_owner(session: SessionDep, job_id: str, user: User) -> tuple[Job, str]:
    job = owned(session, Job, job_id, user)
    owner = user.name if job.owner_id == user.id else session.get(User, job.owner_id).name  # type: ignore[union-attr]
    return job, owner


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep, user: CurrentUser) -> JobPublic:
    job, owner = _job_and_owner(session, job_id, user)
    return job_public(job, owner, deleted_models(session, [job]))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=CancelPublic,
             responses={409: {"model": ErrorBody, "description": "the job has already finished"}})
def cancel_job(job_id: str, session: SessionDep, user: CurrentUser) -> CancelPublic:
    """A queued job is cancelled at once; a running one stops cooperatively at its next
    step (a training writes a checkpoint first) — poll the job for status 'cancelled'. A job
    running in chunks: the running chunks stop at their next step, the queued ones return
    without computing when a worker takes them."""
    job = owned(session, Job, job_id, user)
    if job.status in TERMINAL:
        raise Conflict(f"job {job.id} has already {job.status}")
    session.execute(update(Job).where(Job.id == job.id, Job.status == "queued")
                    .values(status="cancelled", cancel_requested=True, finished_at=utcnow()))
    session.execute(update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True))
    session.commit()
    session.refresh(job)
    return CancelPublic(id=job.id, status=job.status, cancel_requested=job.cancel_requested)


def _lcurve_path(settings: Settings, job: Job, member: int | None) -> Path | None:
    """The learning-curve file of a training (a committee's: member ``member``, default 0);
    404 for a member the training does not have."""
    members = int(job.inputs.get("committee") or 0) if job.kind == "train" else 0
    if member is not None and member >= max(members, 1):
        raise NotFound(f"job {job.id} has no member {member}" + (f" (it trains {members})" if members else
                                                                 " (not a committee training)"))
    return lcurve_file(settings.root, job, member)


MEMBER = Query(ge=0, description="a committee training's member (default 0)")


@router.get("/{job_id}/chunks", response_model=list[ChunkPublic])
def get_chunks(job_id: str, session: SessionDep, user: CurrentUser) -> list[ChunkPublic]:
    """The chunks of a prediction or spectrum job that runs over several batch workers (one
    per trajectory, or per range of frames): status, attempts, worker, progress. Empty
    until the job has started (and for other jobs)."""
    job = owned(session, Job, job_id, user)
    return [ChunkPublic(index=c.index, label=c.label, status=c.status, attempt=c.attempt,
                        worker_id=c.worker_id, started_at=c.started_at,
                        finished_at=c.finished_at, result=c.result, error=c.error,
                        progress=Progress(step=c.step, total=c.total, unit="frames", rate=c.rate))
            for c in chunks.rows_of(session, job.id)]


@router.get("/{job_id}/lcurve", response_model=LcurvePublic)
def get_lcurve(
    job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser,
    after: Annotated[int | None, Query(ge=-1, description="only the rows of later steps (a follower "
                                                         "sends the last step it has)")] = None,
    member: Annotated[int | None, MEMBER] = None,
) -> LcurvePublic:
    """The learning curve (lcurve.out) as JSON; grows while the training runs. A committee
    training has one per member (`member`). `file` and `download` name the file itself."""
    job = owned(session, Job, job_id, user)
    path = _lcurve_path(settings, job, member)
    curve = read_lcurve(path)
    if after is not None:
        curve.rows = [r for r in curve.rows if (r["step"] or 0) > after]
    if path is not None and path.is_file():
        curve.file = path.name
        curve.download = f"/v1/jobs/{job.id}/lcurve/file" + (f"?member={member}" if member is not None else "")
    return curve


@router.get("/{job_id}/lcurve/file", response_class=FileResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "the learning-curve file as written"}})
def download_lcurve(job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser,
                    member: Annotated[int | None, MEMBER] = None) -> FileResponse:
    """The learning-curve file itself (training.disp_file), a committee's per member."""
    job = owned(session, Job, job_id, user)
    path = _lcurve_path(settings, job, member)
    if path is None or not path.is_file():
        what = "is not a training" if job.kind != "train" else "has written no learning curve yet"
        raise NotFound(f"job {job.id} {what}")
    name = f"{job.id}-{'' if member is None else f'member-{member}-'}{path.name}"
    return FileResponse(path, media_type="text/plain", filename=name)


@router.get("/{job_id}/logs", response_class=PlainTextResponse,
            responses={**JSON_ERRORS, 200: {"content": {"text/plain": {}}, "description": "the job's log"}})
def get_logs(job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser,
             tail: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> PlainTextResponse:
    job = owned(session, Job, job_id, user)
    path = job_dir(settings.root, job.id) / "job.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    if tail is not None:
        text = "\n".join(text.splitlines()[-tail:]) + "\n"
    return PlainTextResponse(text)


def _files(settings: SettingsDep, job: Job) -> dict[str, int]:
    folder = job_dir(settings.root, job.id)
    out: dict[str, int] = {}
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.resolve().parent == folder.resolve():
                out[p.name] = p.stat().st_size
    return out


@router.get("/{job_id}/files", response_model=list[FileInfo])
def list_files(job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> list[FileInfo]:
    """input.json, job.log, lcurve.out, checkpoints (model.ckpt.pt = the newest), model.pt,
    predictions.json / predictions.npz."""
    job = owned(session, Job, job_id, user)
    return [FileInfo(name=n, size_bytes=s) for n, s in _files(settings, job).items()]


@router.get("/{job_id}/files/{name}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}})
def download_file(job_id: str, name: str, session: SessionDep, settings: SettingsDep,
                  user: CurrentUser) -> FileResponse:
    job = owned(session, Job, job_id, user)
    if name not in _files(settings, job):  # only listed names: no path tricks
        raise NotFound(f"job {job.id} has no file {name!r}")
    path = (job_dir(settings.root, job.id) / name).resolve()
    return FileResponse(path, filename=name, media_type="application/octet-stream")
