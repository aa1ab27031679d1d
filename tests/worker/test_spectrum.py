"""The spectrum task body against a real job store, with DeePMD-kit's reference dipole model:
results and progress, cancel between chunks, failures that keep their inputs and log."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kit import DEEPMD_REF, WATER, rotating_water_xyz, wait_for
from sqlalchemy import update

from jobs.db import session_scope
from jobs.tables import Job, new_id

MODEL_ID = "mdl-reference01"


@pytest.fixture(scope="module")
def model_id(ctx: dict[str, Any]) -> str:
    folder = ctx["root"] / "models" / MODEL_ID
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEEPMD_REF / "dipole" / "model_slim.pt", folder / "model.pt")
    return MODEL_ID


def _job(ctx: dict[str, Any], model_id: str, trajectory: dict[str, Any], dt_fs: float = 2.0,
         options: dict[str, Any] | None = None) -> tuple[str, Path]:
    from model.spectrum_pipeline import parse_request

    job_id = new_id("job")
    inputs = {"model_id": model_id, "kind": "ir", "dt_fs": dt_fs,
              "options": parse_request("ir", dt_fs, options).options_json(), "trajectory": trajectory}
    with session_scope(ctx["db"]) as s:
        s.add(Job(id=job_id, kind="spectrum", owner_id=ctx["owner_id"], queue="batch", inputs=inputs,
                  model_id=model_id, max_attempts=3))
    folder = ctx["root"] / "jobs" / job_id
    folder.mkdir(parents=True)
    return job_id, folder


def _get(ctx: dict[str, Any], job_id: str) -> Job:
    with session_scope(ctx["db"]) as s:
        return s.get(Job, job_id)


def test_spectrum_job_writes_results_and_reports_frames(ctx: dict[str, Any], model_id: str) -> None:
    import json

    from model.checkpoint import load_model
    from model.inference import predict
    from model.trajectory import read_trajectory
    from worker.spectrum import spectrum_task

    nu, dt = 1500.0, 1.0
    job_id, folder = _job(ctx, model_id, {"file": "trajectory.xyz", "format": "extxyz"}, dt)
    (folder / "trajectory.xyz").write_bytes(rotating_water_xyz(300, dt, nu))
    assert spectrum_task.run(job_id) == "succeeded"
    job = _get(ctx, job_id)
    assert (job.status, job.step, job.total) == ("succeeded", 300, 300) and job.rate > 0
    assert job.result["frames"] == 300 and job.result["files"] == ["spectrum.json", "spectrum.csv",
                                                                      "predictions.npz"]
    spectrum = json.loads((folder / "spectrum.json").read_text())
    x, y = np.array(spectrum["wavenumber_cm"]), np.array(spectrum["intensities"]["ir"])
    assert abs(x[np.argmax(y)] - nu) <= spectrum["metadata"]["grid_spacing_cm"]
    assert abs(job.result["strongest_peak_cm"] - nu) <= spectrum["metadata"]["grid_spacing_cm"]
    assert (spectrum["metadata"]["model_id"], spectrum["metadata"]["n_frames"]) == (model_id, 300)
    assert (folder / "spectrum.csv").read_text().startswith("wavenumber_cm,ir\n")
    traj = read_trajectory(folder / "trajectory.xyz")
    ref = predict(load_model(ctx["root"] / "models" / model_id / "model.pt"), traj.coord, np.array([0, 1, 1]))
    with np.load(folder / "predictions.npz") as npz:
        np.testing.assert_allclose(npz["global"], ref.global_tensor, rtol=0, atol=1e-12)
        assert npz["atomic"].shape == (300, 3, 3)
    assert "spectrum: 300 frames" in (folder / "job.log").read_text()


def _long_system(folder: Path, nframes: int) -> None:
    """A DeePMD system of nframes 192-atom frames (the example frames, repeated)."""
    src = WATER / "dipole" / "validation_data_reformat" / "global_system"
    (folder / "set.000").mkdir(parents=True)
    for name in ("type.raw", "type_map.raw", "nopbc"):
        shutil.copy(src / name, folder / name)
    coord = np.load(src / "set.000" / "coord.npy")
    np.save(folder / "set.000" / "coord.npy", np.resize(coord, (nframes, coord.shape[1])))


def test_cancel_stops_between_chunks(ctx: dict[str, Any], model_id: str) -> None:
    from worker.spectrum import spectrum_task

    job_id, folder = _job(ctx, model_id, {"file": "trajectory", "format": "deepmd/npy"})
    _long_system(folder / "trajectory", 5000)
    outcome: list[str] = []
    runner = threading.Thread(target=lambda: outcome.append(spectrum_task.run(job_id)))
    runner.start()
    wait_for("the first chunk", lambda: (_get(ctx, job_id).step or 0) > 0, timeout=60, every=0.05)
    with session_scope(ctx["db"]) as s:
        s.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    runner.join(timeout=60)
    job = _get(ctx, job_id)
    assert outcome == ["cancelled"] and job.status == "cancelled" and job.step < 5000
    names = {p.name for p in folder.iterdir()}
    assert "predictions.npz" not in names and "spectrum.json" not in names and not any(
        n.endswith(".partial") for n in names)


def test_failure_keeps_inputs_and_log(ctx: dict[str, Any], model_id: str) -> None:
    from worker.spectrum import spectrum_task

    job_id, folder = _job(ctx, model_id, {"file": "trajectory.xyz", "filename": "md.xyz", "format": "extxyz"})
    lines = rotating_water_xyz(8, 1.0, 1000.0).decode().splitlines(keepends=True)
    lines[25:30] = ["4\n", "frame 5\n", "O 0 0 0\n", "H 1 0 0\n", "H 0 1 0\n", "H 0 0 1\n"]  # an extra atom
    (folder / "trajectory.xyz").write_text("".join(lines))
    assert spectrum_task.run(job_id) == "failed"
    job = _get(ctx, job_id)
    assert job.error["type"] == "DataError"
    assert job.error["message"] == "md.xyz: frame 5 has 4 atoms, frame 0 has 3"  # the user's name, not our path
    assert (folder / "trajectory.xyz").is_file() and "DataError" in (folder / "job.log").read_text()
