"""Dataset upload: summaries, safe extraction, limits, ownership — and bad input never
destroys what is already stored."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from kit import WATER, Users


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"0\n") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _upload(users: Users, content: bytes, name: str = "x.tar.gz", who: str = "alice"):
    return users.client.post("/v1/datasets", files={"file": (name, content)}, headers=users.h(who))


def _upload_in_archive(users: Users, file: Path, arcname: str):
    """Upload one file as the only member ``arcname`` of a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(file, arcname=arcname)
    return _upload(users, buf.getvalue())


def test_upload_summarises_every_system(dataset: dict) -> None:
    systems = {s["path"]: s for s in dataset["systems"]}
    assert sorted(systems) == ["train/atomic_system", "train/global_system", "valid/atomic_system",
                               "valid/global_system"]
    atomic = systems["train/atomic_system"]
    assert (atomic["frames"], atomic["atoms"], atomic["pbc"]) == (80, 192, False)
    assert atomic["type_map"] == ["O", "H"] and atomic["type_counts"] == {"O": 64, "H": 128}
    assert atomic["labels"]["dipole"]["global"] is False
    assert atomic["labels"]["dipole"]["atomic"]["layout"] == "natoms"
    assert systems["train/global_system"]["labels"] == {"dipole": {"global": True, "atomic": None}}
    assert dataset["reference"] == f"dataset:{dataset['id']}"


def test_nsel_layout_is_recognised(users: Users, tmp_path: Path) -> None:
    src = WATER / "dipole" / "training_data_reformat" / "atomic_system"
    sysdir = tmp_path / "sys"
    shutil.copytree(src, sysdir)
    full = np.load(src / "set.000" / "atomic_dipole.npy").reshape(80, 192, 3)
    np.save(sysdir / "set.000" / "atomic_dipole.npy", full[:, ::3].reshape(80, 64 * 3))  # O atoms only
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(sysdir, arcname="nsel_system")
    r = _upload(users, buf.getvalue())
    assert r.status_code == 201, r.text
    atomic = r.json()["systems"][0]["labels"]["dipole"]["atomic"]
    assert atomic == {"file": "atomic_dipole.npy", "layout": "nsel", "nsel": 64, "sel_type": [0]}


def test_list_show_delete_and_ownership(users: Users, dataset: dict) -> None:
    c = users.client
    assert [d["id"] for d in c.get("/v1/datasets", headers=users.h("alice")).json()] == [dataset["id"]]
    assert c.get("/v1/datasets", headers=users.h("bob")).json() == []
    assert c.get(f"/v1/datasets/{dataset['id']}", headers=users.h("bob")).status_code == 404
    assert c.delete(f"/v1/datasets/{dataset['id']}", headers=users.h("bob")).status_code == 404
    assert c.get(f"/v1/datasets/{dataset['id']}", headers=users.h("admin")).status_code == 200
    assert c.delete(f"/v1/datasets/{dataset['id']}", headers=users.h("alice")).status_code == 204
    assert c.get(f"/v1/datasets/{dataset['id']}", headers=users.h("alice")).status_code == 404


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info, None


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


BAD_ARCHIVES = {
    "dot-dot": (_tar([_file("../evil.txt")]), "escapes the archive"),
    "absolute": (_tar([_file("/etc/evil")]), "absolute path"),
    "symlink outside": (_tar([_link("sys/type.raw", "../../../../etc/passwd")]), "points outside"),
    "absolute symlink": (_tar([_link("sys/type.raw", "/etc/passwd")]), "points outside"),
    "hardlink outside": (_tar([_link("sys/type.raw", "../x", tarfile.LNKTYPE)]), "points outside"),
    "device": (_tar([_device("dev")]), "only regular files"),
    "not an archive": (b"hello, I am not an archive", "'x.tar.gz' is not a .tar.gz (.tgz), .tar"),
    "link through a link": (_tar([_link("x/up", ".."), _link("y", "x/up/..")]), "goes through another link"),
    "member through a link": (_tar([_link("x", "."), _file("x/type.raw")]), "goes through 'x', which is a link"),
    "no system": (_tar([_file("readme.txt")]), "no DeePMD system"),
    "too many members": (_tar([_file(f"f{i}") for i in range(201)]), "more than 200 members"),
    "bad coord shape": (_tar([_file("s/type.raw", b"0 1\n"), _file("s/nopbc", b""),
                              _file("s/set.000/coord.npy", _npy(np.zeros((2, 5))))]),
                        "s/set.000/coord.npy: has shape (2, 5), expected (nframes, 6)"),
}


@pytest.mark.parametrize("case", list(BAD_ARCHIVES))
def test_bad_archives_are_rejected_and_nothing_is_lost(users: Users, dataset: dict, settings, case: str) -> None:
    content, message = BAD_ARCHIVES[case]
    r = _upload(users, content)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert not (settings.root.parent / "evil.txt").exists()
    # the earlier upload is intact, and no half-extracted dataset was left behind
    listed = users.client.get("/v1/datasets", headers=users.h("alice")).json()
    assert [d["id"] for d in listed] == [dataset["id"]]
    assert sorted(p.name for p in (settings.root / "datasets").iterdir()) == [dataset["id"]]
    assert list((settings.root / "tmp").iterdir()) == []


def _gz_tar_cut_short() -> bytes:
    data = _tar([_file("s/type.raw", bytes(range(256)) * 2000)])
    return data[: len(data) // 2]


# what a person sees for a file that is no (intact) archive: plain words, no library
# internals ("method gz: ReadError(…)"), no "tar" for a .zip, no path on the server
PLAIN_WORDS = {
    "text named .zip": (b"hello, I am not an archive", "x.zip", "'x.zip' is not a zip archive"),
    "text named .tgz": (b"hello, I am not an archive", "x.tgz", "'x.tgz' is not a .tar.gz (.tgz), .tar, "
                        ".tar.bz2, .tar.xz or .zip archive"),
    "empty": (b"", "x.tgz", "'x.tgz' is empty"),
    "damaged zip": (b"PK\x03\x04 and then nothing useful", "x.zip", "the zip archive is damaged or cut short"),
    "gzip cut short": (_gz_tar_cut_short(), "x.tgz", "the gzip-compressed tar archive is damaged or cut short"),
    "gzipped text": (__import__("gzip").compress(b"just text\n"), "x.gz",
                     "the gzip-compressed file holds no readable tar archive"),
    "symlink chain": (_tar([_link("x/up", ".."), _link("y", "x/up/..")]), "x.tgz",
                      "y: link to 'x/up/..' goes through another link"),
    "file below a file": (_tar([_file("a"), _file("a/b")]), "x.tgz",
                          "a/b: the path goes through 'a', which is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(PLAIN_WORDS))
def test_archive_errors_are_plain_words(users: Users, settings, case: str) -> None:
    content, name, message = PLAIN_WORDS[case]
    r = _upload(users, content, name)
    assert r.status_code == 422, r.text
    text = r.text
    assert message in r.json()["detail"], text
    for internal in ("ReadError", "method gz", "BadZipFile", "Error(", "Errno", "/tmp", str(settings.root),
                     str(settings.root.parent)):
        assert internal not in text, (internal, text)
    if name.endswith(".zip"):
        assert "tar" not in text.lower(), text
    assert list((settings.root / "tmp").iterdir()) == []


def test_zip_with_symlink_is_rejected(users: Users) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("sys/type.raw")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    r = _upload(users, buf.getvalue(), "x.zip")
    assert r.status_code == 422 and "symbolic links are not allowed" in r.json()["detail"]


def test_zip_upload_works(users: Users) -> None:
    buf = io.BytesIO()
    src = WATER / "dipole" / "validation_data_reformat" / "global_system"
    with zipfile.ZipFile(buf, "w") as zf:
        for p in src.rglob("*"):
            zf.write(p, f"g/{p.relative_to(src)}")
    r = _upload(users, buf.getvalue(), "x.zip")
    assert r.status_code == 201, r.text
    assert r.json()["systems"][0]["path"] == "g"


def test_huge_upload_is_413(users: Users, dataset: dict) -> None:
    r = _upload(users, b"\0" * (4 << 20))
    assert r.status_code == 413
    assert "limit is 3145728 bytes" in r.json()["detail"]
    assert len(users.client.get("/v1/datasets", headers=users.h("alice")).json()) == 1


def test_upload_needs_a_token(users: Users, water_tgz: Path) -> None:
    r = users.client.post("/v1/datasets", files={"file": ("w.tgz", water_tgz.read_bytes())})
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]


def test_archive_with_an_hdf5_file_of_systems(users: Users, tmp_path: Path) -> None:
    """DeePMD-kit's HDF5 systems (dpdata's deepmd/hdf5 layout) inside an uploaded archive are
    systems of the dataset, referenced as '<file>.hdf5' or '<file>.hdf5#/<group>'."""
    from jobs.datasets import check_refs
    from model.data import load_system
    from model.system_writer import write_system

    src = WATER / "dipole" / "training_data_reformat" / "atomic_system"
    write_system(f"{tmp_path / 'water.hdf5'}#/atomic_system", load_system(src, kind="dipole", sel_type=[0]),
                 kind="dipole", sel_type=[0])
    r = _upload_in_archive(users, tmp_path / "water.hdf5", "data/water.hdf5")
    assert r.status_code == 201, r.text
    ds = r.json()
    [system] = ds["systems"]
    assert system["path"] == "data/water.hdf5#/atomic_system" and system["frames"] == 80
    assert system["labels"]["dipole"]["atomic"]["layout"] == "nsel" and system["pbc"] is False
    for ref in ("data/water.hdf5", "data/water.hdf5#/atomic_system", "data"):
        raw = {"training": {"training_data": {"systems": [f"dataset:{ds['id']}/{ref}"]}}}
        assert check_refs(raw, "dipole", ["O", "H"], lambda _: ds["systems"]) == [ds["id"]]


def _hdf5_of_water(path: Path, **file_options: int) -> bytes:
    """The water dipole example's two training systems as groups of one HDF5 file."""
    from model.data import load_system
    from model.system_writer import write_system

    if file_options:  # e.g. a user block before HDF5's superblock
        import h5py

        h5py.File(path, "w", **file_options).close()
    for name in ("atomic_system", "global_system"):
        src = WATER / "dipole" / "training_data_reformat" / name
        write_system(f"{path}#/{name}", load_system(src, kind="dipole", sel_type=[0]), kind="dipole", sel_type=[0])
    return path.read_bytes()


def _hdf5_reading_a_server_file(path: Path, secret: Path) -> bytes:
    """A system whose type.raw is stored in another file (HDF5 external storage)."""
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("sys")
        g.create_dataset("type.raw", shape=(16,), dtype="u1", external=[(str(secret), 0, 16)])
        g.create_dataset("type_map.raw", data=np.array(["O", "H"], dtype="S"))
        g.create_group("set.000").create_dataset("coord.npy", data=np.zeros((1, 48)))
    return path.read_bytes()


def test_hdf5_reaching_outside_itself_is_refused_in_an_archive(users: Users, settings, tmp_path: Path) -> None:
    secret = settings.root / "secret"
    secret.write_bytes(b"TOKEN-0123456789")
    _hdf5_reading_a_server_file(tmp_path / "evil.hdf5", secret)
    r = _upload_in_archive(users, tmp_path / "evil.hdf5", "data/evil.hdf5")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["problems"] == [{"loc": "data/evil.hdf5", "msg": body["problems"][0]["msg"]}]
    assert "external files" in body["detail"] and "sys/type.raw" in body["detail"]
    assert "TOKEN" not in r.text and str(settings.root) not in r.text
    assert users.client.get("/v1/datasets", headers=users.h("alice")).json() == []


def test_a_bare_hdf5_file_is_a_dataset(users: Users, settings, tmp_path: Path) -> None:
    """One .hdf5 file of DeePMD systems (deepmd/hdf5 layout) is accepted as it is, like the
    same file inside an archive; its name is kept (in plain characters, no folders)."""
    from jobs.datasets import check_refs

    data = _hdf5_of_water(tmp_path / "w.hdf5")
    r = _upload(users, data, name="../my water.hdf5")
    assert r.status_code == 201, r.text
    ds = r.json()
    assert [s["path"] for s in ds["systems"]] == ["my_water.hdf5#/atomic_system", "my_water.hdf5#/global_system"]
    assert [s["frames"] for s in ds["systems"]] == [80, 80] and (ds["n_files"], ds["size_bytes"]) == (1, len(data))
    stored = settings.root / "datasets" / ds["id"] / "files" / "my_water.hdf5"
    assert stored.read_bytes() == data
    for ref in ("my_water.hdf5", "my_water.hdf5#/global_system"):
        raw = {"training": {"training_data": {"systems": [f"dataset:{ds['id']}/{ref}"]}}}
        assert check_refs(raw, "dipole", ["O", "H"], lambda _: ds["systems"]) == [ds["id"]]
    # told by its content, not its name; a user block before the superblock is still HDF5
    r = _upload(users, _hdf5_of_water(tmp_path / "u.h5", userblock_size=512), name="upload.bin")
    assert r.status_code == 201, r.text
    assert r.json()["systems"][0]["path"] == "upload.bin.hdf5#/atomic_system"


def test_bad_bare_hdf5_files_are_4xx_naming_the_file(users: Users, settings, tmp_path: Path) -> None:
    import h5py

    def rejected(content: bytes, name: str, status: int = 422) -> dict:
        r = _upload(users, content, name=name)
        assert r.status_code == status, r.text
        assert str(settings.root) not in r.text and "Traceback" not in r.text
        return r.json()

    body = rejected(b"just text, not HDF5", "x.hdf5")
    assert "'x.hdf5' is not an HDF5 file" in body["detail"] and body["problems"][0]["loc"] == "file"
    good = _hdf5_of_water(tmp_path / "w.hdf5")
    body = rejected(good[:4000], "cut.h5")  # the signature, then cut short
    assert "cannot open as HDF5" in body["detail"] and body["problems"][0]["loc"] == "cut.h5"
    h5py.File(tmp_path / "empty.hdf5", "w").close()
    body = rejected((tmp_path / "empty.hdf5").read_bytes(), "empty.hdf5")
    assert "no DeePMD system found in the HDF5 file" in body["detail"]
    secret = settings.root / "secret"
    secret.write_bytes(b"TOKEN-0123456789")
    body = rejected(_hdf5_reading_a_server_file(tmp_path / "evil.hdf5", secret), "evil.hdf5")
    assert "external files" in body["detail"] and body["problems"][0]["loc"] == "evil.hdf5"
    assert "TOKEN" not in json.dumps(body)
    assert users.client.get("/v1/datasets", headers=users.h("alice")).json() == []
    assert list((settings.root / "tmp").glob("*")) == []  # nothing left in staging


def test_a_bare_hdf5_file_over_the_file_limit_is_413(settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.auth import create_token
    from app.main import create_app
    from jobs.db import session_scope

    small = settings.model_copy(update={"max_archive_file_bytes": 4096})
    data = _hdf5_of_water(tmp_path / "w.hdf5")
    with TestClient(create_app(small)) as client:
        with session_scope(small.db_url) as s:
            token = create_token(s, "alice")
        r = client.post("/v1/datasets", files={"file": ("big.hdf5", data)}, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 413, r.text
    assert r.json()["detail"] == f"'big.hdf5' is {len(data)} bytes; one file of a dataset may have at most 4096 bytes"
