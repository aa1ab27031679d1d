"""Uploaded datasets: per-system summaries (with model.data's own rules, numpy only) and
the ``dataset:<id>[/<path>]`` references that input.json uses to name them.

Reference syntax, in ``training.training_data.systems`` / ``validation_data.systems``:

    "dataset:ds-1a2b3c4d5e6f"                          every system of the dataset
    "dataset:ds-1a2b3c4d5e6f/training_data_reformat"   every system below that folder
    "dataset:ds-1a2b3c4d5e6f/train/atomic_system"      one system
"""

from __future__ import annotations

import copy
import itertools
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from jobs.layout import dataset_files, shown_inside
from model.data import find_systems, load_system, open_store
from model.errors import ConfigError, DataError
from model.keys import ATOMIC_LABEL, ATOMIC_LABEL_ALIAS, GLOBAL_LABEL, TENSOR_DIM

REF = re.compile(r"^dataset:([A-Za-z0-9_-]+)(?:/(.*))?$")
REF_HELP = "refer to an uploaded dataset as 'dataset:<id>' or 'dataset:<id>/<path inside it>'"


def _sel_candidates(counts: list[int], nsel: int) -> list[int] | None:
    """Smallest set of types whose atoms number ``nsel`` (the nsel label layout)."""
    for size in range(1, len(counts) + 1):
        for combo in itertools.combinations(range(len(counts)), size):
            if sum(counts[t] for t in combo) == nsel:
                return list(combo)
    return None


def _label_info(path: str, kind: str, atype: np.ndarray, notes: list[str]) -> dict[str, Any] | None:
    """Which labels of ``kind`` the system has and their layout, validated by load_system
    (whose notes are added to ``notes``)."""
    dim = TENSOR_DIM[kind]
    with open_store(path) as store:
        first_set = store.sets()[0]
        has_global = store.has(first_set, f"{GLOBAL_LABEL[kind]}.npy")
        afile = next((f"{n}.npy" for n in (ATOMIC_LABEL[kind], ATOMIC_LABEL_ALIAS[kind])
                      if store.has(first_set, f"{n}.npy")), None)
        if not has_global and afile is None:
            return None
        info: dict[str, Any] = {"global": has_global, "atomic": None}
        sel_type = None
        if afile is not None:
            shape = store.read_array(first_set, afile).shape
            cols = int(np.prod(shape[1:])) if len(shape) > 1 else 0
            nat = int(atype.shape[0])
            counts = [int((atype == t).sum()) for t in range(int(atype.max()) + 1)]
            if cols == nat * dim:
                info["atomic"] = {"file": afile, "layout": "natoms", "nsel": nat}
            elif cols % dim == 0 and 0 < cols // dim < nat:
                sel_type = _sel_candidates(counts, cols // dim)
                info["atomic"] = {"file": afile, "layout": "nsel", "nsel": cols // dim, "sel_type": sel_type}
    # the full check (shapes in every set, NaN/inf) with the library's rules and messages
    notes += load_system(path, kind=kind, sel_type=sel_type).notes
    return info


def summarize_system(path: str, root: Path) -> dict[str, Any]:
    system = load_system(path)
    names = system.type_names
    counts = Counter(system.atype.tolist())
    notes = list(system.notes)
    labels = {kind: _label_info(path, kind, system.atype, notes) for kind in TENSOR_DIM}
    with open_store(path) as store:
        nsets = len(store.sets())
    return {
        "path": shown_inside(path, root),
        "frames": system.nframes,
        "atoms": system.natoms,
        "type_map": names,
        "type_counts": {(names[t] if names and t < len(names) else str(t)): n for t, n in sorted(counts.items())},
        "pbc": system.periodic,
        "sets": nsets,
        "labels": {k: v for k, v in labels.items() if v is not None},
        "warnings": [shown_inside(note, root) for note in notes],
    }


def summarize(root: Path, what: str = "the archive") -> list[dict[str, Any]]:
    """Every DeePMD system below ``root`` (the extracted upload): folders and HDF5 groups.
    DataError messages and paths are made relative to the upload."""
    try:
        found = find_systems(root)
        if not found:
            raise DataError(f"no DeePMD system found in {what} (a system is a folder with type.raw "
                            "and set.*/coord.npy, or the same as an HDF5 group in a .hdf5 file)")
        return [summarize_system(f, root) for f in found]
    except DataError as exc:
        path = shown_inside(exc.path, root) if exc.path else None
        raise DataError(shown_inside(exc.detail, root), path=path) from None


# --- references in input.json ------------------------------------------------------------

def parse_ref(text: str) -> tuple[str, str]:
    """'dataset:<id>/<sub>' -> (id, normalised sub path, '' for the whole dataset)."""
    m = REF.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a dataset reference: {REF_HELP}")
    sub = (m.group(2) or "").strip("/")
    parts = PurePosixPath(sub).parts
    if ".." in parts or "\\" in sub:
        raise ValueError(f"{text!r}: the path must stay inside the dataset (no '..')")
    return m.group(1), "/".join(p for p in parts if p != ".")


def chosen_systems(systems: list[dict[str, Any]], sub: str) -> list[dict[str, Any]]:
    """The summaries of a dataset's systems that a reference's sub path selects."""
    return [s for s in systems if not sub or s["path"] == sub
            or s["path"].startswith((sub + "/", sub + "#"))]  # "#": the groups of an HDF5 file


def training_systems(raw: dict[str, Any], lookup: Callable[[str], list[dict[str, Any]] | None]
                     ) -> list[dict[str, Any]]:
    """The summaries of the systems training_data refers to (references already checked)."""
    section = (raw.get("training") or {}).get("training_data")
    out: list[dict[str, Any]] = []
    for _, text in _entries(section, "") if isinstance(section, dict) else []:
        ds_id, sub = parse_ref(text)
        out += chosen_systems(lookup(ds_id) or [], sub)
    return out


def _sections(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    training = raw.get("training") or {}
    return [(f"training.{key}", training[key]) for key in ("training_data", "validation_data")
            if isinstance(training.get(key), dict)]


def _entries(section: dict[str, Any], path: str) -> list[tuple[str, str]]:
    systems = section.get("systems")
    if isinstance(systems, str):
        return [(f"{path}.systems", systems)]
    return [(f"{path}.systems[{i}]", s) for i, s in enumerate(systems or []) if isinstance(s, str)]


def check_refs(raw: dict[str, Any], kind: str, type_map: list[str] | None,
               lookup: Callable[[str], list[dict[str, Any]] | None]) -> list[str]:
    """Check every system reference against the datasets (``lookup(id)`` returns the
    summaries of a dataset the user may read, else None). Returns the dataset ids used;
    raises ConfigError listing every problem with its JSON path."""
    problems: list[tuple[str, str]] = []
    used: list[str] = []
    for section_path, section in _sections(raw):
        for path, text in _entries(section, section_path):
            try:
                ds_id, sub = parse_ref(text)
            except ValueError as exc:
                problems.append((path, str(exc)))
                continue
            systems = lookup(ds_id)
            if systems is None:
                problems.append((path, f"dataset {ds_id} not found"))
                continue
            used.append(ds_id)
            chosen = chosen_systems(systems, sub)
            if not chosen:
                have = ", ".join(s["path"] for s in systems[:10])
                problems.append((path, f"no system at {sub!r} in dataset {ds_id} (it has: {have})"))
                continue
            for s in chosen:
                if kind not in s["labels"]:
                    problems.append((path, f"system {s['path']} of dataset {ds_id} has no {kind} labels "
                                           f"({GLOBAL_LABEL[kind]}.npy / {ATOMIC_LABEL[kind]}.npy)"))
                names = s.get("type_map")
                if type_map is not None and names:
                    unknown = sorted(set(s["type_counts"]) - set(type_map))
                    if unknown:
                        problems.append((path, f"system {s['path']} has element(s) {unknown} that are not "
                                               f"in model.type_map {type_map}"))
    if problems:
        raise ConfigError.from_problems(problems)
    return sorted(set(used))


def resolve_refs(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """input.json with every reference replaced by the absolute folder (for the worker)."""
    out = copy.deepcopy(raw)
    for _, section in _sections(out):
        systems = section["systems"]
        as_list = [systems] if isinstance(systems, str) else list(systems)
        resolved = []
        for text in as_list:
            ds_id, sub = parse_ref(text)
            resolved.append(str(dataset_files(root, ds_id, sub)))
        section["systems"] = resolved
    return out
