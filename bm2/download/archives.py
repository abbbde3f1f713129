"""Safe, once-only extraction of zip / tar archives (see :func:`extract_archive`)."""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import tarfile
import time
import uuid
import zipfile
import zlib
from pathlib import Path

from filelock import FileLock

from ..utils.io import fsync_dir
from .http import ARCHIVE_SUFFIXES, ArchiveError, UnsafeArchiveError


# --------------------------------------------------------------------------------------------- archives

def _check_member_name(name: str, archive: Path) -> None:
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or ".." in norm.split("/"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the extraction folder "
                                 "(absolute path or '..'); refusing to extract this archive")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_member_name(member.name, archive)
    if member.issym() or member.islnk():
        link = member.linkname.replace("\\", "/")
        # A symlink's target is relative to its own folder, a hard link's to the archive root.
        base = posixpath.dirname(member.name.replace("\\", "/")) if member.issym() else ""
        target = posixpath.normpath(posixpath.join(base, link))
        if link.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafeArchiveError(f"{archive}: link {member.name!r} -> {member.linkname!r} points outside the "
                                     "extraction folder; refusing to extract this archive")
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device or fifo; refusing to extract")


def archive_marker(path: str | Path, dest: str | Path) -> Path:
    """The completion marker :func:`extract_archive` writes in ``dest`` for archive ``path``."""
    return Path(dest) / f".{Path(path).name}.extracted"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def extract_archive(path: str | Path, dest: str | Path) -> Path:
    """Extract a zip / tar(.gz) archive into ``dest`` once (safe against path traversal); returns ``dest``."""
    path, dest = Path(path), Path(dest)
    marker = archive_marker(path, dest)
    if marker.exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / f".{path.name}.extract.lock")):
        if marker.exists():  # extracted by another job while we waited
            return dest
        prefix = f".tmp-extract-{path.name}-"
        for stale in dest.glob(prefix + "*"):  # left by a killed extraction (we hold its lock: it is dead)
            shutil.rmtree(stale, ignore_errors=True)
        # The temporary folder is inside dest so that moving its content into place is a plain rename.
        tmp = dest / f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
                    for name in names:  # validate every member before writing anything
                        _check_member_name(name, path)
                    tmp.mkdir()
                    zf.extractall(tmp)  # reads every member, hence checks every CRC
            elif tarfile.is_tarfile(path):
                with tarfile.open(path, "r:*") as tf:
                    members = tf.getmembers()
                    for member in members:
                        _check_tar_member(member, path)
                    names = [m.name for m in members]
                    tmp.mkdir()
                    if hasattr(tarfile, "data_filter"):  # Python's own guard too, where available
                        tf.extractall(tmp, members=members, filter="data")
                    else:  # pragma: no cover - members were checked above
                        tf.extractall(tmp, members=members)
            else:
                raise ArchiveError(f"{path} is neither a zip nor a tar archive; delete it and download again")
            for child in sorted(tmp.iterdir()):
                target = dest / child.name
                if target.exists() or target.is_symlink():  # from an earlier extraction killed while moving
                    _remove(target)
                os.replace(child, target)
            info = {"archive": path.name, "size": path.stat().st_size, "members": len(names),
                    "time": time.time()}
            tmp_marker = marker.with_name(marker.name + f".{uuid.uuid4().hex[:8]}")
            tmp_marker.write_text(json.dumps(info, indent=1))
            os.replace(tmp_marker, marker)  # written last: its presence means the content is complete
            fsync_dir(dest)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{path} is damaged ({exc}); delete it and download it again") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def is_archive(name: str) -> bool:
    """Whether a file name has an archive extension that :func:`extract_archive` handles."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


