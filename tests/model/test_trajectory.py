"""Trajectory readers: small files written with ASE (or by hand) in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ase_io = pytest.importorskip("ase.io")
from ase import Atoms  # noqa: E402

from model.errors import ConfigError, DataError  # noqa: E402
from model.trajectory import map_symbols_to_types, read_trajectory  # noqa: E402

CELL = np.array([[9.0, 0.0, 0.0], [1.0, 8.0, 0.0], [0.5, -0.5, 10.0]])


def water_frames(n: int = 5, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    base = np.array(
        [
            [1.0, 1.0, 1.0],
            [1.9, 1.2, 1.0],
            [0.8, 1.9, 1.1],
            [4.0, 4.0, 4.0],
            [4.9, 4.2, 4.0],
            [3.8, 4.9, 4.1],
        ]
    )
    return [
        Atoms(
            "OH2OH2",
            positions=base + 0.05 * rng.normal(size=base.shape),
            cell=CELL * (1 + 0.01 * i),
            pbc=True,
        )
        for i in range(n)
    ]


# ---- ASE formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["run.xyz", "run.extxyz", "run.traj"])
def test_ase_formats_round_trip(tmp_path: Path, name: str) -> None:
    frames = water_frames()
    path = tmp_path / name
    ase_io.write(path, frames, format="traj" if name.endswith("traj") else "extxyz")
    traj = read_trajectory(path)
    assert traj.symbols == ["O", "H", "H", "O", "H", "H"]
    assert traj.coord.shape == (5, 6, 3) and traj.coord.dtype == np.float64
    np.testing.assert_allclose(traj.coord, [a.positions for a in frames], atol=1e-6)
    assert traj.box is not None
    np.testing.assert_allclose(traj.box, [a.cell.array for a in frames], atol=1e-6)
    assert traj.pbc == (True, True, True) and traj.path == str(path)
    np.testing.assert_allclose(
        traj.volumes_a3(), [abs(np.linalg.det(a.cell.array)) for a in frames]
    )
    sub = read_trajectory(path, index="1::2", max_frames=1)
    np.testing.assert_allclose(sub.coord, [frames[1].positions], atol=1e-6)


def test_xyz_without_cell_and_explicit_format(tmp_path: Path) -> None:
    path = tmp_path / "molecule.dat"
    ase_io.write(
        path, [Atoms("H2O", positions=np.eye(3) * (i + 1)) for i in range(3)], format="extxyz"
    )
    with pytest.raises(DataError, match="format"):
        read_trajectory(path)
    traj = read_trajectory(path, format="xyz")
    assert traj.box is None and traj.pbc == (False, False, False) and traj.nframes == 3
    with pytest.raises(ConfigError, match="format"):
        read_trajectory(path, format="pdbx")


def _xyz_frame(symbols: list[str], coords: list[list[float]]) -> str:
    body = "".join(f"{s} {x} {y} {z}\n" for s, (x, y, z) in zip(symbols, coords, strict=True))
    return f"{len(symbols)}\nProperties=species:S:1:pos:R:3\n{body}"


def test_changed_atom_count_or_order_names_the_frame(tmp_path: Path) -> None:
    xyz = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    path = tmp_path / "count.xyz"
    path.write_text(_xyz_frame(["O", "H", "H"], xyz) * 2 + _xyz_frame(["O", "H"], xyz[:2]))
    with pytest.raises(DataError, match="frame 2 has 2 atoms, frame 0 has 3"):
        read_trajectory(path)
    path = tmp_path / "order.xyz"
    path.write_text(_xyz_frame(["O", "H", "H"], xyz) + _xyz_frame(["H", "O", "H"], xyz))
    with pytest.raises(DataError, match="frame 1: atom 0 is H"):
        read_trajectory(path)


def test_nan_coordinates_name_the_frame(tmp_path: Path) -> None:
    path = tmp_path / "nan.xyz"
    good = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    path.write_text(
        _xyz_frame(["O", "H"], good) * 3
        + _xyz_frame(["O", "H"], [[0.0, 0.0, 0.0], [float("nan"), 0.0, 0.0]])
    )
    with pytest.raises(DataError, match="frame 3: NaN"):
        read_trajectory(path)
    with pytest.raises(DataError, match=r"frame 2: NaN.*index='1:'"):
        read_trajectory(path, index="1:")
    np.testing.assert_allclose(read_trajectory(path, index=1).coord, [good])


def test_empty_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_trajectory(tmp_path / "empty.xyz")
    with pytest.raises(DataError, match="no such file"):
        read_trajectory(tmp_path / "missing.xyz")
    (tmp_path / "junk.xyz").write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match=r"junk\.xyz"):
        read_trajectory(tmp_path / "junk.xyz")


# ---- LAMMPS dump ---------------------------------------------------------------------------


def _dump(columns: str, rows: list[list[str]], nframes: int = 3) -> str:
    out = []
    for step in range(nframes):
        out.append(f"ITEM: TIMESTEP\n{step * 10}\nITEM: NUMBER OF ATOMS\n{len(rows)}\n")
        out.append("ITEM: BOX BOUNDS pp pp pp\n0.0 10.0\n0.0 11.0\n0.0 12.0\n")
        out.append(f"ITEM: ATOMS {columns}\n")
        for r in rows:
            x, y, z = (float(v) + 0.1 * step for v in r[-3:])
            out.append(" ".join([*r[:-3], f"{x} {y} {z}"]) + "\n")
    return "".join(out)


def test_lammps_dump_needs_a_type_mapping(tmp_path: Path) -> None:
    # atoms listed out of id order: ASE sorts them by id
    rows = [
        ["2", "2", "1.9", "1.0", "1.0"],
        ["1", "1", "1.0", "1.0", "1.0"],
        ["3", "2", "1.0", "1.9", "1.0"],
    ]
    path = tmp_path / "water.lammpstrj"
    path.write_text(_dump("id type x y z", rows))
    with pytest.raises(DataError, match="lammps_type_symbols"):
        read_trajectory(path)
    traj = read_trajectory(path, lammps_type_symbols={1: "O", 2: "H"})
    assert traj.symbols == ["O", "H", "H"] and traj.nframes == 3
    np.testing.assert_allclose(traj.coord[2, 0], [1.2, 1.2, 1.2])
    assert traj.box is not None
    np.testing.assert_allclose(traj.box[0], np.diag([10.0, 11.0, 12.0]))
    assert traj.pbc == (True, True, True)
    with pytest.raises(DataError, match=r"type\(s\) \[2\]"):
        read_trajectory(path, lammps_type_symbols={1: "O"})


def test_lammps_dump_with_element_column(tmp_path: Path) -> None:
    rows = [["1", "1", "O", "1.0", "1.0", "1.0"], ["2", "2", "H", "1.9", "1.0", "1.0"]]
    path = tmp_path / "dump.water"
    path.write_text(_dump("id type element x y z", rows, nframes=2))
    traj = read_trajectory(path)
    assert traj.symbols == ["O", "H"] and traj.coord.shape == (2, 2, 3)


# ---- DeePMD npy systems --------------------------------------------------------------------


def _deepmd_system(
    root: Path, nframes: tuple[int, ...] = (3, 2), nopbc: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(1)
    (root / "type.raw").write_text("0 1 1\n")
    (root / "type_map.raw").write_text("O\nH\n")
    if nopbc:
        (root / "nopbc").write_text("")
    frames = []
    for i, n in enumerate(nframes):
        d = root / f"set.{i:03d}"
        d.mkdir()
        coord = rng.normal(size=(n, 9)).astype(np.float32)
        np.save(d / "coord.npy", coord)
        if not nopbc:
            np.save(d / "box.npy", np.tile(np.diag([10.0, 10.0, 10.0]).reshape(1, 9), (n, 1)))
        frames.append(coord)
    return np.concatenate(frames).reshape(-1, 3, 3).astype(np.float64)


def test_deepmd_npy_system(tmp_path: Path) -> None:
    coords = _deepmd_system(tmp_path)
    traj = read_trajectory(tmp_path)
    assert traj.symbols == ["O", "H", "H"] and traj.pbc == (True, True, True)
    np.testing.assert_allclose(traj.coord, coords)
    assert traj.box is not None and traj.box.shape == (5, 3, 3)
    np.testing.assert_allclose(read_trajectory(tmp_path, index="2:4").coord, coords[2:4])
    np.testing.assert_allclose(
        read_trajectory(tmp_path, format="deepmd/npy", index=-1).coord, coords[-1:]
    )


def test_deepmd_npy_without_pbc(tmp_path: Path) -> None:
    _deepmd_system(tmp_path, nframes=(2,), nopbc=True)
    traj = read_trajectory(tmp_path)
    assert traj.box is None and traj.pbc == (False, False, False)


def test_deepmd_npy_errors(tmp_path: Path) -> None:
    _deepmd_system(tmp_path)
    np.save(tmp_path / "set.001" / "coord.npy", np.zeros((2, 6)))
    with pytest.raises(DataError, match=r"set.001/coord.npy: has shape \(2, 6\), expected \(nframes, 9\)"):
        read_trajectory(tmp_path)
    bad = np.zeros((2, 9))
    bad[1, 4] = np.inf
    np.save(tmp_path / "set.001" / "coord.npy", bad)
    with pytest.raises(DataError, match="frame 4: NaN or inf"):
        read_trajectory(tmp_path)
    (tmp_path / "type_map.raw").unlink()
    with pytest.raises(DataError, match=r"type_map\.raw"):
        read_trajectory(tmp_path)


# ---- symbols → model types -----------------------------------------------------------------


def test_map_symbols_to_types() -> None:
    types = map_symbols_to_types(["O", "H", "H", "Na"], ["H", "O", "Na"])
    assert types.dtype == np.int64 and types.tolist() == [1, 0, 0, 2]
    with pytest.raises(DataError) as err:
        map_symbols_to_types(["O", "H", "Cl", "Na"], ["O", "H"])
    assert "['Cl', 'Na']" in str(err.value) and "['O', 'H']" in str(err.value)
