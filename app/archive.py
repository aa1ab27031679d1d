"""Safe extraction of uploaded .tar(.gz|.bz2|.xz) and .zip archives.

Every member is checked *before* anything is written: no absolute paths, no ``..``, no
links leaving the archive, nothing written through a link or a file, no devices/fifos,
caps on member count, per-file and total size (the sizes declared in the headers; the
actual bytes written are counted too, so a lying header cannot exceed the caps). Tar
extraction also runs with Python's ``data`` filter as a second line of defence.

Messages are for the person who uploaded the file: they name the member and say what is
wrong in plain words — never a library's internals, never a path on this server.
"""

from __future__ import annotations

import lzma
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

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


ACCEPTED = "a .tar.gz (.tgz), .tar, .tar.bz2, .tar.xz or .zip archive"
# compressed tar: (tarfile mode, what the user would call the compression)
COMPRESSION = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}
TAR_MODES: dict[str, Literal["r:", "r:gz", "r:bz2", "r:xz"]] = {
    "tar": "r:", "gz": "r:gz", "bz2": "r:bz2", "xz": "r:xz"}
_DECOMPRESS_ERRORS = (EOFError, zlib.error, lzma.LZMAError, OSError)


def sniff(path: Path) -> str | None:
    """'zip', 'gz', 'bz2', 'xz', 'tar' from the file's first bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head[257:262] == b"ustar" or _is_plain_tar(path):
        return "tar"
    return "zip" if zipfile.is_zipfile(path) else None  # a zip with data before it


def _is_plain_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError):
        return False


def _not_an_archive(path: Path, filename: str | None) -> ArchiveError:
    name = repr(filename) if filename else "the upload"
    if path.stat().st_size == 0:
        return ArchiveError(f"{name} is empty")
    if filename and filename.lower().endswith(".zip"):
        return ArchiveError(f"{name} is not a zip archive (or it is damaged)")
    return ArchiveError(f"{name} is not {ACCEPTED}")


def _check_parents(name: str, kinds: dict[str, str]) -> None:
    """Nothing is written through a link or below a file: ``a -> .`` then ``a/b`` would
    write wherever the link points."""
    parts = PurePosixPath(name).parts
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        kind = kinds.get(prefix)
        if kind == "link":
            raise ArchiveError(f"the path goes through {prefix!r}, which is a link; only folders may "
                               "hold other members", name)
        if kind == "file":
            raise ArchiveError(f"the path goes through {prefix!r}, which is a file, not a folder", name)


def _check_link_route(base: str, target: str, kinds: dict[str, str], member: str) -> None:
    """A link's target is resolved one folder at a time, as the OS does: it may not pass
    through another link (``x/l -> ..`` then ``y -> x/l/..`` leaves the archive)."""
    route: list[str] = [p for p in base.split("/") if p]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for i, part in enumerate(parts):
        if part == "..":
            if route:
                route.pop()
            continue
        route.append(part)
        if i < len(parts) - 1 and kinds.get("/".join(route)) == "link":
            raise ArchiveError(f"link to {target!r} goes through another link", member)


def _check_tar_member(m: tarfile.TarInfo, name: str, kinds: dict[str, str]) -> None:
    _check_parents(name, kinds)
    if m.issym() or m.islnk():
        # symlink targets are relative to the link's folder, hardlinks to the root
        base = posixpath.dirname(name) if m.issym() else ""
        if not _inside(base, m.linkname):
            raise ArchiveError(f"link to {m.linkname!r} points outside the archive", m.name)
        _check_link_route(base, m.linkname, kinds, m.name)
        kinds[name] = "link"
    elif m.isfile():
        kinds[name] = "file"
    elif m.isdir():
        kinds.setdefault(name, "dir")
    else:
        raise ArchiveError("only regular files, folders and internal links are allowed", m.name)


def _filter_message(exc: tarfile.FilterError) -> ArchiveError:
    """Python's extraction filter said no: its messages carry server paths."""
    member = exc.tarinfo.name
    if isinstance(exc, tarfile.LinkOutsideDestinationError | tarfile.AbsoluteLinkError):
        return ArchiveError(f"link to {exc.tarinfo.linkname!r} points outside the archive", member)
    if isinstance(exc, tarfile.OutsideDestinationError | tarfile.AbsolutePathError):
        return ArchiveError("path escapes the archive", member)
    if isinstance(exc, tarfile.SpecialFileError):
        return ArchiveError("only regular files, folders and internal links are allowed", member)
    return ArchiveError("this member cannot be extracted safely", member)


def _extract_tar(path: Path, dest: Path, limits: Limits, compression: str) -> Extracted:
    what = f"{COMPRESSION[compression]}-compressed " if compression in COMPRESSION else ""
    damaged = f"the {what}tar archive is damaged or cut short"
    try:
        tar = tarfile.open(path, TAR_MODES[compression])  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, *_DECOMPRESS_ERRORS):
        # e.g. one gzipped text file: compressed, but no tar archive inside
        raise ArchiveError(f"the {what}file holds no readable tar archive (or it is damaged)") from None
    with tar:
        members = []
        total = 0
        kinds: dict[str, str] = {}
        try:
            for n, m in enumerate(tar, start=1):
                name = _safe_name(m.name)
                if name:
                    _check_tar_member(m, name, kinds)
                total += m.size if m.isfile() else 0
                _check_counts(n, total, m.size, m.name, limits)
                if name:
                    members.append(m)
        except (tarfile.TarError, *_DECOMPRESS_ERRORS):
            raise ArchiveError(damaged) from None
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise _filter_message(exc) from None
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError):
            raise ArchiveError(damaged) from None
        except OSError as exc:  # e.g. disk full: strerror has no path in it
            raise ArchiveError(f"cannot be extracted: {exc.strerror or 'input/output error'}") from None
    files = [p for p in dest.rglob("*") if p.is_file() and not p.is_symlink()]
    written = sum(p.stat().st_size for p in files)
    if written > limits.max_total_bytes:
        raise ArchiveError(f"extracted size exceeds the limit of {limits.max_total_bytes} bytes")
    return Extracted(n_files=len(files), total_bytes=written)


def _extract_zip(path: Path, dest: Path, limits: Limits) -> Extracted:
    damaged = "the zip archive is damaged or cut short"
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise ArchiveError(damaged) from None
    with zf:
        infos = zf.infolist()
        total = 0
        kinds: dict[str, str] = {}
        for n, info in enumerate(infos, start=1):
            name = _safe_name(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError("symbolic links are not allowed in zip archives", info.filename)
            if name:
                _check_parents(name, kinds)
                kinds[name] = "dir" if info.is_dir() else "file"
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
            except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError):
                raise ArchiveError("damaged member (its data does not match its checksum or is cut short)",
                                   info.filename) from None
            except NotImplementedError:
                raise ArchiveError("compressed with a method this server cannot read; use deflate",
                                   info.filename) from None
            except RuntimeError:  # zipfile: encrypted member
                raise ArchiveError("encrypted members are not supported", info.filename) from None
            n_files += 1
    return Extracted(n_files=n_files, total_bytes=written)


def extract(path: Path, dest: Path, limits: Limits, filename: str | None = None) -> Extracted:
    """Extract into ``dest`` (created; removed again on failure). ``filename``, the name the
    user gave the upload, is used in messages only: the format comes from the content."""
    kind = sniff(path)
    if kind is None:
        raise _not_an_archive(path, filename)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        if kind == "zip":
            return _extract_zip(path, dest, limits)
        return _extract_tar(path, dest, limits, kind)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
