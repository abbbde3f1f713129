"""Fetch the public studies: resumable, verified, atomic, lock-protected downloads and safe archive extraction.

Entry points:

- :func:`download_file`: one URL to one file. Partial data lives in ``dest + ".part"`` and is resumed with HTTP
  range requests; the result is checked against the source's checksum (or at least its size) and only then
  renamed to ``dest``; a ``dest + ".lock"`` file lock makes concurrent jobs wait for each other instead of
  writing the same file twice.
- :func:`extract_archive`: zip / tar(.gz) extracted once (temporary folder, rename, completion marker last),
  refusing members that would land outside the destination.
- :func:`download_study`: the source of each study (``gwilliams2022``: OSF API; ``broderick2019``: Dryad
  archive; ``brennan2019``: Deep Blue files; ``schoffelen2019``: Donders WebDAV with credentials taken from
  environment variables). Its options are the ``download:`` section of ``conf/config.yaml`` (see
  :data:`DEFAULTS`); ``python -m scripts.download NAME`` runs it from the command line.

Once a study is complete, a marker (``.bm2-download.json``) in its root lets later calls return at once,
without any network access.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tarfile
import threading
import time
import typing as tp
import uuid
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import requests
import requests.auth
from filelock import FileLock, Timeout
from tqdm import tqdm

from .utils.io import fsync_dir
from . import __version__
from .utils.hashing import content_hash

logger = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read from disk at a time
# Bytes per socket read: small enough that a dropped connection loses little (a read cut short is lost).
NET_CHUNK = 64 * 1024
STUDY_MARKER = ".bm2-download.json"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_LISTING_PAGES = 100_000  # bounds on remote listings, so that a misbehaving server cannot loop us forever
MAX_FOLDERS = 100_000
USER_AGENT = f"bm2/{__version__} python-requests/{requests.__version__}"

# Deep Blue Data file ids of Brennan & Hale (2019), doi:10.7302/Z29C6VNH (dataset bg257f92t): 42 subjects'
# FieldTrip .mat files, AliceChapterOne-EEG.csv, audio.zip and proc.zip. File names come from the server.
BRENNAN_FILES = [
    "vm40xs661", "t435gf09p", "0v8381376", "6h440t36j", "qv33rx36x", "7w62f925w", "5425kb76p", "g445cf216",
    "df65v8733", "41687j32q", "r207tq17h", "pn89d748r", "41687j330", "xg94hq37z", "fj2362955", "1r66j195h",
    "j098zc06b", "3n203z903", "gx41mj79g", "mp48sd64h", "p2676w56p", "dn39x2566", "pv63g1045", "r207tq18s",
    "qr46r1659", "wd375x18w", "td96k336b", "6q182m27b", "ms35t936k", "02870w66d", "cj82k821x", "9k41zf376",
    "bk128b81j", "q524jp737", "37720d60h", "ks65hd14w", "b5644s476", "3t945r72w", "bn999773b", "4t64gp10r",
    "qr46r166k", "h415pb60j", "sq87bv504", "ht24wk29w", "p2676w57z", "2514nm49h", "41687j348", "tq57ns04w",
    "4t64gp111", "5712m736z", "f1881m88g", "2b88qd012", "2b88qd00s", "bn999775w", "h415pb59s", "q524jp72z",
]

#: Defaults of the ``download:`` config section; the section given to :func:`download_study` is merged on top.
DEFAULTS: dict[str, tp.Any] = {
    "retries": 3,            # extra attempts per request after a network error (resuming from the partial file)
    "timeout": 60.0,         # s, connect / read timeout of one request
    "backoff": 2.0,          # s, first wait before a retry; doubles at each attempt (capped at 60 s)
    "workers": 4,            # files downloaded in parallel
    "keep_archives": True,   # keep archives once extracted (False saves space; they are not fetched again)
    "progress": True,        # progress bars (also off when stderr is not a tty or BM2_NO_PROGRESS=1)
    "gwilliams2022": {       # MEG-MASC: BIDS tree spread over three OSF projects, listed through the OSF API
        "api": "https://api.osf.io/v2",
        "projects": ["ag3kj", "h2tzn", "u5327"],
    },
    "broderick2019": {       # Natural Speech EEG: the Dryad dataset zip (all five experiments), then the inner one
        "urls": [{"url": "https://datadryad.org/api/v2/datasets/doi%3A10.5061%2Fdryad.070jc/download",
                  "name": "broderick2019_dryad.zip"}],
        "nested": ["**/Natural Speech.zip"],  # inner archives to extract too (globs under the study root)
        "token_env": "BM2_DRYAD_TOKEN",     # optional Dryad API token (higher rate limits), sent as Bearer
    },
    "brennan2019": {         # Alice EEG: Deep Blue Data files (names from the server); zips among them extracted
        "base_url": "https://deepblue.lib.umich.edu/data/downloads",
        "files": None,                      # file ids under base_url; None: BRENNAN_FILES
        "urls": [],
    },
    "schoffelen2019": {      # MOUS: Donders Repository collection DSC_3011020.09_236 over WebDAV, registration needed
        "base_url": "https://webdav.data.donders.ru.nl/dccn/DSC_3011020.09_236_v1",
        "user_env": "BM2_MOUS_USER",
        "password_env": "BM2_MOUS_PASSWORD",
        "files": [],          # explicit paths under base_url (GET only); empty: list the collection with PROPFIND
        # what to fetch of the listing (globs on paths: `*` stays in a folder, `**` crosses folders); empty: all
        "include": ["*.tsv", "*.json", "*.md", "*.txt", "README*", "CHANGES", "sub-A2*/*.tsv", "sub-A2*/meg/**",
                    "sourcedata/meg_task/**", "stimuli/**"],
    },
}

NOTHING_TO_DOWNLOAD = {"synthetic": "it is generated locally by its prepare()"}

MOUS_HELP = (
    "study 'schoffelen2019' (MOUS) is shared under a data-use agreement, so it needs your own credentials:\n"
    "  1. register at https://data.donders.ru.nl (Radboud / Donders Repository) and request access to the\n"
    "     collection DSC_3011020.09_236 (doi:10.34973/37n0-yc51), accepting its data-use agreement;\n"
    "  2. in your repository profile, note your data-access user name and set a data-access (WebDAV) password;\n"
    "  3. export {user_env}=<that user name> {password_env}=<that password> and run the download again.\n"
    "Credentials are only read from these environment variables (never prompted for, never logged).")


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


# ---------------------------------------------------------------------------------------------- listings

def _safe_relative(path: str, source: str) -> str:
    """``path`` as a clean relative POSIX path, or an error if it would escape the study root."""
    norm = path.replace("\\", "/").strip("/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"{source}: refusing remote path {path!r} (empty, absolute or with '..')")
    return "/".join(parts)


def _get_json(session: requests.Session, url: str, opts: dict[str, tp.Any]) -> dict[str, tp.Any]:
    def once() -> dict[str, tp.Any]:
        with session.get(url, timeout=opts["timeout"], headers={"Accept": "application/json"}) as resp:
            _raise_for_status(resp, url)
            try:
                return resp.json()
            except ValueError as exc:
                raise DownloadError(f"{url}: the answer is not JSON; check the API URL in the `download:` "
                                    "config section") from exc
    return _with_retries(once, url, opts["retries"], opts["backoff"])


def _page_size(url: str, size: int = 100) -> str:
    # Fewer, larger listing pages spare OSF's rate limit; the API ignores the parameter where unsupported.
    return url if "page[size]" in url else url + ("&" if "?" in url else "?") + f"page[size]={size}"


def osf_list_files(project: str, api: str, session: requests.Session, opts: dict[str, tp.Any]) -> list[RemoteFile]:
    """Every file of an OSF project's osfstorage (folders recursed, pages followed), with size and hash."""
    start = f"{api.rstrip('/')}/nodes/{project}/files/osfstorage/"
    queue: list[tuple[str, str]] = [(_page_size(start), "")]
    seen: set[str] = set()
    files: list[RemoteFile] = []
    pages = 0
    while queue:
        url: str | None
        url, prefix = queue.pop(0)
        while url:
            if url in seen:  # a listing linking back to a page already read: stop rather than loop
                break
            seen.add(url)
            pages += 1
            if pages > MAX_LISTING_PAGES:
                raise DownloadError(f"OSF project {project}: more than {MAX_LISTING_PAGES} listing pages")
            payload = _get_json(session, url, opts)
            for item in payload.get("data") or []:
                attrs = item.get("attributes") or {}
                rel = _safe_relative(prefix + str(attrs.get("name", "")), f"OSF project {project}")
                if attrs.get("kind") == "folder":
                    related = (((item.get("relationships") or {}).get("files") or {}).get("links") or {})
                    related = related.get("related")
                    href = related.get("href") if isinstance(related, dict) else related
                    if not href:  # older answers: the folder's own listing from its storage path
                        href = f"{start.rstrip('/')}{attrs.get('path', '')}"
                    queue.append((_page_size(href), rel + "/"))
                    continue
                hashes = ((attrs.get("extra") or {}).get("hashes") or {})
                checksum = (f"sha256:{hashes['sha256']}" if hashes.get("sha256")
                            else f"md5:{hashes['md5']}" if hashes.get("md5") else None)
                download = (item.get("links") or {}).get("download")
                if not download:
                    raise DownloadError(f"OSF project {project}: no download link for {rel}")
                size = attrs.get("size")
                files.append(RemoteFile(rel, download, int(size) if size is not None else None, checksum))
            url = (payload.get("links") or {}).get("next")
    return files


_DAV = "{DAV:}"
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
                 b"<d:resourcetype/><d:getcontentlength/></d:prop></d:propfind>")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``*`` and ``?`` stay within a folder, ``**`` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _may_contain(folder: str, patterns: tp.Sequence[str]) -> bool:
    """Whether some file under ``folder`` could match one of ``patterns`` (prunes e.g. fMRI subjects)."""
    if not patterns:
        return True
    parts = folder.strip("/").split("/")
    for pattern in patterns:
        segments = pattern.split("/")
        for depth, part in enumerate(parts):
            if depth >= len(segments) - 1 and "**" not in segments[min(depth, len(segments) - 1)]:
                break  # the pattern names files at this depth or above, not inside this folder
            if "**" in segments[depth]:
                return True  # crosses folders: anything below may match
            if not glob_regex(segments[depth]).match(part):
                break
        else:
            return True
    return False


def webdav_list_files(base_url: str, session: requests.Session, auth: tp.Any, opts: dict[str, tp.Any],
                      include: tp.Sequence[str] = ()) -> list[RemoteFile]:
    """Files under a WebDAV folder (PROPFIND, depth 1, folders recursed), filtered by ``include`` globs."""
    base = base_url.rstrip("/") + "/"
    base_path = unquote(urlsplit(base).path)
    patterns = [glob_regex(p) for p in include]
    queue, seen, files = [""], set(), []
    while queue:
        folder = queue.pop(0)
        if folder in seen:
            continue
        seen.add(folder)
        if len(seen) > MAX_FOLDERS:
            raise DownloadError(f"{base}: more than {MAX_FOLDERS} folders; narrow `include`")
        url = base + quote(folder)

        def once(url: str = url) -> bytes:
            with session.request("PROPFIND", url, data=PROPFIND_BODY, auth=auth, timeout=opts["timeout"],
                                 headers={"Depth": "1", "Content-Type": "application/xml"}) as resp:
                _raise_for_status(resp, url)
                if resp.status_code != 207:
                    raise DownloadError(f"{url}: expected a WebDAV listing (HTTP 207), got HTTP {resp.status_code};"
                                        " set `files` explicitly in the `download:` config section instead")
                return resp.content
        # The answer comes from the authenticated repository; expat refuses entity-expansion bombs.
        tree = ElementTree.fromstring(_with_retries(once, url, opts["retries"], opts["backoff"]))
        for response in tree.iter(f"{_DAV}response"):
            href = unquote(urlsplit((response.findtext(f"{_DAV}href") or "").strip()).path)
            if not href.startswith(base_path):
                continue
            rel_raw = href[len(base_path):].strip("/")
            if not rel_raw or rel_raw == folder.strip("/"):
                continue  # the folder itself
            rel = _safe_relative(rel_raw, base)
            is_dir = response.find(f".//{_DAV}resourcetype/{_DAV}collection") is not None
            if is_dir:
                if _may_contain(rel, include):
                    queue.append(rel + "/")
                continue
            if patterns and not any(p.match(rel) for p in patterns):
                continue
            length = response.findtext(f".//{_DAV}getcontentlength")
            size = int(length) if length and length.strip().isdigit() else None
            files.append(RemoteFile(rel, base + quote(rel), size, None))
    return files


def _filename_from_headers(resp: requests.Response) -> str | None:
    disposition = resp.headers.get("Content-Disposition", "")
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", disposition)
    if match:
        return unquote(match.group(1).strip().strip('"'))
    match = re.search(r'filename\s*=\s*"([^"]+)"', disposition) or re.search(r"filename\s*=\s*([^;]+)",
                                                                             disposition)
    return match.group(1).strip() if match else None


def remote_name(url: str, session: requests.Session, opts: dict[str, tp.Any], auth: tp.Any = None,
                headers: dict[str, str] | None = None) -> str:
    """The file name a server gives ``url`` (Content-Disposition), else the last segment of its path."""
    def once() -> str | None:
        # GET rather than HEAD (not every repository answers HEAD); the body is never read.
        with session.get(url, stream=True, timeout=opts["timeout"], auth=auth, headers=headers or {}) as resp:
            _raise_for_status(resp, url)
            return _filename_from_headers(resp)
    name = _with_retries(once, url, opts["retries"], opts["backoff"]) or unquote(urlsplit(url).path.rstrip("/"))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise DownloadError(f"{url}: cannot tell the file name; give it as `name` in the `download:` config section")
    return name


# ----------------------------------------------------------------------------------------------- studies

class _Sessions:
    """One requests session per worker thread (sessions are not meant to be shared across threads)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._mutex = threading.Lock()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = new_session()
            with self._mutex:
                self._all.append(session)
        return session

    def close(self) -> None:
        for session in self._all:
            session.close()


def download_files(root: Path, files: tp.Sequence[RemoteFile], opts: dict[str, tp.Any], auth: tp.Any = None,
                   headers: dict[str, str] | None = None) -> list[Path]:
    """Download ``files`` under ``root`` (in parallel); failures are collected and reported together."""
    workers = max(1, int(opts.get("workers") or 1))
    show = progress_enabled(opts.get("progress", True))
    sessions = _Sessions()
    total = sum(f.size or 0 for f in files)

    def one(remote: RemoteFile) -> Path:
        dest = root / _safe_relative(remote.path, remote.url)
        return download_file(remote.url, dest, remote.size, remote.checksum, session=sessions.get(),
                             progress=show and workers == 1, retries=opts["retries"], timeout=opts["timeout"],
                             auth=auth, headers=headers, backoff=opts["backoff"])

    done: list[Path] = []
    failures: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc=root.name,
                     disable=not show or workers == 1) as bar:
            futures = {pool.submit(one, f): f for f in files}
            for future in as_completed(futures):
                remote = futures[future]
                try:
                    done.append(future.result())
                except CredentialsError:
                    for other in futures:  # every other file would be refused the same way
                        other.cancel()
                    raise
                except DownloadError as exc:
                    failures.append(str(exc))
                    logger.error("%s", exc)
                bar.update(remote.size or 0)
    finally:
        sessions.close()
    if failures:
        listed = "\n  ".join(failures[:5]) + (f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise DownloadError(f"{len(failures)} of {len(files)} files could not be downloaded into {root}:\n  {listed}\n"
                            "Run the same command again: complete files are kept and partial ones resumed.")
    return done


def _options(options: tp.Mapping[str, tp.Any] | None) -> dict[str, tp.Any]:
    """DEFAULTS with ``options`` merged on top (nested mappings merged key by key)."""
    def merge(base: dict[str, tp.Any], update: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
        for key, value in update.items():
            if isinstance(value, tp.Mapping) and isinstance(base.get(key), dict):
                base[key] = merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base
    if options is not None and not isinstance(options, dict):  # e.g. the OmegaConf section of the config
        from omegaconf import DictConfig, OmegaConf
        if isinstance(options, DictConfig):  # plain lists / dicts, so that the study signature is stable
            options = tp.cast(dict, OmegaConf.to_container(options, resolve=True))
    return merge(copy.deepcopy(DEFAULTS), options or {})


def _download_gwilliams2022(root: Path, spec: dict[str, tp.Any], opts: dict[str, tp.Any]) -> None:
    session = new_session()
    try:
        by_path: dict[str, RemoteFile] = {}
        for project in spec["projects"]:
            listed = osf_list_files(str(project), spec["api"], session, opts)
            logger.info("OSF project %s: %d files", project, len(listed))
            for remote in listed:
                known = by_path.get(remote.path)
                if known is not None and known.checksum != remote.checksum:
                    # Same path in two projects with different content: keep the first, say so.
                    logger.warning("%s is in several OSF projects with different content; keeping the one of "
                                   "the first project listed", remote.path)
                by_path.setdefault(remote.path, remote)
    finally:
        session.close()
    download_files(root, list(by_path.values()), opts)


def _url_items(spec: dict[str, tp.Any]) -> list[dict[str, tp.Any]]:
    items = [dict(u) if isinstance(u, tp.Mapping) else {"url": str(u)} for u in spec.get("urls") or []]
    if spec.get("base_url") and "files" in spec:
        ids = BRENNAN_FILES if spec["files"] is None else spec["files"]
        items += [{"url": f"{spec['base_url'].rstrip('/')}/{quote(str(i))}"} for i in ids]
    return items


def _download_urls(root: Path, spec: dict[str, tp.Any], opts: dict[str, tp.Any]) -> None:
    """Archive / file URLs (Dryad, Deep Blue): download each, then extract the archives among them once."""
    token = os.environ.get(spec["token_env"]) if spec.get("token_env") else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    session = new_session()
    files: list[RemoteFile] = []
    try:
        for item in _url_items(spec):
            if not item.get("url"):
                raise DownloadError(f"entry {item} of the `download:` config section has no `url`")
            name = item.get("name") or remote_name(item["url"], session, opts, headers=headers)
            checksum = (f"sha256:{item['sha256']}" if item.get("sha256")
                        else f"md5:{item['md5']}" if item.get("md5") else item.get("checksum"))
            files.append(RemoteFile(_safe_relative(name, item["url"]), item["url"], item.get("size"), checksum))
    finally:
        session.close()
    # Archives already extracted (and possibly deleted since) are not fetched again.
    todo = [f for f in files if not (is_archive(f.path) and archive_marker(f.path, root).exists())]
    download_files(root, todo, opts, headers=headers)
    for remote in files:
        if is_archive(remote.path):
            _extract_with_refetch(root, remote, opts, headers)
    for pattern in spec.get("nested") or []:  # archives inside the archives, extracted next to themselves
        for inner in sorted(root.glob(pattern)):
            if inner.is_file() and is_archive(inner.name):
                extract_archive(inner, inner.parent)
                if not opts.get("keep_archives", True):
                    inner.unlink()


def _extract_with_refetch(root: Path, remote: RemoteFile, opts: dict[str, tp.Any],
                          headers: dict[str, str]) -> None:
    archive = root / remote.path
    if archive_marker(archive, root).exists():
        return
    try:
        extract_archive(archive, root)
    except UnsafeArchiveError:
        raise
    except ArchiveError as exc:  # damaged despite a verified transfer (no checksum known): fetch it once more
        logger.warning("%s; downloading it again", exc)
        archive.unlink(missing_ok=True)
        download_files(root, [remote], opts, headers=headers)
        extract_archive(archive, root)
    if not opts.get("keep_archives", True):
        archive.unlink(missing_ok=True)


def _download_schoffelen2019(root: Path, spec: dict[str, tp.Any], opts: dict[str, tp.Any]) -> None:
    user, password = os.environ.get(spec["user_env"]), os.environ.get(spec["password_env"])
    if not user or not password:  # checked before any network access; never prompt (jobs run unattended)
        raise CredentialsError(MOUS_HELP.format(user_env=spec["user_env"], password_env=spec["password_env"]))
    auth = requests.auth.HTTPBasicAuth(user, password)
    base = spec["base_url"].rstrip("/") + "/"
    if spec.get("files"):
        files = [RemoteFile(rel, base + quote(rel)) for rel in
                 (_safe_relative(str(p), base) for p in spec["files"])]
    else:
        session = new_session()
        try:
            files = webdav_list_files(base, session, auth, opts, spec.get("include") or [])
        except CredentialsError as exc:
            raise CredentialsError(f"{exc}\nThe repository refused {spec['user_env']} / {spec['password_env']}: "
                                   "check them (the data-access password, not your login password) and that "
                                   "your access to the collection was granted.") from None
        finally:
            session.close()
        logger.info("MOUS WebDAV: %d files to fetch", len(files))
    download_files(root, files, opts, auth=auth)


DOWNLOADERS: dict[str, tp.Callable[[Path, dict[str, tp.Any], dict[str, tp.Any]], None]] = {
    "gwilliams2022": _download_gwilliams2022,
    "broderick2019": _download_urls,
    "brennan2019": _download_urls,
    "schoffelen2019": _download_schoffelen2019,
}


def downloadable_studies() -> list[str]:
    """Names of the studies :func:`download_study` can fetch."""
    return sorted(DOWNLOADERS)


def download_study(name: str, root: str | Path, options: tp.Mapping[str, tp.Any] | None = None,
                   force: bool = False) -> Path:
    """Fetch study ``name`` into ``root`` with the ``download:`` config ``options``; returns ``root``."""
    root = Path(root).expanduser()
    if name in NOTHING_TO_DOWNLOAD:
        logger.info("study %s needs no download: %s", name, NOTHING_TO_DOWNLOAD[name])
        return root
    if name not in DOWNLOADERS:
        raise DownloadError(f"no download is known for study {name!r}; studies that can be downloaded: "
                            f"{downloadable_studies()} ({', '.join(NOTHING_TO_DOWNLOAD)} needs none). Otherwise "
                            f"put its files in place by hand and point `paths.studies.{name}` to them.")
    opts = _options(options)
    spec = opts.get(name) or {}
    # The marker records which sources were fetched: changing them in the config fetches again (keeping
    # the complete files already there); credentials are never part of it.
    signature = content_hash({"study": name, "spec": spec})
    marker = root / STUDY_MARKER
    if not force and marker.exists():
        try:
            if json.loads(marker.read_text()).get("signature") == signature:
                logger.info("study %s is already downloaded in %s", name, root)
                return root
        except (OSError, ValueError):
            pass  # unreadable marker: check everything again
    root.mkdir(parents=True, exist_ok=True)
    logger.info("downloading study %s into %s", name, root)
    DOWNLOADERS[name](root, spec, opts)
    tmp = marker.with_name(f"{marker.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps({"study": name, "signature": signature, "time": time.time()}, indent=1))
    os.replace(tmp, marker)
    logger.info("study %s is ready in %s", name, root)
    return root
