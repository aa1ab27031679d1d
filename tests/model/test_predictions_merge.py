"""Predictions files of consecutive frame ranges joined in order equal one unsplit run (a
committee's extra arrays too, members on axis 0 of member_global); parts that do not
belong together are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.committee import Committee
from model.errors import DataError
from model.inference import save_predictions_npz
from model.predictions_merge import merge_predictions_npz
from tests.model.conftest import random_frames, tiny_model
from tests.model.test_committee import member


@pytest.mark.parametrize("committee", [False, True])
def test_joined_parts_equal_the_unsplit_file(tmp_path: Path, committee: bool) -> None:
    model = Committee([member("dipole", s) for s in range(3)]).eval() if committee else tiny_model("dipole")
    coord, atype, box = random_frames(23, 6, 2, seed=3)
    save_predictions_npz(tmp_path / "whole.npz", model, coord, atype, box)
    parts = []
    for i, (a, b) in enumerate([(0, 10), (10, 20), (20, 23)]):
        parts.append(save_predictions_npz(tmp_path / f"{i}.npz", model, coord[a:b], atype, box[a:b], batch_size=4))
    assert merge_predictions_npz(parts, tmp_path / "joined.npz") == 23
    with np.load(tmp_path / "joined.npz") as got, np.load(tmp_path / "whole.npz") as want:
        assert sorted(got.files) == sorted(want.files) and ("member_global" in want.files) == committee
        for key in want.files:
            assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype, key
            if want[key].dtype.kind == "f":
                np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-15, err_msg=key)
            else:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_parts_of_different_models_are_refused(tmp_path: Path) -> None:
    coord, atype, box = random_frames(6, 6, 2, seed=3)
    a = save_predictions_npz(tmp_path / "a.npz", tiny_model("dipole"), coord, atype, box)
    b = save_predictions_npz(tmp_path / "b.npz", Committee([member("dipole", s) for s in range(2)]).eval(), coord,
                             atype, box)
    with pytest.raises(DataError, match="the first part"):
        merge_predictions_npz([a, b], tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists() and not list(tmp_path.glob(".*partial"))
