"""The janitor: jobs whose worker stopped heartbeating are re-sent (the next worker
resumes from the last checkpoint) or, after max_attempts, failed with the reason.
Runs as a thread of every api process; the compare-and-set in store.sweep_stale makes
several api replicas safe."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from jobs.queue import TaskQueue
from jobs.settings import Settings
from jobs.store import sweep_stale

log = logging.getLogger("dptensor.janitor")


def sweep_once(sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> tuple[int, int]:
    with sessions() as session:
        requeued, failed = sweep_stale(session, settings.stale_after_s)
    for job in requeued:
        log.warning("job %s: no heartbeat for %.0f s (attempt %d/%d): re-sent", job.id, settings.stale_after_s,
                    job.attempt, job.max_attempts)
        queue.enqueue_job(job.id, job.kind)
    for job in failed:
        log.warning("job %s: no heartbeat and no attempt left: failed", job.id)
    return len(requeued), len(failed)


class Janitor(threading.Thread):
    def __init__(self, sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> None:
        super().__init__(name="dptensor-janitor", daemon=True)
        self.sessions, self.queue, self.settings = sessions, queue, settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.janitor_interval_s):
            try:
                sweep_once(self.sessions, self.queue, self.settings)
            except Exception:  # a broken sweep must not kill the thread: retry next round
                log.exception("janitor sweep failed")

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
