"""Study sources and their downloaders: :data:`DEFAULTS`, :func:`download_files`, :func:`download_study`."""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
import typing as tp
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from urllib.parse import quote

import requests
import requests.auth
from tqdm import tqdm

from ..utils.hashing import content_hash
from .http import (ArchiveError, CredentialsError, DownloadError, RemoteFile, STUDY_MARKER, UnsafeArchiveError,
                   download_file, new_session, progress_enabled)
from .archives import archive_marker, extract_archive, is_archive
from .listings import _safe_relative, osf_list_files, remote_name, webdav_list_files
from .hub import LIBRIBRAIN_DEFAULTS, download_libribrain2025

logger = logging.getLogger("bm2.download")  # the logger of the module before the split

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
                    "sourcedata/meg_task/**", "stimuli/**", "derivatives/phonemes/**"],
    },
    # LibriBrain 2025: the h5 + events TSV of the pinned split's runs from the Hugging Face hub (bm2/download/hub.py)
    "libribrain2025": copy.deepcopy(LIBRIBRAIN_DEFAULTS),
}

NOTHING_TO_DOWNLOAD = {"synthetic": "it is generated locally by its prepare()",
                       "libribrain_synthetic": "it is generated locally by its prepare()"}

MOUS_HELP = (
    "study 'schoffelen2019' (MOUS) is shared under a data-use agreement, so it needs your own credentials:\n"
    "  1. register at https://data.donders.ru.nl (Radboud / Donders Repository) and request access to the\n"
    "     collection DSC_3011020.09_236 (doi:10.34973/37n0-yc51), accepting its data-use agreement;\n"
    "  2. in your repository profile, note your data-access user name and set a data-access (WebDAV) password;\n"
    "  3. export {user_env}=<that user name> {password_env}=<that password> and run the download again.\n"
    "Credentials are only read from these environment variables (never prompted for, never logged).")


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
    "libribrain2025": download_libribrain2025,
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
