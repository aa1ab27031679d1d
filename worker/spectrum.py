"""``dptensor.spectrum`` (batch queue): a spectrum job runs one chunk per trajectory
(worker/fanout.py: every idle batch worker takes one), each predicting its trajectory's
series with model.spectrum_parts; the fan-in pools them into one spectrum. Results in the
job folder: spectrum.json, spectrum.csv and the per-frame tensors — predictions.npz for one
trajectory, predictions-<i>.npz (i = 000, 001, … in the order given) for several."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from celery import Task, shared_task

from jobs import layout
from jobs.chunks import ChunkSpec
from jobs.queue import JOB_TASKS
from jobs.tables import Job, JobChunk
from model.errors import DataError
from model.spectrum_parts import TrajectoryPart
from model.spectrum_pipeline import SpectrumRequest
from model.system import System
from worker import state
from worker.fanout import ChunkRun, drive, register
from worker.jobrun import Outcome, run_job
from worker.predict import load_cached


class Source(NamedTuple):
    path: Path  # on this machine
    name: str  # as the user knows it
    format: str
    frames: int | None  # as the api read them (None: longer than it read)


def sources(job: Job, folder: Path) -> list[Source]:
    """The job's trajectories in order: one upload (``trajectory``), several
    (``trajectories``), or systems of a dataset (``system`` / ``systems``)."""
    inputs = job.inputs
    if "trajectory" in inputs or "trajectories" in inputs:
        uploads = inputs.get("trajectories") or [inputs["trajectory"]]
        return [Source(folder / t["file"], t.get("filename", t["file"]), t["format"], t.get("frames"))
                for t in uploads]
    root, ds = state.current().settings.root, inputs["dataset_id"]
    systems = inputs.get("systems") or [{"system": inputs["system"], "frames": inputs.get("frames")}]
    return [Source(layout.dataset_files(root, ds, s["system"]), f"dataset:{ds}/{s['system']}", "deepmd/npy",
                   s.get("frames")) for s in systems]


def predictions_name(index: int, count: int) -> str:
    return "predictions.npz" if count == 1 else f"predictions-{index:0{max(3, len(str(count - 1)))}d}.npz"


def _part_file(folder: Path, index: int) -> Path:
    return folder / "chunks" / f"{index}.npz"


def _write(path: Path, text: str) -> None:
    """Atomically: a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _request(job: Job, fmt: str) -> SpectrumRequest:
    from model.spectrum_pipeline import parse_request

    inputs = job.inputs
    return dataclasses.replace(parse_request(inputs["kind"], inputs["dt_fs"], inputs["options"]), format=fmt)


class Spectra:
    """The spectrum job as chunks (worker.fanout.FanoutKind)."""

    def plan(self, job: Job, folder: Path) -> list[ChunkSpec]:
        return [ChunkSpec(label=s.name, spec={"trajectory": i}, total=s.frames)
                for i, s in enumerate(sources(job, folder))]

    def run(self, job: Job, folder: Path, chunk: ChunkRun) -> dict[str, Any]:
        from model.spectrum_parts import predict_part

        st = state.current()
        every = sources(job, folder)
        index = int(chunk.row.spec["trajectory"])
        source = every[index]
        request = _request(job, source.format)
        model = load_cached(str(layout.model_file(st.settings.root, job.inputs["model_id"])), st.device()[0],
                            st.settings.max_search_candidates)
        limit = st.settings.max_spectrum_frames

        def loaded(traj: System) -> None:
            if traj.nframes > limit:  # the api checks the frames it reads; this bounds a longer run
                raise DataError(f"{traj.nframes} frames: a spectrum job takes at most {limit} "
                                "(DPTENSOR_MAX_SPECTRUM_FRAMES)", path=str(source.path))
            chunk.jlog.info("%s: read %d frames of %d atoms (%s)", source.name, traj.nframes, traj.natoms,
                            source.format)

        out = folder / predictions_name(index, len(every))
        try:
            part = predict_part(model, source.path, request, name=source.name, predictions=out,
                                progress=chunk.progress, should_stop=chunk.should_stop, on_loaded=loaded)
        except DataError as exc:  # name the file as the user knows it, not by our path
            if exc.path is None:
                raise
            raise DataError(exc.detail, path=layout.shown(exc.path, {source.path: source.name})) from exc
        _part_file(folder, index).parent.mkdir(exist_ok=True)
        part.save(_part_file(folder, index))
        return {"frames": part.nframes, "atoms": part.natoms, "predict_s": round(part.predict_s, 3),
                "file": out.name}

    def combine(self, job: Job, folder: Path, rows: list[JobChunk], jlog: logging.Logger) -> Outcome:
        from model.spectrum_parts import combine

        st = state.current()
        inputs = job.inputs
        model = load_cached(str(layout.model_file(st.settings.root, inputs["model_id"])), st.device()[0],
                            st.settings.max_search_candidates)
        parts = [TrajectoryPart.load(_part_file(folder, r.index)) for r in rows]
        result = combine(_request(job, sources(job, folder)[0].format), model, parts, inputs["model_id"])
        spectrum = result.spectrum
        _write(folder / "spectrum.json", json.dumps(spectrum.to_dict()))
        _write(folder / "spectrum.csv", spectrum.to_csv())
        channel = next(iter(spectrum.intensities))
        peak = float(spectrum.wavenumber_cm[int(spectrum.intensities[channel].argmax())])
        summary: dict[str, Any] = {
            "files": ["spectrum.json", "spectrum.csv", *[predictions_name(r.index, len(rows)) for r in rows]],
            "frames": result.frames, "atoms": result.atoms, "predict_s": round(result.predict_s, 3),
            "frames_per_s": round(result.frames_per_s, 1), "batch_size": result.batch_size,
            "grid_spacing_cm": spectrum.metadata["grid_spacing_cm"], "strongest_peak_cm": peak,
        }
        if len(rows) > 1:
            summary["trajectories"] = len(rows)
            summary["workers"] = len({r.worker_id for r in rows})
        if result.member_spectra is not None:  # a committee: its peaks with their spread over members
            summary["committee_size"] = len(result.member_spectra)
            summary["peaks"] = [{k: p[k] for k in ("channel", "mean_cm", "std_cm")} for p in spectrum.peaks or []]
            jlog.info("committee of %d: %s", len(result.member_spectra),
                      ", ".join(f"{p['mean_cm']:.0f} ± {p['std_cm']:.1f} cm⁻¹" for p in summary["peaks"]))
        jlog.info("spectrum: %d frames of %d trajector%s at %.1f frames/s (chunks of %d), strongest %s peak "
                  "at %.0f cm⁻¹", result.frames, len(rows), "y" if len(rows) == 1 else "ies", result.frames_per_s,
                  result.batch_size, channel, peak)
        return Outcome("succeeded", summary)


register("spectrum", Spectra())


@shared_task(name=JOB_TASKS["spectrum"][0], bind=True)
def spectrum_task(self: Task, job_id: str) -> str:
    return run_job(self, job_id, drive)
