"""``dptensor.spectrum`` (batch queue): a spectrum job is model.spectrum_pipeline.run_spectrum
with the job's inputs, progress in frames and frames/s, cancel between chunks, and the
results in the job folder: predictions.npz, spectrum.json, spectrum.csv."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from jobs import layout
from jobs.queue import JOB_TASKS
from jobs.tables import Job
from model.errors import DataError
from model.system import System
from worker import state
from worker.jobrun import Outcome, run_job
from worker.predict import load_cached
from worker.progress import JobMonitor, report


def _source(job: Job, folder: Path) -> tuple[Path, str]:
    """(the trajectory on this machine, its name as the user knows it)"""
    inputs = job.inputs
    if "trajectory" in inputs:
        traj = inputs["trajectory"]
        return folder / traj["file"], traj.get("filename", traj["file"])
    path = layout.dataset_files(state.current().settings.root, inputs["dataset_id"], inputs["system"])
    return path, f"dataset:{inputs['dataset_id']}/{inputs['system']}"


def _write(path: Path, text: str) -> None:
    """Atomically: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


class FrameProgress:
    """Frames done / total and frames/s into the job row, at most every progress_every_s."""

    def __init__(self, st: state.WorkerState, job_id: str, jlog: logging.Logger) -> None:
        self.state, self.job_id, self.jlog = st, job_id, jlog
        self.start = self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == 0:
            self.start = now
        elif done < total and now - self.last < self.state.settings.progress_every_s:
            return
        self.last = now
        rate = done / (now - self.start) if done and now > self.start else None
        eta = (total - done) / rate if rate else None
        report(self.state.sessions, self.job_id, self.state.worker_id, step=done, total=total, rate=rate, eta_s=eta)
        if done:
            self.jlog.info("predicted %d/%d frames, %.1f frames/s", done, total, rate or 0.0)


def _spectrum(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    from model.spectrum_pipeline import parse_request, run_spectrum

    inputs = job.inputs
    request = parse_request(inputs["kind"], inputs["dt_fs"], inputs["options"])
    fmt = inputs["trajectory"]["format"] if "trajectory" in inputs else "deepmd/npy"
    request = dataclasses.replace(request, format=fmt)  # as the api read it
    st = state.current()
    model_path = layout.model_file(st.settings.root, inputs["model_id"])
    model = load_cached(str(model_path), st.device()[0], st.settings.max_search_candidates)

    def loaded(traj: System) -> None:
        jlog.info("read %d frames of %d atoms (%s)", traj.nframes, traj.natoms, fmt)

    source, name = _source(job, folder)
    try:
        result = run_spectrum(model, [source], request, model_id=inputs["model_id"],
                              predictions=[folder / "predictions.npz"], progress=FrameProgress(st, job.id, jlog),
                              should_stop=monitor.should_stop, on_loaded=loaded)
    except InterruptedError:
        return Outcome(monitor.stopped())
    except DataError as exc:  # name the file as the user knows it, not by our path
        if exc.path is None:
            raise
        raise DataError(exc.detail, path=layout.shown(exc.path, {source: name})) from exc
    spectrum = result.spectrum
    _write(folder / "spectrum.json", json.dumps(spectrum.to_dict()))
    _write(folder / "spectrum.csv", spectrum.to_csv())
    channel = next(iter(spectrum.intensities))
    peak = float(spectrum.wavenumber_cm[int(spectrum.intensities[channel].argmax())])
    summary: dict[str, Any] = {
        "files": ["spectrum.json", "spectrum.csv", "predictions.npz"], "frames": result.frames,
        "atoms": result.atoms, "predict_s": round(result.predict_s, 3),
        "frames_per_s": round(result.frames_per_s, 1), "batch_size": result.batch_size,
        "grid_spacing_cm": spectrum.metadata["grid_spacing_cm"], "strongest_peak_cm": peak,
    }
    if result.member_spectra is not None:  # a committee: its peaks with their spread over members
        summary["committee_size"] = len(result.member_spectra)
        summary["peaks"] = [{k: p[k] for k in ("channel", "mean_cm", "std_cm")} for p in spectrum.peaks or []]
        jlog.info("committee of %d: %s", len(result.member_spectra),
                  ", ".join(f"{p['mean_cm']:.0f} ± {p['std_cm']:.1f} cm⁻¹" for p in summary["peaks"]))
    jlog.info("spectrum: %d frames at %.1f frames/s (chunks of %d), strongest %s peak at %.0f cm⁻¹",
              result.frames, result.frames_per_s, result.batch_size, channel, peak)
    return Outcome("succeeded", summary)


@shared_task(name=JOB_TASKS["spectrum"][0], bind=True)
def spectrum_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, _spectrum)
