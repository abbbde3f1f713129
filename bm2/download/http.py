"""HTTP layer of :mod:`bm2.download`: constants, errors, sessions, checksums, retries and :func:`download_file`."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import requests
import requests.auth
from filelock import FileLock, Timeout
from tqdm import tqdm

from ..utils.io import fsync_dir
from .. import __version__

logger = logging.getLogger("bm2.download")  # the logger of the module before the split

CHUNK = 1 << 20  # bytes read from disk at a time
# Bytes per socket read: small enough that a dropped connection loses little (a read cut short is lost).
NET_CHUNK = 64 * 1024
STUDY_MARKER = ".bm2-download.json"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_LISTING_PAGES = 100_000  # bounds on remote listings, so that a misbehaving server cannot loop us forever
MAX_FOLDERS = 100_000
USER_AGENT = f"bm2/{__version__} python-requests/{requests.__version__}"

class DownloadError(RuntimeError):
    """A download failed; the message names the URL and how to fix or resume it."""


class ChecksumError(DownloadError):
    """A downloaded file did not match its expected checksum or size, twice."""


class CredentialsError(DownloadError):
    """A source needs credentials that are missing or were rejected."""


class ArchiveError(DownloadError):
    """An archive is unreadable, or not a zip / tar archive."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would be written outside the extraction folder."""


class _Retry(Exception):
    """Internal: a transient failure; try again (after ``wait`` seconds when given)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True)
class RemoteFile:
    """One file of a remote listing: where it goes (``path``, relative POSIX) and how to check it."""

    path: str
    url: str
    size: int | None = None
    checksum: str | None = None


# ----------------------------------------------------------------------------------------------- helpers

def progress_enabled(progress: bool = True) -> bool:
    """Whether to draw progress bars: asked for, stderr is a tty and ``BM2_NO_PROGRESS`` is not 1."""
    return bool(progress) and os.environ.get("BM2_NO_PROGRESS") != "1" and sys.stderr.isatty()


def new_session() -> requests.Session:
    """A requests session with bm2's User-Agent and no transparent compression (sizes must match bytes)."""
    session = requests.Session()
    # identity encoding: Content-Length and ranges then count the bytes we store, not compressed ones.
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return session


def _parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    if not checksum:
        return None
    algo, sep, digest = str(checksum).partition(":")
    algo = algo.strip().lower()
    if not sep or not digest.strip():
        raise ValueError(f"checksum {checksum!r} must look like 'md5:<hex>' or 'sha256:<hex>'")
    if algo not in hashlib.algorithms_available:
        raise ValueError(f"unknown checksum algorithm {algo!r} in {checksum!r}; use md5, sha1 or sha256")
    return algo, digest.strip().lower()


def file_digest(path: str | Path, algo: str) -> str:
    """Hex digest of a file with ``algo`` (md5, sha256 ...), read in chunks."""
    hasher = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """(start, end, total) of a ``Content-Range`` header; None for the parts it does not give."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", value or "")
    if not match:
        return None, None, None
    start, end, total = match.groups()

    def as_int(value: str | None) -> int | None:
        return int(value) if value not in (None, "*") else None
    return as_int(start), as_int(end), as_int(total)


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return min(float(resp.headers.get("Retry-After", "")), 60.0)
    except ValueError:
        return None


def _http_hint(status: int) -> str:
    return {401: "authentication required or rejected: check the credentials",
            403: "access refused: check the credentials and that your account was granted access",
            404: "not found: the URL in the `download:` config section may be outdated"}.get(status, "")


def _raise_for_status(resp: requests.Response, url: str) -> None:
    """Transient statuses become :class:`_Retry`; other errors a :class:`DownloadError` naming the URL."""
    if resp.status_code in (408, 425, 429, 500, 502, 503, 504):
        raise _Retry(f"HTTP {resp.status_code} from {url}", _retry_after(resp))
    if resp.status_code >= 400:
        hint = _http_hint(resp.status_code)
        error = CredentialsError if resp.status_code in (401, 403) else DownloadError
        raise error(f"{url}: HTTP {resp.status_code} {resp.reason}" + (f" ({hint})" if hint else ""))


NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _with_retries(func: tp.Callable[[], tp.Any], url: str, retries: int, backoff: float) -> tp.Any:
    """Call ``func``, again after transient failures (at most ``retries`` more times, exponential backoff)."""
    for attempt in range(int(retries) + 1):
        try:
            return func()
        except (_Retry, *NETWORK_ERRORS) as exc:
            if attempt >= retries:
                raise DownloadError(f"{url}: giving up after {attempt + 1} attempts ({exc}); check the network "
                                    "and run again (partial downloads are resumed)") from exc
            wait = getattr(exc, "wait", None)
            wait = min(backoff * 2 ** attempt, 60.0) if wait is None else wait
            logger.info("%s: %s; retrying in %.1fs (%d/%d)", url, exc, wait, attempt + 1, retries)
            time.sleep(wait)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------- one file

def _is_complete(dest: Path, expected_size: int | None, expected: tuple[str, str] | None,
                 verify_existing: bool) -> bool:
    # A file under its final name was verified before the rename, so existence (and the size when the
    # listing gives one, to notice a file changed upstream) is enough unless asked to re-hash it.
    if not dest.is_file():
        return False
    if expected_size is not None and dest.stat().st_size != expected_size:
        return False
    if verify_existing and expected is not None:
        return file_digest(dest, expected[0]) == expected[1]
    return True


def _fetch_once(session: requests.Session, url: str, part: Path, expected_size: int | None,
                algo: str | None, timeout: float, headers: dict[str, str], auth: tp.Any,
                show: bool) -> tuple[int, str | None]:
    """One request appending to ``part`` (resuming when it holds data); returns (size, hex digest)."""
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:  # not a prefix of this file: start over
        part.unlink()
        offset = 0

    def digest_of_part() -> str | None:
        return file_digest(part, algo) if algo else None

    if offset and expected_size is not None and offset == expected_size:
        return offset, digest_of_part()  # every byte is already there (killed before verification)
    request_headers = dict(headers)
    if offset:
        request_headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=request_headers, stream=True, timeout=timeout, auth=auth) as resp:
        if resp.status_code == 416:  # range not satisfiable: complete already, or the remote file shrank
            total = _content_range(resp.headers.get("Content-Range"))[2]
            if offset and total == offset:
                return offset, digest_of_part()
            part.unlink(missing_ok=True)
            raise _Retry(f"server refused to resume at byte {offset} (size {total}); restarting", 0.0)
        _raise_for_status(resp, url)
        if resp.status_code == 206:
            start, _, total = _content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting", 0.0)
            mode = "ab"
        elif resp.status_code == 200:
            if offset:
                logger.info("%s: server ignored the range request; downloading from the start", url)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP {resp.status_code} {resp.reason}")
        hasher = hashlib.new(algo) if algo else None
        if hasher is not None and offset:
            with open(part, "rb") as existing:  # the digest covers the whole file, resumed part included
                for block in iter(lambda: existing.read(CHUNK), b""):
                    hasher.update(block)
        received = 0
        bar_total = total if total is not None else expected_size
        with open(part, mode) as fh, tqdm(total=bar_total, initial=offset, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=part.name[:-5][-40:], leave=False,
                                          disable=not show) as bar:
            try:
                for block in resp.iter_content(NET_CHUNK):
                    fh.write(block)
                    if hasher is not None:
                        hasher.update(block)
                    received += len(block)
                    bar.update(len(block))
            finally:  # keep what arrived, even on a broken connection: the next attempt resumes from it
                fh.flush()
                os.fsync(fh.fileno())
    size = offset + received
    if total is not None and size < total:
        raise _Retry(f"connection closed after {size} of {total} bytes")
    return size, hasher.hexdigest() if hasher is not None else None


def download_file(url: str, dest: str | Path, expected_size: int | None = None, checksum: str | None = None,
                  session: requests.Session | None = None, progress: bool = True, retries: int = 3,
                  timeout: float = 60.0, *, auth: tp.Any = None, headers: dict[str, str] | None = None,
                  backoff: float = 2.0, lock_timeout: float | None = None,
                  verify_existing: bool = False) -> Path:
    """Download ``url`` to ``dest`` resumably, verified (checksum ``"md5:..."``, else size), atomically, once."""
    dest = Path(dest)
    expected = _parse_checksum(checksum)
    expected_size = None if expected_size is None else int(expected_size)
    if _is_complete(dest, expected_size, expected, verify_existing):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    lock = FileLock(str(dest.with_name(dest.name + ".lock")), timeout=-1 if lock_timeout is None else lock_timeout)
    try:
        lock.acquire()
    except Timeout as exc:
        raise DownloadError(f"timed out after {lock_timeout}s waiting for {lock.lock_file} (another job is "
                            f"downloading {dest}?); wait for it or remove the lock if that job is dead") from exc
    own_session = session is None
    sess = new_session() if session is None else session
    try:
        return _download_locked(url, dest, part, expected_size, expected, sess, progress, retries, timeout,
                                auth, headers, backoff, verify_existing)
    except (requests.RequestException, ValueError) as exc:  # malformed URL, too many redirects ...
        if isinstance(exc, DownloadError):
            raise
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        if own_session:
            sess.close()
        lock.release()


def _download_locked(url: str, dest: Path, part: Path, expected_size: int | None,
                     expected: tuple[str, str] | None, sess: requests.Session, progress: bool, retries: int,
                     timeout: float, auth: tp.Any, headers: dict[str, str] | None, backoff: float,
                     verify_existing: bool) -> Path:
    """The body of :func:`download_file`, run while holding the file's lock."""
    # Another job may have completed the file while we waited for the lock.
    if _is_complete(dest, expected_size, expected, verify_existing):
        return dest
    problem = ""
    for fetch in range(2):  # a file failing verification is deleted and fetched once more
        size, digest = _with_retries(
            lambda: _fetch_once(sess, url, part, expected_size, expected[0] if expected else None, timeout,
                                dict(headers or {}), auth, progress_enabled(progress)),
            url, retries, backoff)
        problems = []
        if expected_size is not None and size != expected_size:
            problems.append(f"size: expected {expected_size} bytes, got {size}")
        if expected is not None and digest != expected[1]:
            problems.append(f"{expected[0]}: expected {expected[1]}, got {digest}")
        if not problems:
            os.replace(part, dest)  # the final name only ever holds a verified file
            fsync_dir(dest.parent)
            return dest
        problem = "; ".join(problems)
        part.unlink(missing_ok=True)
        if fetch == 0:
            logger.warning("%s failed verification (%s): deleted, downloading again", url, problem)
    raise ChecksumError(f"{url}: the download failed verification twice ({problem}); the partial file was "
                        "deleted. The remote file may have changed (update the checksum / URL in the "
                        "`download:` config section) or the connection corrupts data; try again later.")


