"""Job-state transitions (claim, duplicate delivery, heartbeat fencing, janitor sweep) on
SQLite and on PostgreSQL (skipped only when no server answers on 127.0.0.1:5432)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from jobs import store
from jobs.db import init_db
from jobs.tables import Job, utcnow


def _job(s: Session, **values) -> Job:
    job = Job(id=f"job-{secrets.token_hex(3)}", kind="train", owner_id=1, queue="train", inputs={}, max_attempts=2,
              **values)
    s.add(job)
    s.commit()
    return job


def test_claim_runs_once_and_drops_duplicates(session: Session) -> None:
    job = _job(session)
    first = store.claim(session, job.id, "w1", stale_after_s=60)
    assert (first.run, first.attempt) == (True, 1)
    dup = store.claim(session, job.id, "w2", stale_after_s=60)
    assert not dup.run and "running on w1" in dup.reason
    session.refresh(job)
    assert (job.status, job.worker_id, job.attempt) == ("running", "w1", 1)
    assert store.finish(session, job.id, "w1", "succeeded", result={"ok": 1})
    assert store.claim(session, job.id, "w2", 60).reason == "job is already succeeded"


def test_stale_job_is_taken_over_and_the_old_worker_is_fenced(session: Session) -> None:
    job = _job(session)
    store.claim(session, job.id, "w1", 60)
    session.execute(text("UPDATE jobs SET heartbeat_at = :t WHERE id = :i"),
                    {"t": utcnow() - timedelta(seconds=120), "i": job.id})
    session.commit()
    second = store.claim(session, job.id, "w2", 60)
    assert (second.run, second.attempt) == (True, 2)
    assert not store.heartbeat(session, job.id, "w1")  # w1 learns it lost the job
    assert store.poll(session, job.id, "w1") == (False, False)
    assert not store.finish(session, job.id, "w1", "succeeded")  # and cannot overwrite w2's outcome
    assert store.heartbeat(session, job.id, "w2")


def test_sweep_requeues_then_fails_with_a_reason(session: Session) -> None:
    job = _job(session)
    store.claim(session, job.id, "w1", 60)
    old = utcnow() - timedelta(seconds=120)
    session.execute(text("UPDATE jobs SET heartbeat_at = :t WHERE id = :i"), {"t": old, "i": job.id})
    session.commit()
    requeued, failed = store.sweep_stale(session, 60)
    assert [j.id for j in requeued] == [job.id] and failed == []
    session.refresh(job)
    assert (job.status, job.worker_id, job.attempt) == ("queued", None, 1)
    # second attempt dies too: attempts exhausted -> failed, never left running
    store.claim(session, job.id, "w2", 60)
    session.execute(text("UPDATE jobs SET heartbeat_at = :t WHERE id = :i"), {"t": old, "i": job.id})
    session.commit()
    requeued, failed = store.sweep_stale(session, 60)
    assert requeued == [] and [j.id for j in failed] == [job.id]
    session.refresh(job)
    assert job.status == "failed" and job.error["type"] == "WorkerLost"
    assert "gave up after 2 attempt(s)" in job.error["message"]


def test_release_gives_the_attempt_back(session: Session) -> None:
    job = _job(session)
    store.claim(session, job.id, "w1", 60)
    assert store.release(session, job.id, "w1")
    session.refresh(job)
    assert (job.status, job.attempt, job.worker_id) == ("queued", 0, None)


def test_unsent_and_lost_messages_are_taken_once_for_sending(session: Session) -> None:
    old = utcnow() - timedelta(seconds=120)
    never_sent = _job(session, created_at=old)  # the api died between commit and send_task
    just_made = _job(session)  # its send is in flight: within the grace period
    lost = _job(session, created_at=old, enqueued_at=old)  # sent long ago, never claimed
    recent = _job(session, created_at=old, enqueued_at=utcnow())
    running = _job(session, created_at=old)
    store.claim(session, running.id, "w1", 60)
    taken = {j.id for j in store.take_unsent(session, grace_s=10, resend_after_s=60)}
    assert taken == {never_sent.id, lost.id}
    assert store.take_unsent(session, grace_s=10, resend_after_s=60) == []  # marked sent: one sender
    store.mark_unsent(session, lost.id)  # the send failed (broker down): next sweep again
    assert [j.id for j in store.take_unsent(session, grace_s=10, resend_after_s=60)] == [lost.id]
    assert just_made.id not in taken and recent.id not in taken


def test_release_leaves_the_job_unsent_for_the_janitor(session: Session) -> None:
    job = _job(session, created_at=utcnow() - timedelta(seconds=120), enqueued_at=utcnow())
    store.claim(session, job.id, "w1", 60)
    assert store.release(session, job.id, "w1")
    session.refresh(job)
    assert job.enqueued_at is None
    assert [j.id for j in store.take_unsent(session, grace_s=10, resend_after_s=600)] == [job.id]


def test_init_db_adds_a_missing_nullable_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    init_db(url)
    engine = create_engine(url)
    with engine.begin() as conn:  # a data dir from before jobs.enqueued_at
        conn.execute(text("ALTER TABLE jobs DROP COLUMN enqueued_at"))
    init_db(url)
    with engine.connect() as conn:
        assert "enqueued_at" in [row[1] for row in conn.execute(text("PRAGMA table_info(jobs)"))]
