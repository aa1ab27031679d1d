"""Chunks and fan-in of a fanned-out job, run in this process (Celery's eager apply, real
SQLite store): an internal error retries the chunk alone, a user error fails the job naming
the chunk, a duplicate delivery of a done chunk computes nothing; and a multi-trajectory
spectrum run by one worker in turn (DPTENSOR_FANOUT=false) equals the library's run.
tests/e2e/test_fanout.py runs the same over real workers."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit import DEEPMD_REF, rotating_water_xyz

from jobs import chunks
from jobs.chunks import FANOUT, ChunkSpec
from jobs.db import session_scope
from jobs.tables import Job, JobChunk, new_id
from model.errors import DataError
from worker import state
from worker.fanout import ChunkRun, chunk_task, fanin_task, register
from worker.jobrun import Outcome

RUNS: list[tuple[int, int]] = []  # (chunk, attempt) of every run of the test kind


class Flaky:
    """Chunk 0 fails once with an internal error; chunk 1 has bad data when asked to."""

    def plan(self, job: Job, folder: Path) -> list[ChunkSpec]:
        return [ChunkSpec("a", {}, 1), ChunkSpec("b", {}, 1)]

    def run(self, job: Job, folder: Path, chunk: ChunkRun) -> dict[str, Any]:
        RUNS.append((chunk.row.index, chunk.row.attempt))
        if chunk.row.index == 0 and chunk.row.attempt == 1:
            raise RuntimeError("a worker hiccup")
        if chunk.row.index == 1 and job.inputs.get("bad"):
            raise DataError("frame 3: NaN in the coordinates", path="b.xyz")
        chunk.progress(1, 1)
        return {"frames": 1}

    def combine(self, job: Job, folder: Path, rows: list[JobChunk], jlog: logging.Logger) -> Outcome:
        return Outcome("succeeded", {"chunks": [r.result for r in rows]})


register("flaky", Flaky())


def _fanned_out_job(ctx: dict[str, Any], **inputs: Any) -> str:
    job_id = new_id("job")
    with session_scope(ctx["db"]) as s:
        s.add(Job(id=job_id, kind="flaky", owner_id=ctx["owner_id"], queue="batch", inputs=inputs,
                  max_attempts=3, status="running", worker_id=FANOUT))
    with session_scope(ctx["db"]) as s:
        chunks.ensure(s, job_id, Flaky().plan(None, Path()))  # type: ignore[arg-type]
    (ctx["root"] / "jobs" / job_id).mkdir(parents=True)
    return job_id


def _rows(ctx: dict[str, Any], job_id: str) -> list[JobChunk]:
    with session_scope(ctx["db"]) as s:
        return chunks.rows_of(s, job_id)


def test_an_internal_error_retries_the_chunk_alone(ctx: dict[str, Any]) -> None:
    RUNS.clear()
    job_id = _fanned_out_job(ctx)
    assert chunk_task.apply(args=(job_id, 0)).get() == {"index": 0, "status": "done"}
    assert chunk_task.apply(args=(job_id, 1)).get() == {"index": 1, "status": "done"}
    assert RUNS == [(0, 1), (0, 2), (1, 1)]  # chunk 0 twice (retried), chunk 1 once
    assert chunk_task.apply(args=(job_id, 1)).get() == {"index": 1, "status": "done"}  # a duplicate
    assert RUNS == [(0, 1), (0, 2), (1, 1)]  # … computed nothing
    assert [(r.status, r.attempt) for r in _rows(ctx, job_id)] == [("done", 2), ("done", 1)]
    assert fanin_task.apply(args=(job_id,)).get() == "succeeded"
    with session_scope(ctx["db"]) as s:
        job = s.get(Job, job_id)
        assert (job.status, job.step, job.total, job.result) == ("succeeded", 2, 2, {"chunks": [{"frames": 1}] * 2})
    log = (ctx["root"] / "jobs" / job_id / "job.log").read_text()
    assert "chunk 1/2 (a): RuntimeError: a worker hiccup — retry 1 of 2" in log
    assert fanin_task.apply(args=(job_id,)).get() == "dropped: job is succeeded"  # a second fan-in


def test_a_user_error_fails_the_job_naming_the_chunk(ctx: dict[str, Any]) -> None:
    RUNS.clear()
    job_id = _fanned_out_job(ctx, bad=True)
    assert chunk_task.apply(args=(job_id, 1)).get() == {"index": 1, "status": "failed"}
    assert RUNS == [(1, 1)]  # bad data is not retried
    assert fanin_task.apply(args=(job_id,)).get() == "failed"
    with session_scope(ctx["db"]) as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.error["kind"] == "data"
        assert job.error["message"] == "chunk 2/2 (b): b.xyz: frame 3: NaN in the coordinates"
    assert [r.status for r in _rows(ctx, job_id)] == ["cancelled", "failed"]  # chunk a never ran
    assert chunk_task.apply(args=(job_id, 0)).get() == {"index": 0, "status": "stopped"}
    assert RUNS == [(1, 1)]


@pytest.fixture
def no_fanout(ctx: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    st = state.current()
    monkeypatch.setattr(st, "settings", st.settings.model_copy(update={"fanout": False}))


def test_several_trajectories_in_turn_equal_the_library(ctx: dict[str, Any], no_fanout: None) -> None:
    from model.committee import load_predictor
    from model.spectrum_parts import run_spectrum
    from model.spectrum_pipeline import parse_request
    from worker.spectrum import spectrum_task

    model_dir = ctx["root"] / "models" / "mdl-fanout00001"
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEEPMD_REF / "dipole" / "model_slim.pt", model_dir / "model.pt")
    job_id = new_id("job")
    folder = ctx["root"] / "jobs" / job_id
    folder.mkdir(parents=True)
    files = []
    for i in range(3):
        (folder / f"trajectory-{i:03d}.xyz").write_bytes(rotating_water_xyz(200 + 50 * i, 1.0, 1200.0 + 200 * i))
        files.append({"file": f"trajectory-{i:03d}.xyz", "filename": f"md{i}.xyz", "format": "extxyz",
                      "frames": 200 + 50 * i, "atoms": 3})
    request = parse_request("ir", 1.0, {"units": "relative"})
    with session_scope(ctx["db"]) as s:
        s.add(Job(id=job_id, kind="spectrum", owner_id=ctx["owner_id"], queue="batch", model_id="mdl-fanout00001",
                  inputs={"model_id": "mdl-fanout00001", "kind": "ir", "dt_fs": 1.0,
                          "options": request.options_json(), "trajectories": files}, max_attempts=3))
    assert spectrum_task.run(job_id) == "succeeded"
    with session_scope(ctx["db"]) as s:
        job = s.get(Job, job_id)
    assert (job.step, job.total, job.result["trajectories"], job.result["workers"]) == (750, 750, 3, 1)
    assert job.result["files"] == ["spectrum.json", "spectrum.csv", "predictions-000.npz", "predictions-001.npz",
                                   "predictions-002.npz"]
    spectrum = json.loads((folder / "spectrum.json").read_text())
    model = load_predictor(str(model_dir / "model.pt"))
    want = run_spectrum(model, [folder / f["file"] for f in files], request).spectrum
    np.testing.assert_allclose(spectrum["intensities"]["ir"], want.intensities["ir"], rtol=1e-12, atol=0)
    assert spectrum["metadata"]["sources"] == ["md0.xyz", "md1.xyz", "md2.xyz"]
    with np.load(folder / "predictions-002.npz") as npz:
        assert npz["global"].shape == (300, 3)
