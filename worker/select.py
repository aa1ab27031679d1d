"""``dptensor.select`` (batch queue): a selection job is model.select with the job's inputs —
committee deviations frame by frame (progress in frames), the [lo, hi) frames written as an
unlabelled DeePMD system and packed as candidates.tar.gz, with the counts and histogram."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tarfile
from pathlib import Path
from typing import Any

from celery import Task, shared_task

from jobs import layout
from jobs.queue import JOB_TASKS
from jobs.tables import Job
from model.committee import Committee
from model.errors import CheckpointError
from worker import state
from worker.jobrun import Outcome, run_job
from worker.predict import Stopped, load_cached
from worker.progress import FrameProgress, JobMonitor

RESULT_FILES = ("selection.json", "histogram.csv", "deviation.txt")


def _source(job: Job, folder: Path) -> Path:
    inputs = job.inputs
    if "trajectory" in inputs:
        return folder / inputs["trajectory"]["file"]
    return layout.dataset_files(state.current().settings.root, inputs["dataset_id"], inputs["system"])


def _select(job: Job, folder: Path, monitor: JobMonitor, jlog: logging.Logger) -> Outcome:
    from model.select import frame_deviation, select, write_candidates
    from model.spectrum_pipeline import check_elements, load_frames, model_box, parse_request

    inputs = job.inputs
    st = state.current()
    committee = load_cached(str(layout.model_file(st.settings.root, inputs["model_id"])), st.device()[0],
                            st.settings.max_search_candidates)
    if not isinstance(committee, Committee) or committee.size < 2:
        raise CheckpointError(f"model {inputs['model_id']} is not a committee of at least 2 members")
    fmt = inputs["trajectory"]["format"] if "trajectory" in inputs else "deepmd/npy"
    request = dataclasses.replace(parse_request("ir" if committee.kind == "dipole" else "raman", 1.0), format=fmt)
    traj = load_frames(_source(job, folder), request)
    atype = check_elements(request, traj.symbols, committee.type_map)
    box = model_box(traj)
    jlog.info("read %d frames of %d atoms; committee of %d", traj.nframes, traj.natoms, committee.size)
    report = FrameProgress(st, job.id, jlog)

    def progress(done: int, total: int) -> None:
        report(done, total)
        if done < total and monitor.should_stop():
            raise Stopped

    try:
        devi = frame_deviation(committee, traj.coord, atype, box, criterion=inputs["criterion"], progress=progress)
    except Stopped:
        return Outcome(monitor.stopped())
    selection = select(devi, float(inputs["lo"]), float(inputs["hi"]), max_frames=inputs.get("max_frames"),
                       criterion=inputs["criterion"])
    out = write_candidates(folder / "candidates", selection, traj.coord, atype, box, committee.type_map)
    partial = folder / ".candidates.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(out, arcname="candidates")
    partial.rename(folder / "candidates.tar.gz")
    for name in RESULT_FILES:
        shutil.copyfile(out / name, folder / name)
    summary: dict[str, Any] = {k: v for k, v in selection.summary().items() if k != "selected_frames"}
    summary["files"] = ["candidates.tar.gz", *RESULT_FILES]
    jlog.info("%d frames: %d accurate, %d candidates (%d written), %d failed", devi.size, selection.n_accurate,
              selection.n_candidates, selection.candidates.size, selection.n_failed)
    return Outcome("succeeded", summary)


@shared_task(name=JOB_TASKS["select"][0], bind=True)
def select_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, _select)
