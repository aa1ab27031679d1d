"""/v1/jobs/spectrum: IR / Raman spectra of uploaded MD trajectories (or of a DeePMD system of
an uploaded dataset); the spectrum of a finished job as JSON or CSV.

The trajectory is checked here with the model library's own readers (numpy + ASE, no
torch): options, model kind, elements against the model's type_map, atom counts and
finite coordinates. Frames up to CHECK_ATOM_FRAMES (frames × atoms) are read now; a longer
trajectory's remaining frames are checked by the worker with the same code (the job
then fails with the same message, naming the frame)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile, status
from fastapi.responses import FileResponse

from app.access import owned
from app.archive import Limits, extract
from app.deps import CurrentUser, QueueDep, SessionDep, SettingsDep
from app.errors import Conflict, NotFound, Unprocessable
from app.jobs import job_public, submit
from app.schemas import ERRORS, ErrorBody, JobPublic, SpectrumPublic
from jobs.layout import dataset_files, job_dir, staging_dir
from jobs.layout import shown as layout_shown
from jobs.settings import Settings
from jobs.tables import Dataset, Job, ModelRecord, User
from model.data import find_systems
from model.errors import ConfigError, DataError
from model.spectrum_options import OPTION_HELP, option_schema
from model.spectrum_pipeline import (
    SpectrumRequest,
    check_elements,
    check_model_kind,
    check_plan,
    load_frames,
    parse_request,
)
from model.trajectory import detect_format

router = APIRouter(prefix="/jobs", tags=["spectra"], responses=ERRORS)

CHECK_ATOM_FRAMES = 2_000_000  # frames × atoms read at submission (≈ 1 s of ASE extxyz parsing)
ARCHIVES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")
SUFFIX = {"extxyz": ".xyz", "lammps-dump-text": ".lammpstrj", "traj": ".traj"}
OPTIONS_HELP = ("JSON object, every key optional (one schema with the CLI and the page: GET "
                "/v1/jobs/spectrum/options; formulas and units: docs/spectra.md): "
                + "; ".join(f"{k}: {v}" for k, v in OPTION_HELP.items()))
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorBody, "description": "the job has not succeeded (yet)"}}


@dataclasses.dataclass
class Source:
    """A checked trajectory: where it is, what the job row records, and files to move in."""

    inputs: dict[str, Any]
    frames: int | None  # known when every selected frame was read
    staged: dict[str, Path] = dataclasses.field(default_factory=dict)
    dataset_id: str | None = None


def _options(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise Unprocessable(f"options: malformed JSON ({exc})", [("options", f"malformed JSON: {exc}")]) from None
    if not isinstance(value, dict):
        raise Unprocessable("options must be a JSON object", [("options", "must be a JSON object")])
    return value


def _relocated(exc: ConfigError, text: Any) -> ConfigError:
    """Reader paths (format, max_corr_fs, …) are request options: options.<name>."""
    top = ("kind", "dt_fs", "options")
    return ConfigError.from_problems([(p if p.split(".")[0] in top else f"options.{p}" if p else "options", text(m))
                                      for p, m in exc.problems])


def _check(path: Path, request: SpectrumRequest, model: ModelRecord, loc: str, shown: dict[str, str]
           ) -> tuple[int | None, int]:
    """Read (a bounded number of) frames with the worker's reader; (frames or None, atoms)."""
    def text(msg: str) -> str:
        return layout_shown(msg, shown)

    try:
        first = load_frames(path, request, max_frames=1)
        budget = max(4, CHECK_ATOM_FRAMES // first.natoms)
        traj = load_frames(path, request, max_frames=budget)
        check_elements(request, traj.symbols, model.type_map)
        complete = traj.nframes < budget or traj.nframes == request.max_frames
        if complete:
            check_plan(request, traj.nframes)
    except ConfigError as exc:
        raise _relocated(exc, text) from None
    except DataError as exc:
        raise Unprocessable(f"invalid trajectory: {text(str(exc))}", [(loc, text(str(exc)))]) from None
    return (traj.nframes if complete else None), traj.natoms


def _is_archive(name: str, path: Path) -> bool:
    if name.lower().endswith(ARCHIVES):
        return True
    return zipfile.is_zipfile(path) or (not name.lower().endswith(".gz") and tarfile.is_tarfile(path))


def trajectory_from_upload(settings: Settings, file: UploadFile, request: SpectrumRequest,
                           model: ModelRecord) -> Source:
    original = Path(file.filename or "trajectory").name
    staging = staging_dir(settings.root, f"spectrum-{uuid.uuid4().hex[:12]}")
    staging.mkdir(parents=True)
    try:
        upload = staging / "upload"
        with open(upload, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        if _is_archive(original, upload):
            limits = Limits(settings.max_archive_members, settings.max_archive_bytes, settings.max_archive_file_bytes)
            extract(upload, staging / "trajectory", limits, filename=original)
            systems = find_systems(staging / "trajectory")
            if len(systems) != 1:
                msg = (f"the archive holds {len(systems)} DeePMD systems (folders with type.raw and set.*/); "
                       "upload exactly one, or upload the archive as a dataset and pick a system")
                raise Unprocessable(msg, [("file", msg)])
            rel = Path(systems[0]).relative_to(staging / "trajectory").as_posix()
            fmt = "deepmd/hdf5" if "#" in rel else "deepmd/npy"
            name = "trajectory" if rel == "." else f"trajectory/{rel}"
            staged = {"trajectory": staging / "trajectory"}
            request = dataclasses.replace(request, format=fmt)
        else:
            try:
                fmt = request.format or detect_format(original)
            except DataError as exc:
                raise Unprocessable(str(exc), [("file", str(exc))]) from None
            if fmt in ("deepmd/npy", "npy", "deepmd"):
                msg = "a DeePMD system is a folder: upload it as a .tar.gz or .zip archive"
                raise Unprocessable(msg, [("file", msg)])
            name = "trajectory" + SUFFIX.get(fmt, ".dat") + (".gz" if original.lower().endswith(".gz") else "")
            upload.rename(staging / name)
            staged = {name: staging / name}
        shown = staging / ("trajectory" if fmt == "deepmd/npy" else name)  # as the user knows it: original
        frames, atoms = _check(staging / name, request, model, "file", {str(shown): original})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info = {"file": name, "filename": original, "format": fmt, "frames": frames, "atoms": atoms}
    return Source({"trajectory": info}, frames, staged)


def trajectory_from_dataset(settings: Settings, session: SessionDep, user: User, dataset_id: str,
                            system: str | None, request: SpectrumRequest, model: ModelRecord) -> Source:
    ds = session.get(Dataset, dataset_id)
    if ds is None or not (user.is_admin or ds.owner_id == user.id):
        raise Unprocessable(f"dataset {dataset_id} not found", [("dataset_id", f"dataset {dataset_id} not found")])
    paths = [s["path"] for s in ds.systems]
    if system is None and len(paths) == 1:
        system = paths[0]
    if system is None or system not in paths:
        what = "choose a system" if system is None else f"no system at {system!r}"
        msg = f"{what} of dataset {ds.id}: it has {paths[:20]}"
        raise Unprocessable(msg, [("system", msg)])
    folder = dataset_files(settings.root, ds.id, system)
    frames, atoms = _check(folder, dataclasses.replace(request, format="deepmd/npy"), model, "system",
                           {str(folder): f"dataset:{ds.id}/{system}"})
    inputs = {"dataset_id": ds.id, "system": system, "frames": frames, "atoms": atoms}
    return Source(inputs, frames, dataset_id=ds.id)


@router.get("/spectrum/options")
def spectrum_options(user: CurrentUser) -> dict[str, Any]:
    """The spectrum options (names, one line of help, defaults) that the CLI, this api and
    the page share; maps may be given as JSON objects or as the CLI's ``O=6,H=1``, bands
    as [[lo, hi], …] or ``1000:2000,3000:4000``."""
    return option_schema()


@router.post("/spectrum", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic,
             responses={413: {"model": ErrorBody, "description": "upload larger than DPTENSOR_MAX_UPLOAD_BYTES"}})
def submit_spectrum(
    session: SessionDep, settings: SettingsDep, queue: QueueDep, user: CurrentUser, response: Response,
    model_id: Annotated[str, Form(description="a dipole model (IR) or a polarizability model (Raman)")],
    kind: Annotated[Literal["ir", "raman", "dielectric"], Form(
        description="ir, raman, or dielectric (ε(ω) and the static ε of a periodic run)")],
    dt_fs: Annotated[float, Form(description="time between frames in fs (required: never guessed)")],
    options: Annotated[str, Form(description=OPTIONS_HELP)] = "{}",
    file: Annotated[UploadFile | None, File(description="extended XYZ, LAMMPS dump, ASE .traj (optionally .gz), "
                                                        "or a .tar.gz/.zip holding one DeePMD npy system")] = None,
    dataset_id: Annotated[str | None, Form(description="instead of a file: an uploaded dataset")] = None,
    system: Annotated[str | None, Form(description="the system's path in the dataset (needed when it has "
                                                   "several)")] = None,
    name: Annotated[str, Form(max_length=300)] = "",
) -> JobPublic:
    """Check the request and the trajectory (422 names the field: `kind`, `dt_fs`,
    `options.<name>`, `file`, `dataset_id`, `system`), then queue a `spectrum` job on the
    `batch` queue. Follow it with GET /v1/jobs/{id} (progress in frames, rate in frames/s);
    the result is GET /v1/jobs/{id}/spectrum (JSON) or /spectrum.csv, the per-frame tensors
    the job file predictions.npz."""
    model = owned(session, ModelRecord, model_id, user)
    request = parse_request(kind, dt_fs, _options(options))
    check_model_kind(request, model.kind, f"model {model.id}")
    if (file is None) == (dataset_id is None):
        msg = "give exactly one of 'file' (a trajectory upload) or 'dataset_id'"
        raise Unprocessable(msg, [("file", msg)])
    if file is not None:
        source = trajectory_from_upload(settings, file, request, model)
        title = source.inputs["trajectory"]["filename"]
    else:
        assert dataset_id is not None
        source = trajectory_from_dataset(settings, session, user, dataset_id, system, request, model)
        title = f"{dataset_id}/{source.inputs['system']}"
    inputs = {"model_id": model.id, "kind": kind, "dt_fs": dt_fs, "options": request.options_json(), **source.inputs}
    try:
        job = submit(session, queue, settings, user, kind="spectrum", inputs=inputs, model_id=model.id,
                     name=name or f"{kind.upper()} of {title}", staged=source.staged, total=source.frames,
                     dataset_ids=[source.dataset_id] if source.dataset_id else [])
    finally:
        for path in source.staged.values():
            shutil.rmtree(path.parent, ignore_errors=True)  # the staging folder (moved or not)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job, user.name)


def _result(session: SessionDep, settings: SettingsDep, user: User, job_id: str, name: str) -> tuple[Job, Path]:
    job = owned(session, Job, job_id, user)
    if job.kind != "spectrum":
        raise NotFound(f"job {job.id} is a {job.kind} job: it has no spectrum")
    if job.status != "succeeded":
        raise Conflict(f"job {job.id} is {job.status}: the spectrum is there once it has succeeded")
    path = job_dir(settings.root, job.id) / name
    if not path.is_file():
        raise NotFound(f"job {job.id} has no {name}")
    return job, path


@router.get("/{job_id}/spectrum", response_class=FileResponse, responses={
    200: {"model": SpectrumPublic, "description": "the spectrum (model.spectra.Spectrum.to_dict())"}, **CONFLICT})
def get_spectrum(job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> FileResponse:
    """wavenumber_cm, intensities ({ir} or {iso, aniso, vv, vh}) and metadata (units, grid,
    Nyquist, window, correction, temperature, frames, model_id, dipole_mode, …)."""
    _, path = _result(session, settings, user, job_id, "spectrum.json")
    return FileResponse(path, media_type="application/json")


@router.get("/{job_id}/spectrum.csv", response_class=FileResponse, responses={
    200: {"content": {"text/csv": {}}, "description": "wavenumber_cm and one column per channel"}, **CONFLICT})
def get_spectrum_csv(job_id: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> FileResponse:
    job, path = _result(session, settings, user, job_id, "spectrum.csv")
    return FileResponse(path, media_type="text/csv", filename=f"{job.id}-spectrum.csv")
