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
    """Checked trajectories: where they are, what the job row records, and files to move in."""

    inputs: dict[str, Any]
    frames: int | None  # known when every selected frame was read
    staged: dict[str, Path] = dataclasses.field(default_factory=dict)
    dataset_id: str | None = None
    atoms: int = 0
    read: int = 0  # frames read at submission (all of them when ``frames`` is known)
    title: str = ""  # for the job's default name


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


def _check(path: Path, request: SpectrumRequest, model: ModelRecord, loc: str, shown: dict[str, str],
           atom_frames: int = CHECK_ATOM_FRAMES) -> tuple[int | None, int, int]:
    """Read (up to ``atom_frames`` frames × atoms of) frames with the worker's reader;
    (frames or None, atoms, frames read)."""
    def text(msg: str) -> str:
        return layout_shown(msg, shown)

    try:
        first = load_frames(path, request, max_frames=1)
        budget = max(4, atom_frames // first.natoms)
        traj = load_frames(path, request, max_frames=budget)
        check_elements(request, traj.symbols, model.type_map)
        complete = traj.nframes < budget or traj.nframes == request.max_frames
        if complete:
            check_plan(request, traj.nframes)
    except ConfigError as exc:
        raise _relocated(exc, text) from None
    except DataError as exc:
        raise Unprocessable(f"invalid trajectory: {text(str(exc))}", [(loc, text(str(exc)))]) from None
    return (traj.nframes if complete else None), traj.natoms, traj.nframes


def _is_archive(name: str, path: Path) -> bool:
    if name.lower().endswith(ARCHIVES):
        return True
    return zipfile.is_zipfile(path) or (not name.lower().endswith(".gz") and tarfile.is_tarfile(path))


def trajectory_from_upload(settings: Settings, file: UploadFile, request: SpectrumRequest, model: ModelRecord,
                           index: int | None = None, atom_frames: int = CHECK_ATOM_FRAMES) -> Source:
    """One uploaded trajectory, checked; ``index``: its place among several (``file[i]``)."""
    original = Path(file.filename or "trajectory").name
    loc, stem = ("file", "trajectory") if index is None else (f"file[{index}]", f"trajectory-{index:03d}")
    staging = staging_dir(settings.root, f"spectrum-{uuid.uuid4().hex[:12]}")
    staging.mkdir(parents=True)
    try:
        upload = staging / "upload"
        with open(upload, "wb") as out:
            shutil.copyfileobj(file.file, out, 1 << 20)
        if _is_archive(original, upload):
            limits = Limits(settings.max_archive_members, settings.max_archive_bytes, settings.max_archive_file_bytes)
            extract(upload, staging / stem, limits, filename=original)
            systems = find_systems(staging / stem)
            if len(systems) != 1:
                msg = (f"{original}: the archive holds {len(systems)} DeePMD systems (folders with type.raw and "
                       "set.*/); upload exactly one, or upload the archive as a dataset and pick a system")
                raise Unprocessable(msg, [(loc, msg)])
            rel = Path(systems[0]).relative_to(staging / stem).as_posix()
            fmt = "deepmd/hdf5" if "#" in rel else "deepmd/npy"
            name = stem if rel == "." else f"{stem}/{rel}"
            staged = {stem: staging / stem}
            request = dataclasses.replace(request, format=fmt)
        else:
            try:
                fmt = request.format or detect_format(original)
            except DataError as exc:
                raise Unprocessable(str(exc), [(loc, str(exc))]) from None
            if fmt in ("deepmd/npy", "npy", "deepmd"):
                msg = f"{original}: a DeePMD system is a folder: upload it as a .tar.gz or .zip archive"
                raise Unprocessable(msg, [(loc, msg)])
            name = stem + SUFFIX.get(fmt, ".dat") + (".gz" if original.lower().endswith(".gz") else "")
            upload.rename(staging / name)
            staged = {name: staging / name}
        shown = staging / (stem if fmt == "deepmd/npy" else name)  # as the user knows it: original
        frames, atoms, read = _check(staging / name, request, model, loc, {str(shown): original}, atom_frames)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    info = {"file": name, "filename": original, "format": fmt, "frames": frames, "atoms": atoms}
    return Source({"trajectory": info}, frames, staged, atoms=atoms, read=read, title=original)


def _dataset_systems(ds: Dataset, wanted: list[str]) -> list[str]:
    """Each wanted path is a system of the dataset, a folder of it (every system below,
    as dataset:<id>/<folder> in input.json) or '.' (all); in order, without repeats."""
    paths = [s["path"] for s in ds.systems]
    if not wanted and len(paths) == 1:
        return paths
    if not wanted:
        msg = f"choose a system of dataset {ds.id} (or '.' for all {len(paths)}): it has {paths[:20]}"
        raise Unprocessable(msg, [("system", msg)])
    out: list[str] = []
    for i, text in enumerate(wanted):
        sub = text.strip().strip("/")
        chosen = [p for p in paths if sub in ("", ".") or p == sub or p.startswith((sub + "/", sub + "#"))]
        if not chosen:
            msg = f"no system at {text!r} of dataset {ds.id}: it has {paths[:20]}"
            raise Unprocessable(msg, [("system" if len(wanted) == 1 else f"system[{i}]", msg)])
        out.extend(p for p in chosen if p not in out)
    return out


def trajectory_from_dataset(settings: Settings, session: SessionDep, user: User, dataset_id: str,
                            system: str | list[str] | None, request: SpectrumRequest, model: ModelRecord) -> Source:
    """Systems of an uploaded dataset, checked: one (``system`` in the job), or several
    (``systems``, when ``system`` names several or a folder of several)."""
    ds = session.get(Dataset, dataset_id)
    if ds is None or not (user.is_admin or ds.owner_id == user.id):
        raise Unprocessable(f"dataset {dataset_id} not found", [("dataset_id", f"dataset {dataset_id} not found")])
    chosen = _dataset_systems(ds, [system] if isinstance(system, str) else list(system or []))
    _at_most(settings, len(chosen), "system")
    request = dataclasses.replace(request, format="deepmd/npy")
    checked = []
    for path in chosen:
        folder = dataset_files(settings.root, ds.id, path)
        name = f"dataset:{ds.id}/{path}"
        frames, atoms, read = _check(folder, request, model, "system", {str(folder): name},
                                     CHECK_ATOM_FRAMES // len(chosen))
        checked.append(Source({"system": path, "frames": frames, "atoms": atoms}, frames, atoms=atoms, read=read,
                              title=name))
    if len(checked) == 1:
        inputs = {"dataset_id": ds.id, **checked[0].inputs}
        return Source(inputs, checked[0].frames, dataset_id=ds.id, atoms=checked[0].atoms, read=checked[0].read,
                      title=f"{ds.id}/{chosen[0]}")
    return _several(checked, {"dataset_id": ds.id, "systems": [c.inputs for c in checked]}, "system", ds.id)


def _at_most(settings: Settings, n: int, loc: str) -> None:
    if n > settings.max_spectrum_trajectories:
        msg = (f"{n} trajectories: a spectrum job takes at most {settings.max_spectrum_trajectories} "
               "(DPTENSOR_MAX_SPECTRUM_TRAJECTORIES)")
        raise Unprocessable(msg, [(loc, msg)])


def _several(checked: list[Source], inputs: dict[str, Any], loc: str, dataset_id: str | None = None) -> Source:
    """Several checked trajectories as one source: the same number of atoms in each."""
    first = checked[0]
    for i, c in enumerate(checked[1:], start=1):
        if c.atoms != first.atoms:
            msg = f"{c.title} has {c.atoms} atoms, {first.title} {first.atoms}: every trajectory needs the same atoms"
            raise Unprocessable(msg, [(f"{loc}[{i}]", msg)])
    frames = [c.frames for c in checked]
    staged = {k: v for c in checked for k, v in c.staged.items()}
    return Source(inputs, None if None in frames else sum(f or 0 for f in frames), staged, dataset_id,
                  atoms=first.atoms, read=sum(c.read for c in checked),
                  title=f"{len(checked)} trajectories ({first.title}, …)")


def trajectories_from_uploads(settings: Settings, files: list[UploadFile], request: SpectrumRequest,
                              model: ModelRecord) -> Source:
    """One upload as before (``trajectory`` in the job); several as ``trajectories``."""
    if len(files) == 1:
        return trajectory_from_upload(settings, files[0], request, model)
    _at_most(settings, len(files), "file")
    checked: list[Source] = []
    try:
        for i, f in enumerate(files):
            checked.append(trajectory_from_upload(settings, f, request, model, i, CHECK_ATOM_FRAMES // len(files)))
        return _several(checked, {"trajectories": [c.inputs["trajectory"] for c in checked]}, "file")
    except BaseException:
        for c in checked:
            for path in c.staged.values():
                shutil.rmtree(path.parent, ignore_errors=True)
        raise


def trajectory_source(settings: Settings, session: SessionDep, user: User, files: list[UploadFile] | None,
                      dataset_id: str | None, system: str | list[str] | None, request: SpectrumRequest,
                      model: ModelRecord) -> Source:
    """The trajectories of a spectrum or selection request: uploaded files xor systems of a
    dataset, checked, with a title for the job's name."""
    if bool(files) == (dataset_id is not None):
        msg = "give exactly one of 'file' (a trajectory upload) or 'dataset_id'"
        raise Unprocessable(msg, [("file", msg)])
    if files:
        return trajectories_from_uploads(settings, files, request, model)
    assert dataset_id is not None
    return trajectory_from_dataset(settings, session, user, dataset_id, system, request, model)


def _bounded(settings: Settings, source: Source) -> None:
    """The frames of one job, all trajectories together (those read at submission: a longer
    trajectory is bounded by the worker with the same setting)."""
    limit = settings.max_spectrum_frames
    if source.read > limit:
        loc = "file" if "trajectory" in source.inputs or "trajectories" in source.inputs else "system"
        msg = (f"{source.read}{'' if source.frames is not None else ' or more'} frames: a spectrum job takes at "
               f"most {limit} (DPTENSOR_MAX_SPECTRUM_FRAMES)")
        for path in source.staged.values():
            shutil.rmtree(path.parent, ignore_errors=True)
        raise Unprocessable(msg, [(loc, msg)])


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
    file: Annotated[list[UploadFile] | None, File(
        description="extended XYZ, LAMMPS dump, ASE .traj (optionally .gz), or a .tar.gz/.zip holding one DeePMD "
                    "npy system; repeat the field for several independent runs of one system (one spectrum "
                    "averaged over them, at most DPTENSOR_MAX_SPECTRUM_TRAJECTORIES)")] = None,
    dataset_id: Annotated[str | None, Form(description="instead of a file: an uploaded dataset")] = None,
    system: Annotated[list[str] | None, Form(
        description="the system's path in the dataset (needed when it has several); a folder means every "
                    "system below it, '.' all of them; repeat the field for several")] = None,
    name: Annotated[str, Form(max_length=300)] = "",
) -> JobPublic:
    """Check the request and the trajectories (422 names the field: `kind`, `dt_fs`,
    `options.<name>`, `file` (`file[i]` of several), `dataset_id`, `system`), then queue a
    `spectrum` job on the `batch` queue. Several trajectories (files, or systems of a
    dataset) give one spectrum pooled over them — for runs of equal length the mean of their
    spectra — computed one trajectory per chunk by every idle batch worker. Follow it with
    GET /v1/jobs/{id} (progress in frames, rate in frames/s) and /v1/jobs/{id}/chunks; the
    result is GET /v1/jobs/{id}/spectrum (JSON) or /spectrum.csv, the per-frame tensors the
    job file predictions.npz (predictions-<i>.npz for several)."""
    model = owned(session, ModelRecord, model_id, user)
    request = parse_request(kind, dt_fs, _options(options))
    check_model_kind(request, model.kind, f"model {model.id}")
    source = trajectory_source(settings, session, user, file, dataset_id, system, request, model)
    _bounded(settings, source)
    inputs = {"model_id": model.id, "kind": kind, "dt_fs": dt_fs, "options": request.options_json(), **source.inputs}
    try:
        job = submit(session, queue, settings, user, kind="spectrum", inputs=inputs, model_id=model.id,
                     name=name or f"{kind.upper()} of {source.title}", staged=source.staged, total=source.frames,
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
