"""What a neighbour search will cost, before it runs (torch-free: the api uses it too).

A periodic cell thinner than the cutoff is searched through many periodic images: the
brute-force search compares each centre with ``atoms × images`` candidates, and the
images grow as (rcut / width)² or ³. A 0.03 Å cell with a 6 Å cutoff needs 160 000
images. Small cells are legitimate (a 2.5 Å crystal cell with a 6 Å cutoff needs five
images per axis), so the search is bounded, not forbidden: each path's candidates per
centre are estimated from the cell's perpendicular widths (O(1) per frame), the cheaper
path is taken, and above the budget the search is refused with the numbers that explain
why. Coordinates and cells are checked against a physical bound first (a finite 1e300
overflows the arithmetic long before the budget means anything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.errors import DataError

# Default bound on the candidates one centre is compared with ("periodic images × atoms"):
# a legitimate frame needs a few thousand at most (a 192-atom water box: 192; a 2.5 Å cell
# with a 6 Å cutoff: 125 images × its atoms; a large frame through the cell list: ~27 × 60;
# at water's density a cell thin enough for 27 images holds < 200 atoms: 27 × 200).
DEFAULT_MAX_CANDIDATES = 50_000
# |coordinate| and |cell vector component| bound in Å (0.1 mm): far beyond any simulation
# box, far below where squared distances overflow float32/float64.
MAX_ABS_COORD = 1e6
# Above this many atoms a frame is searched with the cell list (linear cost).
CELL_LIST_MIN_ATOMS = 1500


class SearchTooCostly(DataError):
    """The frame's neighbour search would exceed the candidate budget."""


@dataclass(frozen=True)
class SearchPlan:
    cell_list: bool
    candidates: int  # per centre, on the chosen path
    images: tuple[int, int, int]  # periodic images per axis the brute-force search visits


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces: volume / |a_l × a_m|. [..., 3, 3] → [..., 3]"""
    a, b, c = cell[..., 0, :], cell[..., 1, :], cell[..., 2, :]
    vol = np.abs(np.linalg.det(cell))
    areas = np.stack([np.linalg.norm(np.cross(b, c), axis=-1), np.linalg.norm(np.cross(c, a), axis=-1),
                      np.linalg.norm(np.cross(a, b), axis=-1)], axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(vol[..., None] / areas)


def image_reach(width: float, rcut: float) -> int:
    """Images on each side along an axis: fractional differences are wrapped to
    [-0.5, 0.5], so image n can be within rcut only if |n| <= rcut / width + 0.5."""
    return math.floor(rcut / width + 0.5)


def _brute_force_images(widths: np.ndarray, rcut: float) -> tuple[int, int, int]:
    r = [2 * image_reach(float(w), rcut) + 1 for w in widths]
    return r[0], r[1], r[2]


def _cell_list_candidates(nat: int, widths: np.ndarray | None, rcut: float) -> int:
    """Stencil cells × mean atoms per cell (cells at least rcut wide)."""
    if widths is None:
        return 27 * 64  # open frame: bins span the atoms; the search chunks assume this
    bins = [max(1, math.floor(float(w) / rcut)) for w in widths]
    stencil = math.prod(2 * math.ceil(rcut * b / float(w)) + 1 for b, w in zip(bins, widths, strict=True))
    return stencil * max(1, -(-nat // math.prod(bins)))


def plan_search(nat: int, widths: np.ndarray | None, rcut: float, budget: int = DEFAULT_MAX_CANDIDATES, *,
                cell_list_min_atoms: int = CELL_LIST_MIN_ATOMS) -> SearchPlan:
    """Choose the search path for frames of ``nat`` atoms whose cells have the smallest
    perpendicular ``widths`` [3] (None: not periodic). Raises SearchTooCostly above budget."""
    if widths is None:
        return SearchPlan(cell_list=nat >= cell_list_min_atoms, candidates=nat, images=(1, 1, 1))
    if not np.all(np.isfinite(widths)) or float(np.min(widths)) <= 0:
        raise DataError("the cell is singular (zero volume)", path="cell")
    images = _brute_force_images(widths, rcut)
    brute = nat * math.prod(images)
    cells = _cell_list_candidates(nat, widths, rcut)
    if nat >= cell_list_min_atoms or (brute > budget and cells < brute):
        plan = SearchPlan(cell_list=True, candidates=cells, images=images)
    else:
        plan = SearchPlan(cell_list=False, candidates=brute, images=images)
    if plan.candidates > budget:
        w = ", ".join(f"{float(x):.4g}" for x in widths)
        raise SearchTooCostly(
            f"the periodic cell is too thin for the cutoff: perpendicular widths ({w}) Å with rcut {rcut:g} Å "
            f"need {images[0]}×{images[1]}×{images[2]} = {math.prod(images)} periodic images of {nat} atoms, "
            f"{plan.candidates} neighbour candidates per atom, over the budget of {budget} "
            "(DPTENSOR_MAX_SEARCH_CANDIDATES, or --max-search-candidates); use a larger (replicated) cell",
            path="cell")
    return plan


def check_magnitude(name: str, largest_abs: float) -> None:
    """Reject a non-finite or absurd coordinate/cell component (DataError naming ``name``)."""
    if not math.isfinite(largest_abs) or largest_abs > MAX_ABS_COORD:
        raise DataError(f"{name} must be finite and within ±{MAX_ABS_COORD:g} Å (found {largest_abs:.3g})",
                        path=name)
