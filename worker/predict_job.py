"""``dptensor.predict_job`` (batch queue): a prediction job in chunks of frames
(worker/fanout.py: every idle batch worker takes one; DPTENSOR_CHUNK_FRAMES frames each,
at most DPTENSOR_MAX_CHUNKS chunks). A system of a dataset: each chunk writes its frames'
predictions.npz, the fan-in joins them in frame order into predictions.npz (+ .csv).
Structures of a request (structures.json): each chunk its rows, joined into
predictions.json. The joined files are those one unsplit run writes."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from jobs import layout
from jobs.chunks import ChunkSpec
from jobs.datasets import resolve_refs
from jobs.tables import Job, JobChunk
from model.inference import committee_size
from worker import metrics, state
from worker.fanout import ChunkRun, register
from worker.jobrun import Outcome
from worker.predict import born_structures, load_cached, predict_structures


def _model(job: Job) -> Any:
    st = state.current()
    return load_cached(str(layout.model_file(st.settings.root, job.inputs["model_id"])), st.device()[0],
                       st.settings.max_search_candidates)


def _system_path(job: Job) -> Path:
    ref = job.inputs["system"]
    resolved = resolve_refs({"training": {"training_data": {"systems": [ref]}}}, state.current().settings.root)
    return Path(resolved["training"]["training_data"]["systems"][0])


def _part(folder: Path, index: int, suffix: str) -> Path:
    return folder / "chunks" / f"{index}{suffix}"


def frame_ranges(n: int, chunk_frames: int, max_chunks: int) -> list[tuple[int, int]]:
    """[start, stop) of consecutive chunks covering n frames: chunk_frames each, larger
    when that would make more than max_chunks."""
    size = max(chunk_frames, math.ceil(n / max_chunks), 1)
    return [(a, min(a + size, n)) for a in range(0, n, size)] or [(0, 0)]


class Predictions:
    """The prediction job as chunks (worker.fanout.FanoutKind)."""

    def plan(self, job: Job, folder: Path) -> list[ChunkSpec]:
        settings = state.current().settings
        if "system" in job.inputs:
            n = job.total
            if n is None:  # the api records the system's frames; an older row may not
                from model.structures import load_structures

                n = int(load_structures(str(_system_path(job)), _model(job).type_map)[0].shape[0])
        else:
            n = len(json.loads((folder / "structures.json").read_text()))
        return [ChunkSpec(label=f"frames {a}-{b - 1}", spec={"start": a, "stop": b}, total=b - a)
                for a, b in frame_ranges(n, settings.chunk_frames, settings.max_chunks)]

    def run(self, job: Job, folder: Path, chunk: ChunkRun) -> dict[str, Any]:
        a, b = int(chunk.row.spec["start"]), int(chunk.row.spec["stop"])
        model = _model(job)
        _part(folder, 0, "").parent.mkdir(exist_ok=True)
        if "system" in job.inputs:
            from model.inference import save_predictions_npz
            from model.structures import load_structures

            coord, atype, box = load_structures(str(_system_path(job)), model.type_map)
            save_predictions_npz(_part(folder, chunk.row.index, ".npz"), model, coord[a:b], atype,
                                 None if box is None else box[a:b], progress=chunk.progress,
                                 should_stop=chunk.should_stop)
        else:
            structures = json.loads((folder / "structures.json").read_text())[a:b]

            def progress(done: int, total: int) -> None:
                chunk.progress(done, total)
                if chunk.should_stop():
                    raise InterruptedError("prediction stopped")

            glob, atomic, extra = predict_structures(model, structures, progress)
            rows = [{"global_tensor": g.tolist(), "atomic_tensor": at.tolist(), **c}
                    for g, at, c in zip(glob, atomic, extra, strict=True)]
            if job.inputs.get("derivatives"):
                for row, z in zip(rows, born_structures(model, structures), strict=True):
                    row["born_charges"], row["sum_rule_violation"] = z["z"], z["sum_rule_violation"]
                    if "z_std" in z:  # a committee's
                        row["born_charges_std"] = z["z_std"]
            path = _part(folder, chunk.row.index, ".json")
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(json.dumps(rows))
            os.replace(partial, path)
        metrics.FRAMES.labels("job").inc(b - a)
        return {"frames": b - a}

    def combine(self, job: Job, folder: Path, rows: list[JobChunk], jlog: logging.Logger) -> Outcome:
        model = _model(job)
        frames = sum(int(r.spec["stop"]) - int(r.spec["start"]) for r in rows)
        if "system" in job.inputs:
            from model.committee_cli import write_frame_table
            from model.predictions_merge import merge_predictions_npz

            out = folder / "predictions.npz"
            parts = [_part(folder, r.index, ".npz") for r in rows]
            if any(p.exists() for p in parts) or not out.exists():  # not joined yet (a fan-in may run twice)
                if len(parts) == 1:
                    os.replace(parts[0], out)
                else:
                    merge_predictions_npz(parts, out)
            write_frame_table(out, str(out.with_suffix(".csv")), None)
            for p in parts:
                p.unlink(missing_ok=True)
            jlog.info("predictions of %d frames in %d chunk(s) joined in frame order", frames, len(rows))
            return Outcome("succeeded", {"file": "predictions.npz", "files": ["predictions.npz", "predictions.csv"],
                                         "frames": frames, "committee_size": committee_size(model)})
        out_rows: list[dict[str, Any]] = []
        for r in rows:
            out_rows.extend(json.loads(_part(folder, r.index, ".json").read_text()))
        (folder / "predictions.json").write_text(json.dumps({"model_id": job.inputs["model_id"], "kind": model.kind,
                                                             "committee_size": committee_size(model),
                                                             "results": out_rows}))
        return Outcome("succeeded", {"file": "predictions.json", "frames": len(out_rows)})


register("predict", Predictions())
