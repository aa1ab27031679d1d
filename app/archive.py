"""Safe extraction of uploaded .tar(.gz|.bz2|.xz) and .zip archives.

Every member is checked *before* anything is written: no absolute paths, no ``..``, no
links leaving the archive, no devices/fifos, caps on member count, per-file and total
size (the sizes declared in the headers; the actual bytes written are counted too, so
a lying header cannot exceed the caps). Tar extraction also runs with Python's ``data``
filter as a second line of defence.
"""

from __future__ import annotations

import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20


class ArchiveError(Exception):
    """The archive is unusable or unsafe; ``member`` names the offending entry, if any."""

    def __init__(self, message: str, member: str | None = None) -> None:
        super().__init__(f"{member}: {message}" if member else message)
        self.member = member


@dataclass(frozen=True)
class Limits:
    max_members: int
    max_total_bytes: int
    max_file_bytes: int


@dataclass(frozen=True)
class Extracted:
    n_files: int
    total_bytes: int


def _safe_name(name: str) -> str:
    """A relative POSIX path inside the archive, or ArchiveError."""
    if "\x00" in name or "\\" in name:
        raise ArchiveError("member name contains a NUL or backslash", name)
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError("absolute path in archive", name)
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ArchiveError("path escapes the archive ('..')", name)
    clean = posixpath.normpath(name)
    if clean in ("", "."):
        return ""
    return clean


def _inside(link_dir: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(link_dir, target))
    return not (resolved == ".." or resolved.startswith("../"))


def _check_counts(n: int, total: int, size: int, name: str, limits: Limits) -> None:
    if n > limits.max_members:
        raise ArchiveError(f"more than {limits.max_members} members")
    if size > limits.max_file_bytes:
        raise ArchiveError(f"file of {size} bytes exceeds the per-file limit of {limits.max_file_bytes}", name)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"extracted size exceeds the limit of {limits.max_total_bytes} bytes")


def _copy_capped(src: object, dest: Path, cap: int, name: str) -> int:
    written = 0
    with open(dest, "wb") as out:
        while True:
            chunk = src.read(CHUNK)  # type: ignore[attr-defined]
            if not chunk:
                return written
            written += len(chunk)
            if written > cap:
                raise ArchiveError("file is larger than its header says", name)
            out.write(chunk)


def _extract_tar(path: Path, dest: Path, limits: Limits) -> Extracted:
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveError(f"not a readable tar archive ({exc})") from None
    with tar:
        members = []
        total = 0
        try:
            for n, m in enumerate(tar, start=1):
                name = _safe_name(m.name)
                if m.issym() or m.islnk():
                    # symlink targets are relative to the link's folder, hardlinks to the root
                    base = posixpath.dirname(name) if m.issym() else ""
                    if not _inside(base, m.linkname):
                        raise ArchiveError(f"link to {m.linkname!r} points outside the archive", m.name)
                elif not (m.isfile() or m.isdir()):
                    raise ArchiveError("only regular files, folders and internal links are allowed", m.name)
                total += m.size if m.isfile() else 0
                _check_counts(n, total, m.size, m.name, limits)
                if name:
                    members.append(m)
        except tarfile.TarError as exc:
            raise ArchiveError(f"corrupt tar archive ({exc})") from None
        try:
            tar.extractall(dest, members=members, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise ArchiveError(f"cannot extract ({exc})") from None
    files = [p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()]
    written = sum(p.stat().st_size for p in files)
    if written > limits.max_total_bytes:
        raise ArchiveError(f"extracted size exceeds the limit of {limits.max_total_bytes} bytes")
    return Extracted(n_files=len(files), total_bytes=written)


def _extract_zip(path: Path, dest: Path, limits: Limits) -> Extracted:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"not a readable zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        total = 0
        for n, info in enumerate(infos, start=1):
            _safe_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError("symbolic links are not allowed in zip archives", info.filename)
            total += info.file_size
            _check_counts(n, total, info.file_size, info.filename, limits)
        n_files, written = 0, 0
        for info in infos:
            name = _safe_name(info.filename)
            if not name:
                continue
            target = dest / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src:
                    written += _copy_capped(src, target, info.file_size, info.filename)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise ArchiveError(f"corrupt member ({exc})", info.filename) from None
            n_files += 1
    return Extracted(n_files=n_files, total_bytes=written)


def extract(path: Path, dest: Path, limits: Limits) -> Extracted:
    """Extract into ``dest`` (created; removed again on failure)."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        if zipfile.is_zipfile(path):
            return _extract_zip(path, dest, limits)
        return _extract_tar(path, dest, limits)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
