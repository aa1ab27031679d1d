"""One Settings class for the api, the workers and the CLI (env vars ``DPTENSOR_*``).

Both processes read the same variables, so an api and its workers agree on the data
directory, the database and the broker. Invalid values stop the process at start-up
with one line per problem (``SettingsError``), never at the first request.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.search_budget import DEFAULT_MAX_CANDIDATES

ENV_PREFIX = "DPTENSOR_"
# Celery's SQLAlchemy transport on SQLite (no server; the embedded default before the
# embedded Redis, still accepted as an explicit DPTENSOR_BROKER_URL for comparison)
EMBEDDED_SCHEME = "dptensor-sqla+"
SOCKET_PATH_MAX = 100  # a unix socket's path must fit in 108 bytes (sun_path)


class SettingsError(Exception):
    """The configuration (environment variables) is invalid; the message says which."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(Path(".dptensor"), description="datasets/, jobs/, models/ (shared by api and workers)")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/dptensor.sqlite")
    broker_url: str | None = Field(None, description="redis://host:6379/0; default: embedded (a Redis server "
                                                     "that dptensor serve starts on a unix socket)")
    result_backend: str | None = Field(None, description="Celery results; default: the Redis broker or a SQLite file")

    # --- http --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    auth: Literal["token", "none"] = Field("token", description="'none' is allowed only on a loopback host")

    # --- limits (bad input gets a 413/422, never an out-of-memory) ----------------------
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="dataset archive / checkpoint upload")
    max_json_bytes: int = Field(64 << 20, ge=1024)
    max_archive_members: int = Field(20_000, ge=1)
    max_archive_bytes: int = Field(4 << 30, ge=1024, description="total size once extracted")
    max_archive_file_bytes: int = Field(2 << 30, ge=1024)
    max_atoms_per_structure: int = Field(100_000, ge=1)
    max_structures: int = Field(100_000, ge=1, description="frames in one prediction request")
    sync_predict_max_atoms: int = Field(50_000, ge=1, description="above: the request becomes a job")
    sync_predict_timeout_s: float = Field(30.0, gt=0)
    model_inspect_timeout_s: float = Field(60.0, gt=0)
    broker_timeout_s: float = Field(3.0, gt=0, description="an unreachable broker is a 503 after this long")
    max_train_steps: int = Field(10_000_000, ge=1, description="numb_steps of one training")
    max_train_nproc: int = Field(8, ge=1, description="data-parallel ranks one training may ask for (resources.nproc)")
    max_model_parameters: int = Field(
        50_000_000, ge=1000, description="trainable parameters of one model (training holds ~32 bytes each)")
    max_train_activation_bytes: int = Field(
        32 << 30, ge=1 << 20, description="estimated activations of one training step (batch atoms × sel × "
                                          "embedding sizes, model/sizing.py); about the workers' memory")
    # dynamic batching of synchronous predictions (app/batching.py)
    predict_batching: bool = Field(True, description="coalesce concurrent predictions of one model")
    predict_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="longest a batch waits for more "
                                         "requests while the worker is busy")
    predict_batch_max_frames: int = Field(256, ge=1)
    predict_batch_max_atoms: int = Field(50_000, ge=1)
    predict_batch_in_flight: int = Field(1, ge=1, description="batches of one model sent and unanswered: "
                                         "about one per predict worker")
    max_search_candidates: int = Field(
        DEFAULT_MAX_CANDIDATES, ge=1000,
        description="neighbour candidates per atom (periodic images × atoms): above, a periodic cell is too "
                    "thin for the model's cutoff and the frame is refused (422)")

    # --- jobs: heartbeats, retries, cancellation ----------------------------------------
    heartbeat_interval_s: float = Field(10.0, gt=0)
    stale_after_s: float = Field(90.0, gt=0, description="a running job without heartbeat this long is lost")
    max_attempts: int = Field(3, ge=1, description="deliveries of one job before it fails")
    janitor_interval_s: float = Field(15.0, gt=0)
    enqueue_grace_s: float = Field(10.0, gt=0, description="a queued job not sent this long after it was "
                                                           "stored (api died before the send) is sent by the janitor")
    resend_queued_after_s: float = Field(600.0, gt=0, description="a queued job unclaimed this long after its "
                                                                 "message was sent is sent again (lost message)")
    cancel_poll_s: float = Field(0.5, gt=0)
    progress_every_s: float = Field(2.0, gt=0)
    visibility_timeout_s: int = Field(3600, ge=10, description="Redis: redeliver unacked messages after")
    embedded_poll_s: float = Field(0.05, gt=0, description="embedded broker polling interval")

    # --- fan-out of batch jobs over the workers (jobs/chunks.py, worker/fanout.py) --------
    fanout: bool = Field(True, description="split prediction and spectrum jobs into chunks that every batch "
                                           "worker runs (Celery chord); false: one worker runs them in turn")
    chunk_frames: int = Field(20_000, ge=1, description="frames per chunk of a prediction job")
    max_chunks: int = Field(256, ge=1, description="chunks of one job at most (longer jobs get larger chunks)")
    chunk_retries: int = Field(2, ge=0, description="retries of a chunk that failed with an internal error")
    max_spectrum_trajectories: int = Field(256, ge=1, description="trajectories of one spectrum job")
    max_spectrum_frames: int = Field(10_000_000, ge=1, description="frames of one spectrum job, all "
                                                                   "trajectories together")

    worker_device: str | None = Field(None, description="cpu, cuda, cuda:1, cuda:auto (the first GPU no other worker holds); default cuda when available")

    @field_validator("database_url")
    @classmethod
    def _db_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite://", "postgresql://", "postgresql+psycopg2://")):
            raise ValueError("must start with sqlite://, postgresql:// or postgresql+psycopg2://")
        return v

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "redis+socket://", EMBEDDED_SCHEME)):
            raise ValueError("must be a redis:// URL (leave it unset for the embedded broker)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.auth == "none" and not is_loopback(self.host):
            raise ValueError(
                f"auth 'none' on host {self.host!r} would open the service to the network: bind to "
                "127.0.0.1 or use token auth (dptensor token create --user NAME)")
        if self.stale_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError(f"stale_after_s ({self.stale_after_s}) must be at least twice "
                             f"heartbeat_interval_s ({self.heartbeat_interval_s})")
        return self

    # --- derived -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'dptensor.sqlite'}"

    @property
    def embedded_broker(self) -> bool:
        """No broker URL: ``dptensor serve`` runs its own Redis (app.embedded_broker)."""
        return self.broker_url is None

    @property
    def sqlite_broker(self) -> bool:
        """Celery's SQLAlchemy transport on SQLite (an explicit dptensor-sqla+ URL)."""
        return self.broker_url is not None and self.broker_url.startswith(EMBEDDED_SCHEME)

    @property
    def embedded_socket(self) -> Path:
        """The embedded broker's unix socket: in the data dir, or (a path too long for a
        socket) in a private folder of the temp dir named after the data dir."""
        path = self.root / "broker.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"dptensor-{digest}" / "broker.sock"

    @property
    def broker(self) -> str:
        return self.broker_url or f"redis+socket://{self.embedded_socket}"

    @property
    def results(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.sqlite_broker:
            return f"db+sqlite:///{self.root / 'results.sqlite'}"
        return self.broker

    def env(self) -> dict[str, str]:
        """These settings as environment variables, for child processes (workers)."""
        out: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                out[ENV_PREFIX + name.upper()] = str(value)
        out[ENV_PREFIX + "DATA_DIR"] = str(self.root)
        return out


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (+ overrides); a ValidationError becomes a one-line-per-
    problem SettingsError naming the environment variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            var = f"{ENV_PREFIX}{loc.upper()}" if loc else "settings"
            lines.append(f"{var}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
