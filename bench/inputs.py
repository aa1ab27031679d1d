"""Benchmark inputs shared by both virtualenvs (stdlib + numpy only).

Imported by the orchestrators (our venv) and by ``_deepmd_runner.py`` (DeePMD-kit venv),
so that both tools get byte-identical training inputs and identical inference frames.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(os.environ.get("DPTENSOR_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"
WATER_DIR = DATA_DIR / "water_tensor"
REFERENCE_DIR = DATA_DIR / "deepmd_reference"
TASKS = ("dipole", "polar")


@dataclass(frozen=True)
class Task:
    """Files of one example task (dipole or polar)."""

    name: str

    @property
    def input_json(self) -> Path:
        return WATER_DIR / self.name / f"{self.name}_input_torch.json"

    @property
    def reference_model(self) -> Path:
        return REFERENCE_DIR / self.name / "model_slim.pt"

    def validation_system(self, kind: str) -> Path:
        """``kind`` is ``atomic`` or ``global``."""
        return WATER_DIR / self.name / "validation_data_reformat" / f"{kind}_system"


def task_names(choice: str) -> list[str]:
    """Expand a ``--task`` value (``dipole``, ``polar`` or ``both``)."""
    return list(TASKS) if choice == "both" else [choice]


def _absolute_systems(systems: Any, base: Path) -> Any:
    if isinstance(systems, str):
        return str((base / systems).resolve())
    return [str((base / s).resolve()) for s in systems]


def prepare_input(
    src: Path,
    workdir: Path,
    steps: int,
    seed: int | None = None,
    disp_freq: int | None = None,
    save_freq: int | None = None,
) -> Path:
    """Copy a DeePMD-kit input.json into ``workdir`` with the run controls rewritten.

    ``numb_steps`` = steps; ``seed`` when given; ``disp_freq`` when given (else kept, but
    at most ``steps``); ``save_freq`` when given, else ``steps`` (one save, at the end).
    System paths are made absolute (relative to the input's folder).
    """
    data: dict[str, Any] = json.loads(src.read_text())
    training = data["training"]
    for key in ("training_data", "validation_data"):
        if key in training and "systems" in training[key]:
            training[key]["systems"] = _absolute_systems(
                training[key]["systems"], src.resolve().parent
            )
    training["numb_steps"] = steps
    if seed is not None:
        training["seed"] = seed
    training["disp_freq"] = min(disp_freq or training.get("disp_freq", 1000), steps)
    training["save_freq"] = save_freq or steps
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / "input.json"
    dest.write_text(json.dumps(data, indent=2) + "\n")
    return dest


@dataclass
class Frames:
    """Frames for inference timing: coord [nf, natoms, 3], atype [natoms], box or None."""

    coord: np.ndarray
    atype: np.ndarray
    box: np.ndarray | None

    @property
    def nframes(self) -> int:
        return int(self.coord.shape[0])


def _load_system(path: Path) -> Frames:
    atype = np.loadtxt(path / "type.raw", dtype=np.int64).reshape(-1)
    sets = sorted(p for p in path.glob("set.*") if p.is_dir())
    coord = np.concatenate([np.load(s / "coord.npy") for s in sets]).astype(np.float64)
    coord = coord.reshape(coord.shape[0], atype.size, 3)
    box = None
    if not (path / "nopbc").exists():
        box = np.concatenate([np.load(s / "box.npy") for s in sets]).astype(np.float64)
        box = box.reshape(-1, 3, 3)
    return Frames(coord, atype, box)


def inference_frames(task: str, nframes: int) -> Frames:
    """The first ``nframes`` of the task's validation data (global then atomic system,
    repeated cyclically when more frames are asked for than exist), float64."""
    parts = [_load_system(Task(task).validation_system(k)) for k in ("global", "atomic")]
    if any(not np.array_equal(p.atype, parts[0].atype) for p in parts):
        raise ValueError(f"{task}: validation systems have different type.raw")
    coord = np.concatenate([p.coord for p in parts])
    boxes = [p.box for p in parts if p.box is not None]
    box = np.concatenate(boxes) if len(boxes) == len(parts) else None
    idx = np.arange(nframes) % coord.shape[0]
    return Frames(
        np.ascontiguousarray(coord[idx]),
        parts[0].atype,
        None if box is None else np.ascontiguousarray(box[idx]),
    )


def write_system(frames: Frames, dest: Path, type_map: list[str]) -> Path:
    """Write ``frames`` as a DeePMD npy system (one set, float64) at ``dest``, so that both
    tools read their frames from the same file. Kept when already complete."""
    coord_file = dest / "set.000" / "coord.npy"
    if coord_file.exists() and np.load(coord_file, mmap_mode="r").shape[0] == frames.nframes:
        return dest
    (dest / "set.000").mkdir(parents=True, exist_ok=True)
    (dest / "type.raw").write_text("\n".join(str(int(t)) for t in frames.atype) + "\n")
    (dest / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if frames.box is None:
        (dest / "nopbc").touch()
    else:
        np.save(dest / "set.000" / "box.npy", frames.box.reshape(frames.nframes, 9))
    tmp = dest / "set.000" / "coord.tmp.npy"
    np.save(tmp, frames.coord.reshape(frames.nframes, -1))
    tmp.replace(coord_file)  # last, so an interrupted write is redone
    return dest


def read_system(path: Path) -> Frames:
    """The frames of a system written by :func:`write_system` (plain numpy reads)."""
    return _load_system(path)


def replicate(coord: np.ndarray, box: np.ndarray, reps: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One frame [nat, 3] with its box [3, 3] → the (a, b, c)-fold supercell."""
    shifts = np.array([[i, j, k] for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])],
                      dtype=float) @ box
    return (coord[None] + shifts[:, None]).reshape(-1, 3), box * np.array(reps, dtype=float)[:, None]
