"""The janitor: jobs whose worker stopped heartbeating are re-sent (the next worker
resumes from the last checkpoint) or, after max_attempts, failed with the reason; queued
jobs whose message was never sent or was lost by the broker are (re-)sent; chunks of a
fanned-out job whose worker was lost are sent again (jobs/chunks.py).
Runs as a thread of every api process; the compare-and-set in store.sweep_stale makes
several api replicas safe."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from jobs import chunks
from jobs.queue import BrokerUnavailable, TaskQueue
from jobs.settings import Settings
from jobs.store import mark_sent, mark_unsent, sweep_stale, take_unsent

log = logging.getLogger("dptensor.janitor")


def sweep_once(sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> tuple[int, int, int]:
    """Returns (requeued, failed, sent)."""
    with sessions() as session:
        requeued, failed = sweep_stale(session, settings.stale_after_s)
        for job in requeued:
            log.warning("job %s: no heartbeat for %.0f s (attempt %d/%d): back to the queue", job.id,
                        settings.stale_after_s, job.attempt, job.max_attempts)
        for job in failed:
            log.warning("job %s: no heartbeat and no attempt left: failed", job.id)
        unsent = take_unsent(session, settings.enqueue_grace_s, settings.resend_queued_after_s)
        for n, job in enumerate(unsent):
            try:
                task_id = queue.enqueue_job(job.id, job.kind)
            except BrokerUnavailable:
                for left in unsent[n:]:
                    mark_unsent(session, left.id)
                log.warning("broker unavailable: %d queued job(s) wait for the next sweep", len(unsent) - n)
                break
            mark_sent(session, job.id, task_id)
            log.info("job %s: (re)sent to the %s queue", job.id, job.queue)
    sweep_chunks(sessions, queue, settings)
    return len(requeued), len(failed), len(unsent)


def sweep_chunks(sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> None:
    """Chunks of fanned-out jobs whose worker was lost: their message is sent again (another
    worker redoes that chunk alone); jobs whose chunks all ended without a fan-in get one."""
    with sessions() as session:
        sweep = chunks.sweep_stale(session, settings.stale_after_s)
        for message in sweep.resend:
            job_id, index = message["args"]
            try:
                queue.resend(message)
            except BrokerUnavailable:
                chunks.unsent(session, job_id, index)
                log.warning("broker unavailable: chunk %d of job %s waits for the next sweep", index, job_id)
                continue
            log.warning("job %s: chunk %d lost its worker (no heartbeat for %.0f s): sent again", job_id, index,
                        settings.stale_after_s)
        for job_id in sweep.fanin:
            try:
                queue.send_fanin(job_id)
            except BrokerUnavailable:
                log.warning("broker unavailable: job %s's fan-in waits for the next sweep", job_id)
                continue
            log.info("job %s: its chunks have ended: fan-in sent", job_id)


class Janitor(threading.Thread):
    def __init__(self, sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> None:
        super().__init__(name="dptensor-janitor", daemon=True)
        self.sessions, self.queue, self.settings = sessions, queue, settings
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:  # a sweep at start too: jobs given back while the service was down are sent
            try:
                sweep_once(self.sessions, self.queue, self.settings)
            except Exception:  # a broken sweep must not kill the thread: retry next round
                log.exception("janitor sweep failed")
            if self.stopped.wait(self.settings.janitor_interval_s):
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)
