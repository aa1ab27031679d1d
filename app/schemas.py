"""Request and response schemas. Request bodies forbid unknown keys (a typo is a 422 that
names the key, not a silently ignored option); responses are separate *Public models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from model.search_budget import MAX_ABS_COORD

# Positions and cell vectors in Å: finite is not enough (1e300 overflows the distance
# arithmetic), so a physical bound: 0.1 mm, far beyond any simulation box.
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_COORD, le=MAX_ABS_COORD)]
Vec3 = Annotated[list[Coordinate], Field(min_length=3, max_length=3)]


def _utc(value: datetime) -> datetime:
    """The job store keeps naive UTC (SQLite has no time zones); RFC 3339 wants the offset."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# every timestamp of a response: RFC 3339 with its offset, e.g. 2026-11-29T13:27:13.406284Z
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Problem(Public):
    loc: str = Field(description="JSON path, file name or field that is wrong")
    msg: str


class ErrorBody(Public):
    detail: str
    problems: list[Problem] = []


ERROR_TEXTS = {
    400: "the body could not be read (JSON that is not UTF-8, or a broken multipart form)",
    401: "missing or unknown token", 404: "not found (or not yours)",
    422: "invalid input; `problems` lists each field/file with its message",
}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in ERROR_TEXTS.items()}
# for routes whose success is not JSON (text, files): FastAPI would document the error
# bodies under the success's media type; they are JSON
JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for code, text in ERROR_TEXTS.items()}


# --- users -------------------------------------------------------------------------------

class UserPublic(Public):
    name: str
    is_admin: bool


class TokenCreate(Request):
    user: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    admin: bool = False
    label: str = Field("", max_length=200)


class TokenCreated(Public):
    user: str
    admin: bool
    token: str = Field(description="shown once; store it (only its hash is kept)")


# --- datasets ----------------------------------------------------------------------------

class AtomicLabelInfo(Public):
    file: str
    layout: Literal["natoms", "nsel"] = Field(description="rows for all atoms, or only for sel_type atoms")
    nsel: int
    sel_type: list[int] | None = Field(None, description="nsel layout: the types whose atoms match nsel")


class LabelInfo(Public):
    model_config = ConfigDict(populate_by_name=True, from_attributes=True)
    global_: bool = Field(alias="global", description="set.*/dipole.npy or polarizability.npy present")
    atomic: AtomicLabelInfo | None


class SystemSummary(Public):
    path: str = Field(description="folder inside the archive ('.' for its root)")
    frames: int
    atoms: int
    type_map: list[str] | None = Field(description="from type_map.raw")
    type_counts: dict[str, int]
    pbc: bool
    sets: int
    labels: dict[str, LabelInfo] = Field(description="by kind: dipole / polar")
    warnings: list[str] = []


class DatasetPublic(Public):
    id: str
    name: str
    reference: str = Field(description="use in input.json systems: 'dataset:<id>' or 'dataset:<id>/<path>'")
    created_at: UtcDatetime
    size_bytes: int
    n_files: int
    systems: list[SystemSummary]


# --- jobs --------------------------------------------------------------------------------

class Progress(Public):
    step: int | None = None
    total: int | None = None
    unit: Literal["steps", "frames"] = "steps"
    rate: float | None = Field(None, description="steps (or frames) per second")
    eta_s: float | None = None


class JobError(Public):
    """jobs.errors.ErrorPayload, as the job row keeps it."""

    kind: Literal["config", "data", "checkpoint", "internal", "worker_lost"] = Field(
        "internal", description="config / data / checkpoint: the input's fault; the others: the service's")
    type: str
    message: str
    problems: list[Problem] = Field(default_factory=list, description="JSON path or file, and what is wrong")
    traceback: str | None = Field(None, description="last frames of the worker's traceback")


class JobPublic(Public):
    id: str
    kind: Literal["train", "predict", "spectrum", "select"]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    name: str
    owner: str
    queue: str
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    progress: Progress
    lcurve: dict[str, float | None] | None = Field(None, description="latest learning-curve row")
    attempt: int
    max_attempts: int
    cancel_requested: bool
    model_id: str | None = Field(None, description="train: the model it registered; predict: the model used")
    model_deleted: bool = Field(False, description="the model it registered or used has been deleted since")
    result: dict[str, Any] | None
    error: JobError | None
    warnings: list[str]
    inputs: dict[str, Any] = Field(description="the request as submitted (input.json for training)")


class JobList(Public):
    items: list[JobPublic]
    total: int


class LcurvePublic(Public):
    columns: list[str]
    rows: list[dict[str, int | float | None]] = Field(description="one object per displayed step; NaN as null")
    file: str | None = Field(None, description="the file the training writes the curve to (training.disp_file); "
                                               "null until it exists")
    download: str | None = Field(None, description="where to GET that file itself (text, as written); null until "
                                                   "it exists")


class FileInfo(Public):
    name: str
    size_bytes: int


class ChunkPublic(Public):
    """One chunk of a job that runs in chunks over the batch workers (a trajectory of a
    spectrum, a range of frames of a prediction)."""

    index: int = Field(description="0-based; results are joined in this order")
    label: str = Field(description="the trajectory as you named it, or 'frames a-b'")
    status: Literal["pending", "running", "done", "failed", "cancelled"]
    attempt: int = Field(description="deliveries that started it (a lost worker's chunk runs again)")
    worker_id: str | None
    progress: Progress
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    result: dict[str, Any] | None
    error: JobError | None


class CancelPublic(Public):
    id: str
    status: str
    cancel_requested: bool


class TrainCheck(Public):
    valid: bool
    problems: list[Problem] = Field(description="what POST /v1/jobs/train would answer with a 422")
    warnings: list[str] = Field(description="ignored DeePMD-kit keys")
    dataset_ids: list[str]


# --- models ------------------------------------------------------------------------------

class ModelPublic(Public):
    id: str
    name: str
    kind: Literal["dipole", "polar"]
    type_map: list[str]
    sel_type: list[int]
    info: dict[str, Any] = Field(description="rcut, sel, precision (committee_size for a committee)")
    committee_size: int = Field(1, description="members of a committee model (1: a single model); predictions "
                                               "of a committee add std and deviations")
    metrics: dict[str, float | None]
    source: Literal["trained", "uploaded"]
    source_job_id: str | None
    size_bytes: int
    created_at: UtcDatetime


# --- prediction --------------------------------------------------------------------------

class Structure(Request):
    """One frame: atoms by element symbol or by model type index, positions in Å."""

    symbols: list[str] | None = Field(None, description="element per atom, e.g. ['O','H','H']")
    types: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="model type index per atom")
    positions: list[Vec3] = Field(description="[n_atoms, 3] in Å")
    cell: Annotated[list[Vec3], Field(min_length=3, max_length=3)] | None = Field(
        None, description="3×3, rows are the cell vectors in Å")
    pbc: bool | Annotated[list[bool], Field(min_length=3, max_length=3)] | None = Field(
        None, description="default: true when a cell is given")

    @model_validator(mode="after")
    def _consistent(self) -> Structure:
        if (self.symbols is None) == (self.types is None):
            raise ValueError("give exactly one of 'symbols' or 'types'")
        n = len(self.symbols if self.symbols is not None else self.types or [])
        if len(self.positions) == 0 or n == 0:
            raise ValueError("empty structure: at least one atom is needed")
        if len(self.positions) != n:
            raise ValueError(f"positions has {len(self.positions)} rows but there are {n} atoms")
        flags = [self.pbc] * 3 if isinstance(self.pbc, bool) else self.pbc
        if flags is not None and any(flags) and not all(flags):
            raise ValueError("partial periodicity is not supported: pbc must be all true or all false")
        if flags is not None and all(flags) and self.cell is None:
            raise ValueError("pbc is true but no cell is given")
        return self

    @property
    def periodic(self) -> bool:
        if self.pbc is None:
            return self.cell is not None
        return bool(self.pbc if isinstance(self.pbc, bool) else all(self.pbc))


class PredictRequest(Request):
    structures: list[Structure] | None = Field(None, min_length=1, description="one entry per frame")
    system: str | None = Field(None, description="or a DeePMD system of an uploaded dataset: "
                                                 "'dataset:<id>/<path>' (always a job)")
    name: str = Field("", max_length=300)
    derivatives: bool = Field(False, description="dipole models: also the Born charges Z*_i = ∂M/∂r_i of each "
                                                 "structure (autograd; docs/spectra.md), with the acoustic sum rule")

    @model_validator(mode="after")
    def _one(self) -> PredictRequest:
        if (self.structures is None) == (self.system is None):
            raise ValueError("give exactly one of 'structures' or 'system'")
        return self


class TensorResult(Public):
    global_tensor: list[float] = Field(description="sum over atoms: 3 (dipole) or 9 (polar, row-major); "
                                                   "a committee's mean")
    atomic_tensor: list[list[float]] = Field(description="[n_atoms, 3|9]; zeros for atoms outside sel_type")
    born_charges: list[list[list[float]]] | None = Field(
        None, description="with derivatives=true: [n_atoms, 3, 3], Z[i][a][b] = ∂M_a/∂r_{i,b} (e); "
                          "a committee's mean over members")
    born_charges_std: list[list[list[float]]] | None = Field(
        None, description="committee, with derivatives=true: [n_atoms, 3, 3] std over members (ddof 0)")
    sum_rule_violation: float | None = Field(None, description="max |Σ_i Z*_i| (0 for a neutral frame)")
    global_std: list[float] | None = Field(None, description="committee: std over members per component")
    atomic_std: list[list[float]] | None = Field(None, description="committee: [n_atoms, 3|9] std over members")
    devi_global: float | None = Field(None, description="committee: ‖global_std‖ (rotation-invariant)")
    devi_atomic_max: float | None = Field(None, description="committee: max over atoms of ‖atomic_std‖")


class PredictResponse(Public):
    model_id: str
    kind: Literal["dipole", "polar"]
    components: list[str]
    units: dict[str, str]
    committee_size: int = Field(1, description="members whose mean is reported (1: a single model)")
    results: list[TensorResult]


# --- spectra -----------------------------------------------------------------------------

class SpectrumPublic(Public):
    """model.spectra.Spectrum.to_dict(): what GET /v1/jobs/{id}/spectrum returns."""

    wavenumber_cm: list[float] = Field(description="frequency grid in cm⁻¹, from 0 to metadata.freq_max_cm")
    intensities: dict[str, list[float]] = Field(
        description="IR: {'ir'}; Raman: {'iso', 'aniso', 'vv', 'vh'}; one value per grid point")
    metadata: dict[str, Any] = Field(
        description="units, grid_spacing_cm, resolution_cm, nyquist_cm, window, correction, temperature_k, "
                    "dt_fs, n_frames, model_id, dipole_mode, sources, …")
    intensities_std: dict[str, list[float]] | None = Field(
        None, description="committee model: std of the members' spectra per channel and grid point "
                          "(intensities are then the members' mean)")
    peaks: list[dict[str, Any]] | None = Field(
        None, description="committee model: main peaks (channel, wavenumber_cm, member_cm, mean_cm, std_cm, "
                          "height, height_std)")


# --- health ------------------------------------------------------------------------------

class Live(Public):
    status: Literal["ok"] = "ok"


class Check(Public):
    ok: bool
    detail: str = ""


class WorkerPublic(Public):
    id: str
    queues: list[str]
    device: str
    gpu: str | None
    heartbeat_at: UtcDatetime


class Ready(Public):
    ready: bool
    database: Check
    broker: Check
    workers: list[WorkerPublic]
    queues_without_worker: list[str]
    gpu: bool = Field(description="at least one live worker has a GPU")
