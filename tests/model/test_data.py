"""DeePMD npy systems: label layouts, type maps, several sets, and every error path."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from model.data import find_systems, load_system, load_systems
from model.errors import DataError

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "water_tensor"


def write_system(root: Path, *, nframes: int = 4, types: tuple[int, ...] = (0, 1, 1, 0, 1, 1),
                 type_map: list[str] | None = None, pbc: bool = True, sets: int = 1,
                 labels: dict[str, np.ndarray] | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.raw").write_text("\n".join(map(str, types)) + "\n")
    if type_map is not None:
        (root / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if not pbc:
        (root / "nopbc").touch()
    nat = len(types)
    for k in range(sets):
        s = root / f"set.{k:03d}"
        s.mkdir()
        np.save(s / "coord.npy", rng.random((nframes, nat * 3)).astype(np.float32) * 5)
        np.save(s / "box.npy", np.tile(np.eye(3).reshape(9) * 5, (nframes, 1)).astype(np.float32))
        for name, arr in (labels or {}).items():
            np.save(s / f"{name}.npy", arr[k * nframes:(k + 1) * nframes])
    return root


def test_reads_the_example_systems() -> None:
    found = find_systems(EXAMPLES / "dipole" / "training_data_reformat")
    assert [Path(p).name for p in found] == ["atomic_system", "global_system"]
    atomic = load_system(found[0], kind="dipole", type_map=["O", "H"], sel_type=[0])
    assert atomic.coord.shape == (80, 192, 3) and atomic.box is None  # nopbc
    assert atomic.atomic_label is not None and atomic.atomic_label.shape == (80, 192, 3)
    assert atomic.global_label is None
    polar = load_system(EXAMPLES / "polar/training_data_reformat/global_system", kind="polar", type_map=["O", "H"])
    assert polar.box is not None and polar.box.shape == (80, 3, 3)
    assert polar.global_label is not None and polar.global_label.shape == (80, 9)


def test_atomic_labels_in_nsel_and_natoms_layouts_agree(tmp_path: Path) -> None:
    types = (0, 1, 1, 0, 1, 1)
    sel = np.random.default_rng(1).random((4, 2, 3))
    full = np.zeros((4, 6, 3))
    full[:, [0, 3]] = sel
    a = load_system(write_system(tmp_path / "a", labels={"atomic_dipole": sel.reshape(4, -1)}, types=types),
                    kind="dipole", sel_type=[0])
    b = load_system(write_system(tmp_path / "b", labels={"atomic_dipole": full.reshape(4, -1)}, types=types),
                    kind="dipole", sel_type=[0])
    assert a.atomic_label is not None and b.atomic_label is not None
    np.testing.assert_array_equal(a.atomic_label, b.atomic_label)


def test_types_are_mapped_by_name(tmp_path: Path) -> None:
    path = write_system(tmp_path / "s", types=(0, 1, 1), type_map=["H", "O"])
    system = load_system(path, type_map=["O", "H"])
    assert system.atype.tolist() == [1, 0, 0]


def test_several_sets_are_concatenated(tmp_path: Path) -> None:
    lab = np.random.default_rng(2).random((8, 3))
    system = load_system(write_system(tmp_path / "s", nframes=4, sets=2, labels={"dipole": lab}), kind="dipole")
    assert system.nframes == 8
    np.testing.assert_allclose(system.global_label, lab)


def test_misnamed_atom_label_file_is_accepted_with_a_note(tmp_path: Path) -> None:
    path = write_system(tmp_path / "s", labels={"atom_dipole": np.ones((4, 6))}, types=(0, 1, 1, 0, 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a note, not a Python warning
        system = load_system(path, kind="dipole", sel_type=[0])
    assert len(system.notes) == 1 and "atomic_dipole" in system.notes[0]
    assert system.atomic_label is not None


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda p: (p / "type.raw").unlink(), "type.raw is missing"),
        (lambda p: (p / "type.raw").write_text("0 1 x\n"), "integers"),
        (lambda p: np.save(p / "set.000/coord.npy", np.zeros((4, 7))), "coord.npy: has shape (4, 7), expected (nframes, 18)"),
        (lambda p: np.save(p / "set.000/box.npy", np.zeros((3, 9))), "box.npy: has shape (3, 9), expected (4, 9)"),
        (lambda p: (p / "set.000/box.npy").unlink(), "box.npy is missing"),
        (lambda p: np.save(p / "set.000/coord.npy", np.full((4, 18), np.nan)), "NaN or inf"),
        (lambda p: np.save(p / "set.000/box.npy", np.zeros((4, 9))), "zero volume"),
        (lambda p: (p / "set.000/coord.npy").write_bytes(b"garbage"), "cannot read"),
        (lambda p: np.save(p / "set.000/dipole.npy", np.zeros((4, 6))), "dipole.npy: has shape (4, 6), expected (4, 3)"),
        (lambda p: np.save(p / "set.000/atomic_dipole.npy", np.zeros((4, 3))), "looks like a global label"),
        (lambda p: np.save(p / "set.000/atomic_dipole.npy", np.zeros((4, 5))), "expected (4, 6)"),
        (lambda p: (p / "type_map.raw").write_text("O C\n"), "['C'] are not in the model's type_map"),
        (lambda p: [f.unlink() for f in (p / "set.000").iterdir()] and (p / "set.000").rmdir(), "no set.*"),
    ],
)
def test_malformed_data_names_file_and_shapes(tmp_path: Path, setup, fragment: str) -> None:
    path = write_system(tmp_path / "sys", type_map=["O", "H"])
    setup(path)
    with pytest.raises(DataError) as info:
        load_system(path, kind="dipole", type_map=["O", "H"], sel_type=[0])
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_label_missing_in_one_set_is_an_error(tmp_path: Path) -> None:
    path = write_system(tmp_path / "s", sets=2, labels={"dipole": np.zeros((8, 3))})
    (path / "set.001" / "dipole.npy").unlink()
    with pytest.raises(DataError, match="present in some set"):
        load_system(path, kind="dipole")


def test_system_without_labels_is_refused_for_training(tmp_path: Path) -> None:
    write_system(tmp_path / "s")
    with pytest.raises(DataError, match="no dipole labels"):
        load_systems(["s"], tmp_path, kind="dipole", type_map=None, sel_type=None)
    with pytest.raises(DataError, match="does not exist"):
        load_systems(["nope"], tmp_path, kind="dipole", type_map=None, sel_type=None)


# ---- HDF5 systems (DeePMD-kit's / dpdata's deepmd/hdf5 layout) ------------------------------


def test_hdf5_systems_read_like_their_npy_originals(tmp_path: Path) -> None:
    from model.system_writer import write_system

    root = EXAMPLES / "polar" / "training_data_reformat"
    h5 = tmp_path / "data.hdf5"
    for folder in find_systems(root):
        original = load_system(folder, kind="polar", type_map=["O", "H"], sel_type=[0])
        write_system(f"{h5}#/{Path(folder).name}", original, kind="polar", sel_type=[0], set_size=30)
    found = find_systems(h5)
    assert found == [f"{h5}#/atomic_system", f"{h5}#/global_system"]
    assert find_systems(f"{h5}#/global_system") == [f"{h5}#/global_system"]
    for folder, path in zip(find_systems(root), found, strict=True):
        a = load_system(folder, kind="polar", type_map=["O", "H"], sel_type=[0])
        b = load_system(path, kind="polar", type_map=["O", "H"], sel_type=[0])
        assert b.path == path and b.nframes == a.nframes > 30  # more than one set
        for x, y in ((a.coord, b.coord), (a.box, b.box), (a.global_label, b.global_label),
                     (a.atomic_label, b.atomic_label)):
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    # a folder that holds an HDF5 file: its systems are found too
    assert find_systems(tmp_path) == found


def test_malformed_hdf5_systems_name_the_dataset(tmp_path: Path) -> None:
    import h5py

    h5 = tmp_path / "bad.h5"
    with h5py.File(h5, "w") as f:
        g = f.create_group("sys")
        g.create_dataset("type.raw", data=np.array([0, 1, 1]))
        g.create_dataset("type_map.raw", data=np.array(["O", "H"], dtype="S"))
        s = g.create_group("set.000")
        s.create_dataset("coord.npy", data=np.zeros((2, 8)))
        s.create_dataset("box.npy", data=np.tile(np.eye(3).reshape(9) * 5, (2, 1)))
    with pytest.raises(DataError, match=r"bad.h5#/sys/set.000/coord.npy: has shape \(2, 8\), expected \(nframes, 9\)"):
        load_system(f"{h5}#/sys")
    with h5py.File(h5, "a") as f:
        del f["sys/set.000/coord.npy"]
        f["sys/set.000"].create_dataset("coord.npy", data=np.array([b"x"] * 18).reshape(2, 9))
    with pytest.raises(DataError, match="not numeric"):
        load_system(f"{h5}#/sys")
    with pytest.raises(DataError, match="no such group"):
        load_system(f"{h5}#/nope")
    (tmp_path / "junk.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="cannot open as HDF5"):
        load_system(f"{tmp_path / 'junk.hdf5'}#/sys")


@pytest.mark.parametrize("case", ["external storage", "external link", "soft link", "virtual"])
def test_hdf5_objects_kept_outside_the_file_are_refused(tmp_path: Path, case: str) -> None:
    """An HDF5 file could make the reader open other files (an upload naming any file on
    the server): external links and storage, soft links and virtual datasets are refused
    by find_systems (what an upload is checked with) and by the reader itself."""
    import h5py

    secret = tmp_path / "secret"
    secret.write_bytes(b"TOKEN-0123456789")
    h5 = tmp_path / "data" / "x.hdf5"
    h5.parent.mkdir()
    with h5py.File(h5, "w") as f:
        g = f.create_group("sys")
        g.create_dataset("type_map.raw", data=np.array(["O", "H"], dtype="S"))
        g.create_group("set.000").create_dataset("coord.npy", data=np.zeros((1, 9)))
        if case == "external storage":
            g.create_dataset("type.raw", shape=(16,), dtype="u1", external=[(str(secret), 0, 16)])
        else:
            g.create_dataset("type.raw", data=np.array([0, 1, 1]))
        if case == "external link":
            f["other"] = h5py.ExternalLink(str(tmp_path / "other.hdf5"), "/")
        elif case == "soft link":
            f["again"] = h5py.SoftLink("/sys")
        elif case == "virtual":
            layout = h5py.VirtualLayout(shape=(3,), dtype="i8")
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.hdf5"), "types", shape=(3,))
            f.create_virtual_dataset("sys/set.000/extra.npy", layout)
    name = {"external storage": "sys/type.raw", "external link": "other", "soft link": "again",
            "virtual": "sys/set.000/extra.npy"}[case]
    with pytest.raises(DataError, match=f"x.hdf5: soft and external links.*not read.*: {re.escape(name)}$"):
        find_systems(tmp_path / "data")
    if case == "external storage":
        with pytest.raises(DataError, match=r"sys/type\.raw: soft and external links") as err:
            load_system(f"{h5}#/sys")
        assert "TOKEN" not in str(err.value)
    if case == "soft link":  # a group reached through a soft link is not opened either
        with pytest.raises(DataError, match="no such group"):
            load_system(f"{h5}#/again")
