"""Spectra over several trajectories in parts (what a service job fans out): a part saved
and loaded again gives the same spectrum as the one-process run, in any order of
computation, and the pooled spectrum of equal-length runs is the mean of their spectra."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ase")

from model.errors import DataError
from model.spectrum_parts import TrajectoryPart, combine, predict_part, run_spectrum
from model.spectrum_pipeline import parse_request
from tests.model.conftest import tiny_model
from tests.model.test_spectrum_pipeline import rotating, write_xyz


def _runs(tmp_path: Path, n: int, frames: int = 120) -> list[Path]:
    out = []
    for i in range(n):
        syms, coords = rotating(frames, 2.0, 700.0 + 150.0 * i)
        out.append(write_xyz(tmp_path / f"run{i}.xyz", syms, coords + 0.01 * i))
    return out


def test_parts_saved_and_combined_equal_the_one_process_run(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    request = parse_request("ir", 2.0, {"units": "relative"})
    paths = _runs(tmp_path, 3)
    whole = run_spectrum(model, paths, request, model_id="m")
    for i, path in enumerate(reversed(paths)):  # computed in another order, each on its own
        predict_part(model, path, request).save(tmp_path / f"part{len(paths) - 1 - i}.npz")
    parts = [TrajectoryPart.load(tmp_path / f"part{i}.npz") for i in range(len(paths))]
    assert [p.name for p in parts] == ["run0.xyz", "run1.xyz", "run2.xyz"] and parts[0].volumes is None
    got = combine(request, model, parts, model_id="m")
    np.testing.assert_array_equal(got.spectrum.intensities["ir"], whole.spectrum.intensities["ir"])
    assert got.spectrum.metadata == whole.spectrum.metadata
    assert got.spectrum.metadata["n_trajectories"] == 3 and got.frames == 360


def test_pooled_equal_length_runs_are_the_mean_of_their_spectra(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    request = parse_request("ir", 2.0, {"units": "relative"})
    parts = [predict_part(model, p, request) for p in _runs(tmp_path, 4)]
    pooled = combine(request, model, parts).spectrum.intensities["ir"]
    alone = np.mean([combine(request, model, [p]).spectrum.intensities["ir"] for p in parts], axis=0)
    np.testing.assert_allclose(pooled, alone, rtol=1e-12, atol=1e-12 * np.abs(alone).max())


def test_parts_of_different_atom_counts_are_refused_by_name(tmp_path: Path) -> None:
    model = tiny_model("dipole")
    request = parse_request("ir", 2.0)
    a = predict_part(model, _runs(tmp_path, 1)[0], request)
    syms, coords = rotating(120, 2.0, 900.0)
    b = predict_part(model, write_xyz(tmp_path / "small.xyz", syms[:6], coords[:, :6]), request)
    with pytest.raises(DataError, match=re.escape("small.xyz: 6 atoms, the first trajectory (run0.xyz) has 9")):
        combine(request, model, [a, b])
