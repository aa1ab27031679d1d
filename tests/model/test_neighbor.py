"""Neighbour lists against a brute-force loop over periodic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import descriptor, neighbor, reference
from model.neighbor import NeighborWarning, build_neighbor_list, perpendicular_widths
from tests.model.conftest import random_frames


def _ours(coord: np.ndarray, atype: np.ndarray, box: np.ndarray | None, rcut: float, sel: list[int]):
    nl = build_neighbor_list(torch.as_tensor(coord), torch.as_tensor(atype),
                             None if box is None else torch.as_tensor(box),
                             torch.arange(coord.shape[1]), rcut, sel)
    nat = coord.shape[1]
    per_centre: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for c, t, v in zip(nl.centre.tolist(), nl.ntype.tolist(), nl.vec.numpy(), strict=True):
        per_centre.setdefault((c // nat, c % nat), []).append((t, v))
    return nl, per_centre


def _canon(vectors: list[np.ndarray]) -> np.ndarray:
    """Order-independent representation of a set of displacement vectors."""
    if not vectors:
        return np.zeros((0, 3))
    arr = np.round(np.array(vectors), 8)
    return arr[np.lexsort(arr.T[::-1])]


def _check_against_reference(coord, atype, box, rcut, sel) -> int:
    nl, ours = _ours(coord, atype, box, rcut, sel)
    total = 0
    for f in range(coord.shape[0]):
        for i in range(coord.shape[1]):
            blocks = reference.select(
                reference.neighbours(coord[f], None if box is None else box[f], i, rcut), atype, sel)
            got = ours.get((f, i), [])
            for t in range(len(sel)):
                expect = _canon(blocks[t])
                mine = _canon([v for tt, v in got if tt == t])
                assert mine.shape == expect.shape, (f, i, t)
                np.testing.assert_allclose(mine, expect, atol=1e-9)
                total += len(blocks[t])
            assert nl.counts[f * coord.shape[1] + i].tolist() == [len(b) for b in blocks]
    return total


@pytest.mark.parametrize("pbc", [True, False])
def test_cubic_and_open_frames_match_brute_force(pbc: bool) -> None:
    coord, atype, box = random_frames(3, 24, 2, box_len=7.0, seed=1, pbc=pbc)
    assert _check_against_reference(coord, atype, box, 3.0, [40, 40]) > 0


def test_small_triclinic_cell_sees_several_images_of_one_atom() -> None:
    # rcut larger than the cell: each atom sees many images of every atom, itself included.
    coord, atype, box = random_frames(2, 5, 2, box_len=3.0, seed=2, triclinic=True, min_dist=0.6)
    assert box is not None
    assert perpendicular_widths(torch.as_tensor(box)).min() < 3.5
    total = _check_against_reference(coord, atype, box, 3.5, [200, 200])
    nl, ours = _ours(coord, atype, box, 3.5, [200, 200])
    # the same neighbour atom appears as several images: more pairs than atoms
    assert max(len(v) for v in ours.values()) > coord.shape[1]
    assert total == nl.vec.shape[0]


def test_sel_truncation_follows_two_stage_rule_and_warns() -> None:
    coord, atype, box = random_frames(2, 30, 2, box_len=6.0, seed=4)
    with pytest.warns(NeighborWarning, match="dropped"):
        nl, _ = _ours(coord, atype, box, 3.5, [3, 2])
    assert nl.n_dropped > 0
    assert int(nl.counts[:, 0].max()) <= 3 and int(nl.counts[:, 1].max()) <= 2
    with pytest.warns(NeighborWarning):
        _check_against_reference(coord, atype, box, 3.5, [3, 2])


def test_cell_list_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    for pbc, triclinic in ((True, False), (True, True), (False, False)):
        coord, atype, box = random_frames(2, 60, 2, box_len=9.0, seed=5, pbc=pbc, triclinic=triclinic)
        args = (torch.as_tensor(coord), torch.as_tensor(atype), None if box is None else torch.as_tensor(box),
                torch.arange(60), 2.5, [30, 30])
        brute = build_neighbor_list(*args)
        monkeypatch.setattr(neighbor, "CELL_LIST_MIN_ATOMS", 10)
        cells = build_neighbor_list(*args)
        monkeypatch.setattr(neighbor, "CELL_LIST_MIN_ATOMS", 1500)
        assert torch.equal(brute.counts, cells.counts)
        for c in range(brute.n_centres):
            a = _canon(list(brute.vec[brute.centre == c].numpy()))
            b = _canon(list(cells.vec[cells.centre == c].numpy()))
            np.testing.assert_allclose(a, b, atol=1e-9)


def test_cell_list_in_small_periodic_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbor, "CELL_LIST_MIN_ATOMS", 1)
    coord, atype, box = random_frames(1, 6, 2, box_len=3.2, seed=6, triclinic=True, min_dist=0.7)
    _check_against_reference(coord, atype, box, 3.5, [300, 300])


def test_pairs_of_a_centre_are_contiguous_and_counted() -> None:
    coord, atype, box = random_frames(2, 20, 2, box_len=6.0, seed=7)
    nl, _ = _ours(coord, atype, box, 3.0, [30, 30])
    assert torch.all(nl.centre[1:] >= nl.centre[:-1])
    per_centre = torch.bincount(nl.centre, minlength=nl.n_centres)
    assert torch.equal(per_centre, nl.counts.sum(1))
    for t in (0, 1):
        assert torch.equal(torch.bincount(nl.centre[nl.ntype == t], minlength=nl.n_centres), nl.counts[:, t])


@pytest.mark.parametrize("pbc", [True, False])
def test_pair_order_is_the_stable_sort_of_the_run_keys(pbc: bool) -> None:
    """environment's linear-pass pair order (cells sorted, ranks kept) is exactly the stable
    argsort of the pairs' (group, count) keys, for three types and two centre types."""
    coord, atype, box = random_frames(3, 30, 3, box_len=6.0, seed=31)
    centres = torch.tensor([i for i in range(30) if atype[i] != 2])
    nl = build_neighbor_list(torch.as_tensor(coord), torch.as_tensor(atype), torch.as_tensor(box) if pbc else None,
                             centres, 3.5, [20, 20, 20])
    nt = 3
    centre_type = torch.as_tensor(atype)[centres].repeat(3)
    max_count = int(nl.counts.max()) + 1
    key = (centre_type[nl.centre] + nt * nl.ntype) * max_count + nl.counts.view(-1)[nl.centre * nt + nl.ntype]
    assert len(set(nl.ntype.tolist())) == nt and (nl.counts.sum(1) > 0).all()  # every type, no empty centre
    order, run = descriptor.pair_order(nl, centre_type, nt, max_count)
    expected = torch.argsort(key, stable=True)
    assert torch.equal(order, expected)
    assert torch.equal(run, key[expected])
