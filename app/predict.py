"""Checking prediction requests against a model (type_map, sizes, cells) before any worker
sees them, and turning them into the worker's payload: types as model indices."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.errors import PayloadTooLarge, Unprocessable
from app.schemas import PredictRequest
from jobs.settings import Settings
from jobs.tables import ModelRecord
from model.errors import DataError
from model.search_budget import perpendicular_widths, plan_search

COMPONENTS = {"dipole": ["x", "y", "z"],
              "polar": ["xx", "xy", "xz", "yx", "yy", "yz", "zx", "zy", "zz"]}
# A model predicts in the units of its training labels; these are DeePMD-kit's conventions.
UNITS = {"dipole": "e·Å", "polar": "Å³"}


def units(kind: str) -> dict[str, str]:
    return {"positions": "Å", "cell": "Å", "global_tensor": UNITS[kind], "atomic_tensor": UNITS[kind]}


def to_payload(req: PredictRequest, model: ModelRecord, settings: Settings) -> tuple[list[dict[str, Any]], int]:
    """Validated structures as {"types", "positions", "cell"}; returns (them, total atoms)."""
    assert req.structures is not None
    if len(req.structures) > settings.max_structures:
        raise PayloadTooLarge(f"{len(req.structures)} structures: at most {settings.max_structures} per request")
    index = {name: i for i, name in enumerate(model.type_map)}
    ntypes = len(model.type_map)
    rcut = float(model.info["rcut"]) if isinstance(model.info.get("rcut"), int | float) else None
    problems: list[tuple[str, str]] = []
    out: list[dict[str, Any]] = []
    total = 0
    for i, s in enumerate(req.structures):
        loc = f"structures[{i}]"
        n = len(s.positions)
        total += n
        if n > settings.max_atoms_per_structure:
            raise PayloadTooLarge(f"{loc}: {n} atoms, at most {settings.max_atoms_per_structure} per structure")
        if s.symbols is not None:
            unknown = sorted({x for x in s.symbols if x not in index})
            if unknown:
                problems.append((f"{loc}.symbols", f"element(s) {unknown} are not in the model's type_map "
                                                   f"{model.type_map}"))
                continue
            types = [index[x] for x in s.symbols]
        else:
            types = list(s.types or [])
            bad = sorted({t for t in types if t >= ntypes})
            if bad:
                problems.append((f"{loc}.types", f"type index(es) {bad} out of range for the model's type_map "
                                                 f"{model.type_map} ({ntypes} types)"))
                continue
        cell = None
        if s.periodic:
            cell = s.cell
            if cell is not None and abs(float(np.linalg.det(np.asarray(cell)))) < 1e-6:
                problems.append((f"{loc}.cell", "the cell is singular (zero volume)"))
                continue
            if cell is not None and rcut is not None:
                try:  # the worker applies the same rule; here it costs the worker nothing
                    plan_search(n, perpendicular_widths(np.asarray(cell, dtype=np.float64)), rcut,
                                settings.max_search_candidates)
                except DataError as exc:
                    problems.append((f"{loc}.cell", exc.detail))
                    continue
        out.append({"types": types, "positions": s.positions, "cell": cell})
    if problems:
        text = "; ".join(f"{loc}: {msg}" for loc, msg in problems[:5])
        raise Unprocessable(f"invalid structures: {text}", problems)
    return out, total
