"""Cheap, content-based fingerprints of input files, for cache keys that follow their data.

A small file (up to :data:`FULL_HASH_BYTES`) is hashed whole. A larger one (raw MEG / EEG data, audio) is
fingerprinted by its size and a sample of its content: the first and last :data:`EDGE_BYTES` and
:data:`N_PROBES` blocks of :data:`PROBE_BYTES` spread evenly in between. Touching a file (new mtime, same bytes)
keeps its fingerprint; rewriting it (new header, new data, other length) changes it. Not covered: an edit of a
few bytes of a large file that changes neither its size nor any sampled block (a raw file rewritten by a tool
changes its header, hence its first bytes). A folder (e.g. a CTF ``.ds``) is fingerprinted by the names and
fingerprints of every file under it. Fingerprints never depend on where the files are.
"""

from __future__ import annotations

import hashlib
import typing as tp
from pathlib import Path

FULL_HASH_BYTES = 8 << 20
EDGE_BYTES = 64 << 10
PROBE_BYTES = 4 << 10
N_PROBES = 32
MISSING = "missing"


_MEMO: dict[tuple, str] = {}


def file_fingerprint(path: str | Path) -> str:
    """A hex digest of the content of ``path`` (a file or a folder), or ``"missing"`` if it does not exist.

    A file's digest is kept for the life of the process, keyed by its path, device, inode, size and modification
    time: a start of bm2 fingerprints the same sound files several times (recording uids, events), and read them
    again each time.
    """
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha1(b"dir")
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{sub.relative_to(path).as_posix()}\0{file_fingerprint(sub)}\0".encode())
        return digest.hexdigest()
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    key = (str(path.absolute()), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _MEMO:
        _MEMO[key] = _content_digest(path, stat.st_size)
    return _MEMO[key]


def _content_digest(path: Path, size: int) -> str:
    digest = hashlib.sha1(f"{size}\0".encode())
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        else:
            for offset, length in sampled_ranges(size):
                fh.seek(offset)
                digest.update(fh.read(length))
    return digest.hexdigest()


def sampled_ranges(size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` of the parts of a large file that enter its fingerprint: the first and last
    :data:`EDGE_BYTES` and :data:`N_PROBES` blocks of :data:`PROBE_BYTES` spread evenly in between."""
    step = (size - 2 * EDGE_BYTES - PROBE_BYTES) / (N_PROBES + 1)
    probes = [(EDGE_BYTES + int(step * (i + 1)), PROBE_BYTES) for i in range(N_PROBES)]
    return [(0, EDGE_BYTES), *probes, (size - EDGE_BYTES, EDGE_BYTES)]


def files_fingerprint(files: tp.Mapping[str, str | Path]) -> dict[str, str]:
    """``{name: fingerprint}`` of ``files`` (``{name: path}``; the names, not the paths, enter the result)."""
    return {name: file_fingerprint(path) for name, path in sorted(files.items())}

