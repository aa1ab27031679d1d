"""Task bodies against a real job store and real (tiny) trainings."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from kit import DEEPMD_REF, tiny_input, wait_for
from sqlalchemy import update

from jobs.db import session_scope
from jobs.tables import Job, ModelRecord, new_id, utcnow


def _job(ctx: dict[str, Any], inputs: dict[str, Any], kind: str = "train", **values: Any) -> str:
    job_id = new_id("job")
    with session_scope(ctx["db"]) as s:
        s.add(Job(id=job_id, kind=kind, owner_id=ctx["owner_id"], queue="train", inputs=inputs, max_attempts=3,
                  **values))
    return job_id


def _get(ctx: dict[str, Any], job_id: str) -> Job:
    with session_scope(ctx["db"]) as s:
        return s.get(Job, job_id)


def _train_input(**kw: Any) -> dict[str, Any]:
    return tiny_input("dataset:ds-water/train", "dataset:ds-water/valid", **kw)


@pytest.fixture(scope="module")
def trained(ctx: dict[str, Any]) -> tuple[str, Job]:
    from worker.tasks import train_task

    job_id = _job(ctx, _train_input(numb_steps=10, save_freq=5))
    assert train_task.run(job_id) == "succeeded"
    return job_id, _get(ctx, job_id)


def test_training_registers_a_model(ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    job_id, job = trained
    assert (job.status, job.attempt, job.step, job.total) == ("succeeded", 1, 10, 10)
    assert job.last_row is not None and set(job.last_row) >= {"rmse_trn", "rmse_val", "lr"}
    assert job.result["steps_done"] == 10 and job.model_id == job.result["model_id"]
    with session_scope(ctx["db"]) as s:
        model = s.get(ModelRecord, job.model_id)
        assert (model.kind, model.type_map, model.sel_type, model.source, model.source_job_id) == (
            "dipole", ["O", "H"], [0], "trained", job_id)
        assert model.metrics["val_rmse"] > 0
    folder = ctx["root"] / "jobs" / job_id
    assert (ctx["root"] / "models" / job.model_id / "model.pt").is_file()
    assert {"lcurve.out", "model.ckpt.pt", "model.ckpt-10.pt", "model.pt", "job.log"} <= {
        p.name for p in folder.iterdir()}
    assert "registered model" in (folder / "job.log").read_text()


def test_duplicate_delivery_is_dropped(ctx: dict[str, Any]) -> None:
    from worker.tasks import train_task

    job_id = _job(ctx, _train_input(), status="running", worker_id="elsewhere:1", heartbeat_at=utcnow(), attempt=1)
    assert train_task.run(job_id).startswith("dropped: job is running on elsewhere:1")
    job = _get(ctx, job_id)
    assert (job.status, job.worker_id, job.attempt) == ("running", "elsewhere:1", 1)


def test_stale_job_resumes_from_its_checkpoint(ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    """A worker died at step 5 (checkpoint model.ckpt-5.pt): the next delivery continues."""
    import shutil

    from worker.tasks import train_task

    src_job, _ = trained
    job_id = _job(ctx, _train_input(numb_steps=10, save_freq=5), status="running", worker_id="dead:1",
                  heartbeat_at=utcnow() - timedelta(seconds=60), attempt=1)
    folder = ctx["root"] / "jobs" / job_id
    folder.mkdir(parents=True)
    shutil.copy(ctx["root"] / "jobs" / src_job / "model.ckpt-10.pt", folder / "model.ckpt-5.pt")
    (folder / "model.ckpt.pt").symlink_to("model.ckpt-5.pt")
    assert train_task.run(job_id) == "succeeded"
    job = _get(ctx, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    assert "resuming from checkpoint model.ckpt-5.pt (step 10)" in (folder / "job.log").read_text()


def test_cancel_stops_within_a_poll_interval(ctx: dict[str, Any]) -> None:
    from worker.tasks import train_task

    job_id = _job(ctx, _train_input(numb_steps=100000, save_freq=100000))
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(train_task.run(job_id)))
    runner.start()
    wait_for("training to report progress", lambda: (_get(ctx, job_id).step or 0) >= 1, timeout=60)
    with session_scope(ctx["db"]) as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    runner.join(timeout=30)
    assert outcome == ["cancelled"]
    job = _get(ctx, job_id)
    assert job.status == "cancelled" and job.result["steps_done"] < 100000
    assert (ctx["root"] / "jobs" / job_id / "model.ckpt.pt").is_file()  # checkpoint written on the way out


def test_failure_keeps_message_traceback_inputs_and_log(ctx: dict[str, Any]) -> None:
    from worker.tasks import train_task

    raw = _train_input()
    raw["loss"]["pref_atomic"] = 0.0  # the atomic system then has no usable label
    raw["training"]["training_data"]["systems"] = ["dataset:ds-water/train/atomic_system"]
    job_id = _job(ctx, raw)
    assert train_task.run(job_id) == "failed"
    job = _get(ctx, job_id)
    assert job.status == "failed" and job.error["type"] == "DataError"
    assert job.error["message"].startswith("dataset:ds-water/train/atomic_system: training_data: no label this")
    assert "Traceback" in job.error["traceback"]
    assert job.inputs == raw
    assert "DataError" in (ctx["root"] / "jobs" / job_id / "job.log").read_text()


def test_predict_structures_matches_the_library(ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    from model.checkpoint import load_model
    from model.data import load_system
    from model.inference import predict
    from worker.predict import predict_structures

    model = load_model(ctx["root"] / "models" / trained[1].model_id / "model.pt")
    system = load_system(ctx["root"] / "datasets" / "ds-water" / "files" / "valid" / "global_system",
                         type_map=model.type_map)
    water = {"types": [0, 1, 1], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]], "cell": None}
    frames = [{"types": system.atype.tolist(), "positions": system.coord[i].tolist(), "cell": None} for i in range(3)]
    glob, atomic, extra = predict_structures(model, [frames[0], water, frames[1], frames[2]])
    assert extra == [{}, {}, {}, {}]  # a single model: no committee columns
    ref = predict(model, system.coord[:3], system.atype)
    np.testing.assert_allclose(np.array(glob)[[0, 2, 3]], ref.global_tensor, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.array([atomic[0], atomic[2], atomic[3]]), ref.atomic_tensor, rtol=0, atol=1e-10)
    one = predict(model, np.array([water["positions"]], dtype=float), np.array([0, 1, 1]))
    np.testing.assert_allclose(glob[1], one.global_tensor[0], rtol=0, atol=1e-12)


def test_inspect_checkpoints(ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    import shutil

    from model.errors import CheckpointError
    from worker.predict import inspect

    root = ctx["root"]
    (root / "uploads").mkdir(exist_ok=True)
    shutil.copy(DEEPMD_REF / "dipole" / "model_slim.pt", root / "uploads" / "slim.pt")
    info = inspect(root, "uploads/slim.pt")
    assert info["summary"]["format"] == "deepmd-kit"
    assert (info["summary"]["kind"], info["summary"]["type_map"], info["summary"]["sel_type"]) == (
        "dipole", ["O", "H"], [0])
    ours = inspect(root, f"models/{trained[1].model_id}/model.pt")
    assert ours["summary"]["format"] == "dptensor" and ours["metrics"]["val_rmse"] > 0
    (root / "uploads" / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable model file"):
        inspect(root, "uploads/junk.pt")
    with pytest.raises(CheckpointError, match="outside the data directory"):
        inspect(root, "../../etc/passwd")


def test_predict_job_with_derivatives_writes_born_charges(ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    import json

    from model.checkpoint import load_model
    from model.dipole_derivatives import born_charges
    from worker.tasks import predict_job_task

    water = {"types": [0, 1, 1], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]], "cell": None}
    job_id = _job(ctx, {"model_id": trained[1].model_id, "structures": 1, "atoms": 3, "derivatives": True},
                  kind="predict")
    folder = ctx["root"] / "jobs" / job_id
    folder.mkdir(parents=True)
    (folder / "structures.json").write_text(json.dumps([water]))
    assert predict_job_task.run(job_id) == "succeeded"
    row = json.loads((folder / "predictions.json").read_text())["results"][0]
    model = load_model(ctx["root"] / "models" / trained[1].model_id / "model.pt")
    ref = born_charges(model, np.array([water["positions"]], dtype=float), [0, 1, 1])
    np.testing.assert_allclose(row["born_charges"], ref.z[0], rtol=0, atol=1e-12)
    assert row["sum_rule_violation"] < 1e-10


def test_coalesced_batch_counts_every_request_once_a_lone_bad_one_included(
        ctx: dict[str, Any], trained: tuple[str, Job]) -> None:
    """/metrics' request counter sees each request of a batch once, by outcome: a batch of one
    bad request (which CI once saw missing), a bad one beside a good one, and a model that is
    not there (the whole batch fails)."""
    from worker import metrics
    from worker.tasks import run_batch

    def count(outcome: str) -> float:
        return metrics.REGISTRY.get_sample_value("dptensor_predict_requests_total", {"outcome": outcome}) or 0.0

    water = {"types": [0, 1, 1], "positions": [[0, 0, 0], [0.757, 0.586, 0], [-0.757, 0.586, 0]], "cell": None}
    bad = {**water, "types": [0, 1, 7]}  # a type the model does not have
    model_id = trained[1].model_id
    cases = [([bad], [False]), ([water, bad], [True, False]), ([bad, water, water], [False, True, True])]
    for structures, expected in cases:
        ok0, err0 = count("ok"), count("error")
        out = run_batch({"model_id": model_id, "requests": [{"structures": [s]} for s in structures]})
        assert out["ok"] and [a["ok"] for a in out["answers"]] == expected, out
        assert (count("ok") - ok0, count("error") - err0) == (expected.count(True), expected.count(False))
    err0 = count("error")
    out = run_batch({"model_id": "mdl-not-there", "requests": [{"structures": [water]}, {"structures": [water]}]})
    assert not out["ok"]
    assert count("error") - err0 == 2
