"""The data directory's one owner: where things live and how their paths are shown."""

from __future__ import annotations

from pathlib import Path

from jobs import layout
from jobs.datasets import resolve_refs


def test_where_things_live(tmp_path: Path) -> None:
    assert layout.dataset_files(tmp_path, "ds-1", "a/b") == tmp_path / "datasets" / "ds-1" / "files" / "a" / "b"
    assert layout.dataset_files(tmp_path, "ds-1") == tmp_path / "datasets" / "ds-1" / "files"
    assert layout.model_file(tmp_path, "mdl-1") == tmp_path / "models" / "mdl-1" / "model.pt"
    assert layout.job_dir(tmp_path, "job-1") == tmp_path / "jobs" / "job-1"
    raw = {"training": {"training_data": {"systems": ["dataset:ds-1/a/b"]},
                        "validation_data": {"systems": "dataset:ds-1"}}}
    out = resolve_refs(raw, tmp_path)["training"]
    assert out["training_data"]["systems"] == [str(layout.dataset_files(tmp_path, "ds-1", "a/b"))]
    assert out["validation_data"]["systems"] == [str(layout.dataset_files(tmp_path, "ds-1"))]


def test_paths_are_shown_as_users_know_them(tmp_path: Path) -> None:
    sys_dir = layout.dataset_files(tmp_path, "ds-1", "water/train")
    text = f"{sys_dir}/set.000/coord.npy: bad; see also {tmp_path}/datasets/ds-2/files/x"
    assert layout.shown_as_refs(text, tmp_path) == (
        "dataset:ds-1/water/train/set.000/coord.npy: bad; see also dataset:ds-2/x")
    assert layout.shown_inside(f"{sys_dir}/set.000: bad; {sys_dir}", sys_dir) == "set.000: bad; ."
    # the longest server path wins: a file inside a named folder keeps its own name
    folder = tmp_path / "upload"
    assert layout.shown(f"{folder}/traj.xyz and {folder}", {folder: "my folder", folder / "traj.xyz": "traj.xyz"}
                        ) == "traj.xyz and my folder"
