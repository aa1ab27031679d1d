"""The neighbour search is bounded: thin periodic cells are refused before any work, with
the numbers that explain why; legitimate small cells still give the physics of the
replicated crystal; absurd coordinates are refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from model import neighbor
from model.errors import DataError
from model.inference import predict
from model.neighbor import build_neighbor_list
from model.search_budget import SearchTooCostly, perpendicular_widths, plan_search
from tests.model.conftest import random_frames, tiny_model

ROOT = Path(__file__).resolve().parents[2]


def ten_waters_in_a_thin_cell(a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outside campaign's request: 10 waters, cell [[a,0,0],[0,a,0],[0,0,100]]."""
    rng = np.random.default_rng(0)
    mol = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
    coord = np.concatenate([mol + rng.random(3) * [3.0, 3.0, 30.0] for _ in range(10)])[None]  # [1, 30, 3]
    atype = np.array([0, 1, 1] * 10)
    return coord, atype, np.diag([a, a, 100.0])[None]


@pytest.mark.parametrize("a", [0.01, 0.03, 0.05])
def test_thin_cell_is_refused_with_widths_cutoff_and_images(a: float) -> None:
    _, _, box = ten_waters_in_a_thin_cell(a)
    with pytest.raises(SearchTooCostly) as err:
        plan_search(30, perpendicular_widths(box[0]), 6.0)
    msg = str(err.value)
    images = 2 * int(6.0 / a + 0.5) + 1
    assert err.value.path == "cell" and isinstance(err.value, DataError)
    assert f"perpendicular widths ({a:.4g}, {a:.4g}, 100) Å with rcut 6 Å" in msg
    assert f"{images}×{images}×1 = {images * images} periodic images of 30 atoms" in msg


def test_thin_cells_answer_in_bounded_time_and_memory() -> None:
    """The whole prediction path of a fresh process (the worker's), a = 0.01 / 0.03 / 0.05 Å:
    within 2 s each and 300 MB above the warmed-up process. Unbounded, a = 0.01 needs ~20 GB:
    the address space is capped (+2 GB) so that an unbounded search fails fast here."""
    script = textwrap.dedent("""
        import json, resource, sys, time
        import numpy as np
        sys.path.insert(0, sys.argv[1])
        from model.search_budget import SearchTooCostly
        from model.inference import predict
        from tests.model.conftest import tiny_model
        from tests.model.test_search_budget import ten_waters_in_a_thin_cell
        model = tiny_model("polar", rcut=6.0, rcut_smth=1.0, sel=[46, 92])
        coord, atype, _ = ten_waters_in_a_thin_cell(1.0)
        predict(model, coord, atype, np.diag([20.0, 20.0, 100.0])[None])  # warm up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
        out = []
        for a in (0.01, 0.03, 0.05):
            coord, atype, box = ten_waters_in_a_thin_cell(a)
            t0 = time.process_time()  # CPU seconds: wall time on a shared machine is noise
            try:
                predict(model, coord, atype, box)
                answer = "computed"
            except SearchTooCostly:
                answer = "refused"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out.append({"a": a, "s": time.process_time() - t0, "extra_mb": (rss - base) / 1024, "answer": answer})
        print(json.dumps(out))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    for case in json.loads(run.stdout.splitlines()[-1]):
        assert case["s"] < 2.0 and case["extra_mb"] < 300, case


def test_cell_list_is_taken_where_brute_force_is_over_budget() -> None:
    # 400 atoms in a 20 Å box: the brute force compares each centre with 400 atoms, the
    # cell list with 27 cells of ~2 atoms; with a budget of 300 only the cell list fits
    plan = plan_search(400, np.array([20.0, 20.0, 20.0]), 3.0, budget=300)
    assert plan.cell_list and plan.candidates < 300
    with pytest.raises(SearchTooCostly):
        plan_search(400, np.array([20.0, 20.0, 20.0]), 3.0, budget=40)
    coord, atype, box = random_frames(1, 400, 2, box_len=20.0, seed=8, min_dist=1.2)
    args = (torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box), torch.arange(400), 3.0, [40, 40])
    brute = build_neighbor_list(*args)
    cells = build_neighbor_list(*args, max_candidates=300)
    assert torch.equal(brute.counts, cells.counts)
    key = lambda nl: sorted(zip(nl.centre.tolist(), np.round(nl.vec.numpy(), 9).tolist(), strict=True))  # noqa: E731
    assert key(brute) == key(cells)


def test_widths_match_the_torch_search() -> None:
    _, _, box = random_frames(3, 4, 2, box_len=3.0, seed=2, triclinic=True, min_dist=0.5)
    assert box is not None
    np.testing.assert_allclose(perpendicular_widths(box), neighbor.perpendicular_widths(torch.as_tensor(box)).numpy())


@pytest.mark.parametrize(("coord_scale", "cell_scale", "name"), [(1e300, 1.0, "coordinates"),
                                                                   (1.0, 1e100, "cell"),
                                                                   (float("nan"), 1.0, "coordinates")])
def test_overflowing_coordinates_and_cells_are_refused(coord_scale: float, cell_scale: float, name: str) -> None:
    model = tiny_model()
    coord, atype, box = random_frames(1, 6, 2, box_len=6.0, seed=1)
    assert box is not None
    coord[0, 0] *= coord_scale
    with pytest.raises(DataError, match=f"{name} must be finite and within ±1e\\+06 Å") as err:
        predict(model, coord, atype, box * cell_scale)
    assert err.value.path == name


def test_small_cubic_cell_predicts_the_same_as_its_replicated_supercell() -> None:
    """A 2.5 Å cubic cell with a 6 Å cutoff (5 images per axis) is legitimate: each atom's
    tensor equals that of the same atom in the 5×5×5 supercell, the global tensor 1/125."""
    model = tiny_model("polar", sel_type=[0, 1], rcut=6.0, rcut_smth=2.0, sel=[90, 90])
    cell = np.eye(3) * 2.5
    coord = np.array([[0.1, 0.2, 0.3], [1.3, 1.1, 1.4]])
    atype = np.array([0, 1])
    small = predict(model, coord[None], atype, cell[None])
    shifts = np.array([[i, j, k] for i in range(5) for j in range(5) for k in range(5)]) @ cell  # [125, 3]
    big_coord = (coord[None, :, :] + shifts[:, None, :]).reshape(1, -1, 3)  # image-major: atom i at 2n+i
    big = predict(model, big_coord, np.tile(atype, 125), (cell * 5)[None])
    np.testing.assert_allclose(big.atomic_tensor[0].reshape(125, 2, 9), np.broadcast_to(small.atomic_tensor[0],
                                                                                         (125, 2, 9)), atol=1e-10)
    np.testing.assert_allclose(big.global_tensor[0], 125 * small.global_tensor[0], rtol=1e-10, atol=1e-10)
    assert np.abs(small.global_tensor).max() > 1e-3  # a real signal, not zeros
