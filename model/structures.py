"""Structures to predict on, from a path: a DeePMD system folder or a trajectory file (the
CLI's and the workers' ``predict`` read their input through this one function)."""

from __future__ import annotations

import numpy as np


def load_structures(path: str, type_map: list[str], fmt: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A DeePMD system folder or a trajectory file → coord [nf, nat, 3], atype, box | None."""
    from model.data import is_system_dir, load_system

    if is_system_dir(path):
        system = load_system(path, type_map=type_map)
        return system.coord, system.atype, system.model_box
    from model.trajectory import map_symbols_to_types, read_trajectory

    traj = read_trajectory(path, fmt)
    return traj.coord, map_symbols_to_types(traj.symbols, type_map), traj.model_box
