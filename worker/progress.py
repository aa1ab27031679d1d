"""What a running job reports to the job store: heartbeats, the cancel flag, progress,
and its own log file (kept in the job folder, also after a failure)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from jobs import store

if TYPE_CHECKING:
    from worker.state import WorkerState

log = logging.getLogger("dptensor.worker")


class JobMonitor(threading.Thread):
    """Polls the job row every ``poll_s`` (cancel flag, ownership) and refreshes the
    heartbeat every ``heartbeat_s``, in a thread, so that a slow training step never
    makes a live job look dead."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, worker_id: str, *, poll_s: float,
                 heartbeat_s: float, shutdown: threading.Event) -> None:
        super().__init__(name=f"monitor-{job_id}", daemon=True)
        self.sessions, self.job_id, self.worker_id = sessions, job_id, worker_id
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.shutdown = shutdown  # the worker's: set when it is asked to stop
        self.cancel = threading.Event()
        self.lost = threading.Event()  # another worker owns the job now: stop, write nothing
        self._done = threading.Event()

    def run(self) -> None:
        last_beat = time.monotonic()
        while not self._done.wait(self.poll_s):
            try:
                with self.sessions() as session:
                    if time.monotonic() - last_beat >= self.heartbeat_s:
                        last_beat = time.monotonic()
                        if not self._heartbeat(session):
                            self.lost.set()
                    owned, cancel = self._poll(session)
                if not owned:
                    self.lost.set()
                if cancel:
                    self.cancel.set()
            except Exception:  # the database may blip; the next round retries
                log.exception("job %s: heartbeat failed", self.job_id)

    def _heartbeat(self, session: Session) -> bool:
        return store.heartbeat(session, self.job_id, self.worker_id)

    def _poll(self, session: Session) -> tuple[bool, bool]:
        """(this worker still owns the job, the job is to stop)"""
        return store.poll(session, self.job_id, self.worker_id)

    def should_stop(self) -> bool:
        return self.cancel.is_set() or self.lost.is_set() or self.shutdown.is_set()

    def stopped(self) -> str:
        """Why a job that stopped early did: cancelled, or interrupted (the worker stops)."""
        if self.cancel.is_set():
            return "cancelled"
        return "interrupted" if self.shutdown.is_set() else "cancelled"

    def __enter__(self) -> JobMonitor:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join(timeout=10)


def clean_row(row: dict[str, float] | None) -> dict[str, float | None] | None:
    """NaN (absent column) -> None: JSON has no NaN."""
    if row is None:
        return None
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@contextmanager
def job_log(path: Path) -> Iterator[logging.Logger]:
    """Everything logged under 'dptensor' (and Python warnings) while the job runs goes
    to jobs/<id>/job.log too."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("dptensor")
    warn_logger = logging.getLogger("py.warnings")
    if root.getEffectiveLevel() > logging.INFO:  # the job log always has the progress lines
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    warn_logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        yield root.getChild("job")
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        warn_logger.removeHandler(handler)
        handler.close()


def report(sessions: sessionmaker[Session], job_id: str, worker_id: str, **values: Any) -> None:
    with sessions() as session:
        store.report_progress(session, job_id, worker_id, **values)


class ThrottledFrames:
    """A progress callback (done, total) that hands ``write`` the frames/s at most every
    ``every_s`` seconds (always at the start, done = 0, and at the end)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.start = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0:
            self.start = now
        elif done < total and now - self.last < self.every_s:
            return
        self.last = now
        self.write(done, total, done / (now - self.start) if done and now > self.start else None)

    def write(self, done: int, total: int, rate: float | None) -> None:
        raise NotImplementedError


class FrameProgress(ThrottledFrames):
    """Frames done / total and frames/s into the job row, at most every progress_every_s."""

    def __init__(self, st: WorkerState, job_id: str, jlog: logging.Logger) -> None:
        super().__init__(st.settings.progress_every_s)
        self.state, self.job_id, self.jlog = st, job_id, jlog

    def write(self, done: int, total: int, rate: float | None) -> None:
        eta = (total - done) / rate if rate else None
        report(self.state.sessions, self.job_id, self.state.worker_id, step=done, total=total, rate=rate, eta_s=eta)
        if done:
            self.jlog.info("predicted %d/%d frames, %.1f frames/s", done, total, rate or 0.0)
