"""Chunk transitions of a fanned-out job (jobs/chunks.py) on SQLite and PostgreSQL: one
delivery runs a chunk, a done chunk is never run again, a stale chunk is taken over or
sent again by the janitor (failed once attempts are spent), progress sums over chunks, and
the job-level sweep leaves a job that runs in chunks alone."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from jobs import chunks, store
from jobs.chunks import ChunkSpec
from jobs.tables import Job, JobChunk, utcnow
from tests.jobs.test_store import _job

SPECS = [ChunkSpec("a.xyz", {"trajectory": 0}, 100), ChunkSpec("b.xyz", {"trajectory": 1}, 50),
         ChunkSpec("c.xyz", {"trajectory": 2}, None)]
MESSAGE = {"task": "dptensor.chunk", "args": ["j", 0], "queue": "batch", "options": {"task_id": "t0"}}


def _fanned_out(s: Session) -> Job:
    job = _job(s)
    assert store.claim(s, job.id, "planner", 60).run
    chunks.ensure(s, job.id, SPECS)
    assert chunks.hand_over(s, job.id, "planner")
    return job


def _age(s: Session, job_id: str, index: int, seconds: float) -> None:
    s.execute(update(JobChunk).where(JobChunk.job_id == job_id, JobChunk.index == index)
              .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    s.commit()


def test_a_chunk_runs_once_and_a_done_chunk_is_never_run_again(session: Session) -> None:
    job = _fanned_out(session)
    assert chunks.ensure(session, job.id, SPECS)[1].label == "b.xyz"  # a second plan finds the rows
    first = chunks.claim(session, job.id, 0, "w1", 60, MESSAGE)
    assert (first.run, first.attempt) == (True, 1)
    assert chunks.claim(session, job.id, 0, "w2", 60, MESSAGE).reason == "busy"  # alive on w1
    assert not chunks.heartbeat(session, job.id, 0, "w2") and chunks.heartbeat(session, job.id, 0, "w1")
    assert chunks.finish(session, job.id, 0, "w1", chunks.DONE, result={"frames": 100})
    assert chunks.claim(session, job.id, 0, "w2", 60, MESSAGE).reason == "done"
    row = session.get(JobChunk, (job.id, 0), populate_existing=True)
    assert (row.status, row.attempt, row.worker_id, row.message) == ("done", 1, "w1", MESSAGE)


def test_progress_sums_over_chunks(session: Session) -> None:
    job = _fanned_out(session)
    for i, w in ((0, "w1"), (1, "w2")):
        chunks.claim(session, job.id, i, w, 60, MESSAGE)
    chunks.report(session, job.id, 0, "w1", step=40, total=100, rate=20.0)
    chunks.report(session, job.id, 1, "w2", step=10, total=50, rate=5.0)
    session.refresh(job)
    assert (job.step, job.rate, job.total) == (50, 25.0, None)  # chunk c's total is not known yet
    chunks.claim(session, job.id, 2, "w1", 60, MESSAGE)
    chunks.report(session, job.id, 2, "w1", step=0, total=30, rate=None)
    session.refresh(job)
    assert (job.step, job.total, job.eta_s) == (50, 180, (180 - 50) / 25.0)


def test_the_job_sweep_leaves_chunks_alone_and_the_chunk_sweep_sends_them_again(session: Session) -> None:
    job = _fanned_out(session)
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert store.sweep_stale(session, 60) == ([], [])  # no worker owns it: its chunks are swept
    assert not store.claim(session, job.id, "w9", 60).run  # a duplicate job message does not re-plan
    chunks.claim(session, job.id, 0, "w1", 60, MESSAGE)
    _age(session, job.id, 0, 120)
    sweep = chunks.sweep_stale(session, 60)
    assert sweep.resend == [MESSAGE] and sweep.fanin == []
    assert chunks.sweep_stale(session, 60).resend == []  # sent once
    again = chunks.claim(session, job.id, 0, "w2", 60, MESSAGE)
    assert (again.run, again.attempt) == (True, 2)
    assert not chunks.finish(session, job.id, 0, "w1", chunks.DONE)  # the lost worker is fenced off
    _age(session, job.id, 0, 120)  # w2 dies too: attempts (2 of 2) are spent
    sweep = chunks.sweep_stale(session, 60)
    assert sweep.resend == [] and sweep.fanin == [job.id]
    row = session.get(JobChunk, (job.id, 0), populate_existing=True)
    assert row.status == "failed" and "gave up after 2 attempt(s)" in row.error["message"]


def test_fanin_takes_the_job_back_once_and_a_lost_callback_is_sent_again(session: Session) -> None:
    job = _fanned_out(session)
    for i in range(3):
        chunks.claim(session, job.id, i, "w1", 60, MESSAGE)
        chunks.finish(session, job.id, i, "w1", chunks.DONE)
    assert chunks.sweep_stale(session, 60).fanin == []  # just finished: the chord's callback is on its way
    session.execute(update(JobChunk).where(JobChunk.job_id == job.id).values(finished_at=utcnow() - timedelta(hours=1)))
    session.execute(update(Job).where(Job.id == job.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
    session.commit()
    assert chunks.sweep_stale(session, 60).fanin == [job.id]
    assert chunks.sweep_stale(session, 60).fanin == []  # not again before stale_after_s
    assert chunks.claim_fanin(session, job.id, "w2") == (True, "")
    ok, reason = chunks.claim_fanin(session, job.id, "w3")
    assert not ok and reason == "job is running on w2"
    assert store.finish(session, job.id, "w2", "succeeded")


def test_cancel_stops_queued_chunks_at_their_claim_and_closes_them(session: Session) -> None:
    job = _fanned_out(session)
    chunks.set_task_ids(session, job.id, {0: "t0", 1: "t1", 2: "t2"})
    chunks.claim(session, job.id, 0, "w1", 60, MESSAGE)
    chunks.finish(session, job.id, 0, "w1", chunks.DONE)
    session.execute(update(Job).where(Job.id == job.id).values(cancel_requested=True))
    session.commit()
    assert chunks.claim(session, job.id, 1, "w1", 60, MESSAGE).reason == "stopped"
    chunks.close_open(session, job.id)
    assert [r.status for r in chunks.rows_of(session, job.id)] == ["done", "cancelled", "cancelled"]
