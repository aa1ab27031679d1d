"""The data directory, in one place: where each stored thing lives, and how a server path
is shown to the user who knows the thing by another name.

    <data_dir>/
      datasets/<id>/files/…      an uploaded archive, extracted (FILES)
      jobs/<id>/                 a job's inputs, log, checkpoints, results
      models/<id>/model.pt       a registered model (MODEL_FILE)
      models/.<id>.partial/      an uploaded checkpoint while a worker checks it
      tmp/                       uploads being checked
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

FILES = "files"  # datasets/<id>/files/ holds the extracted archive
MODEL_FILE = "model.pt"


def dataset_dir(root: Path, dataset_id: str) -> Path:
    return root / "datasets" / dataset_id


def dataset_files(root: Path, dataset_id: str, sub: str = "") -> Path:
    """A folder (or system) inside an uploaded dataset; ``sub`` as in ``dataset:<id>/<sub>``."""
    files = dataset_dir(root, dataset_id) / FILES
    return files / sub if sub else files


def job_dir(root: Path, job_id: str) -> Path:
    return root / "jobs" / job_id


def model_dir(root: Path, model_id: str) -> Path:
    return root / "models" / model_id


def model_file(root: Path, model_id: str) -> Path:
    return model_dir(root, model_id) / MODEL_FILE


def model_staging(root: Path, model_id: str) -> Path:
    return root / "models" / f".{model_id}.partial"


def staging_dir(root: Path, name: str) -> Path:
    return root / "tmp" / name


# --- paths as users know them -----------------------------------------------------------

def shown(text: str, names: Mapping[str, str] | Mapping[Path, str]) -> str:
    """``text`` with each server path of ``names`` replaced by the name its user knows
    (longest first, so a file inside a named folder keeps its own name)."""
    for server, user in sorted(((str(k), v) for k, v in names.items()), key=lambda kv: -len(kv[0])):
        text = text.replace(server, user)
    return text


def shown_inside(text: str, folder: Path) -> str:
    """Paths inside ``folder`` relative to it ('.' for the folder): the user knows their
    archive, not our data dir."""
    return shown(text, {f"{folder}/": "", str(folder): "."})


def shown_as_refs(text: str, root: Path) -> str:
    """Files of uploaded datasets as the ``dataset:<id>/<path>`` references users write."""
    return re.sub(re.escape(str(root / "datasets")) + r"/([A-Za-z0-9_-]+)/" + FILES + r"/?", r"dataset:\1/", text)
