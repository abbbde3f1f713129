"""Hugging Face hub downloads: LibriBrain 2025 (``pnpl/LibriBrain``) and its grouped files.

Only the files the selected split needs are fetched: for each run of the pinned split
(:data:`bm2.studies.libribrain2025.SPLIT_2025`, books filter applied) the serialised h5 and the events TSV, at the
paths of the hub repository (``{book}/derivatives/serialised/..._meg.h5``,
``{book}/derivatives/events/..._events.tsv``),
and optionally the grouped files ``data/grouped_{K}/{train,validation,test}_grouped.h5`` of
``wordcab/libribrain-meg-preprocessed`` under ``{root}/grouped`` (:mod:`bm2.data.grouped_h5`).

* **Where from**: the repositories of ``repos`` in order (``pnpl/LibriBrain``, then the fallback
  ``pnpl/LibriBrain-Competition-2025``, as pnpl does; ANCHORS_WAVE2 §1.1): each file comes from the first that
  lists it. ``get_paths_info`` gives each file's size and, for LFS files, its sha256.
* **Resumable**: ``huggingface_hub.hf_hub_download(..., local_dir=root)`` keeps partial data in
  ``root/.cache/huggingface/download/`` and resumes it; the final name is only written once the transfer is
  complete. A file under its final name of the wrong size (copied by hand, cut short) is deleted and fetched again.
* **Verified**: size, and sha256 for LFS files (``verify: sha256``; ``size`` skips the hash), after each transfer; a
  file failing twice is deleted and reported (:class:`~bm2.download.http.ChecksumError`).
* **Locked**: ``{dest}.lock`` (filelock, as :func:`bm2.download.http.download_file`) around each file, so two jobs
  never write it at once; the second finds it complete. The study marker of :func:`bm2.download.download_study`
  then makes later calls return without network.
* **Credentials**: the token is read from the environment variable ``token_env`` (``HF_TOKEN``; none: the hub's
  own login, if any), never logged, and removed from any error message.
* **Offline**: a network failure (after ``retries``) is a :class:`~bm2.download.http.DownloadError` that says which
  files go where under the root, and the ``hf download`` command that fetches them elsewhere.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import time
import typing as tp
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from .http import NETWORK_ERRORS, ChecksumError, CredentialsError, DownloadError, file_digest, progress_enabled

logger = logging.getLogger("bm2.download")

#: the ``download.libribrain2025`` section's defaults (merged into :data:`bm2.download.DEFAULTS`)
LIBRIBRAIN_DEFAULTS: dict[str, tp.Any] = {
    "repos": ["pnpl/LibriBrain", "pnpl/LibriBrain-Competition-2025"],  # tried in order, per file
    "repo_type": "dataset",
    "revision": None,          # branch, tag or commit (None: main)
    "endpoint": None,          # hub URL (None: HF_ENDPOINT or https://huggingface.co)
    "token_env": "HF_TOKEN",   # environment variable holding an access token (optional)
    "split": "2025",           # runs of this pinned split (bm2.studies.libribrain2025.SPLITS)
    "books": None,             # e.g. [Sherlock1]; None: all
    "preproc": "bads+headpos+sss+notch+bp+ds",
    "verify": "sha256",        # sha256 (LFS files) and size | size
    "grouped": [],             # grouping levels K of the grouped files to fetch too (e.g. [100])
    "grouped_repo": "wordcab/libribrain-meg-preprocessed",
}


LIST_BATCH = 100  # paths per get_paths_info request


@dataclasses.dataclass(frozen=True)
class HubFile:
    """One file of a hub repository: its path there, its size and its sha256 (LFS files) when the hub says."""

    repo: str
    path: str
    size: int | None = None
    sha256: str | None = None


class _Offline(Exception):
    """Internal: the hub could not be reached (after the retries)."""


def libribrain_files(split: str = "2025", books: tp.Iterable[str] | None = None,
                     preproc: str = LIBRIBRAIN_DEFAULTS["preproc"]) -> list[str]:
    """Paths (relative to the study root = to the repository root) of the h5 and events TSV of every run of the
    pinned ``split`` (training, validation and test runs), keeping only ``books`` when given."""
    from ..studies.libribrain2025 import SPLITS, events_path, h5_path

    if str(split) not in SPLITS:
        raise DownloadError(f"download.libribrain2025.split={split!r}: known splits are {sorted(SPLITS)}")
    spec = SPLITS[str(split)]
    keep = None if books is None else {str(b) for b in books}
    keys = list(dict.fromkeys(tuple(k) for part in ("runs", "valid", "test") for k in spec[part]))
    root = Path(".")
    files = []
    for sub, ses, book, run in keys:
        if keep is None or book in keep:
            files += [h5_path(root, sub, ses, book, run, preproc).as_posix(),
                      events_path(root, sub, ses, book, run).as_posix()]
    if not files:
        raise DownloadError(f"download.libribrain2025.books={sorted(keep or [])} selects no run of split {split!r}; "
                            f"its books are {sorted({k[2] for k in keys})}")
    return files


def _runs_text(files: tp.Sequence[str]) -> str:
    """The runs of ``files`` per book, sessions in ranges: ``Sherlock1: ses-1..10 run-1, ses-11..12 run-2``."""
    import re

    runs: dict[str, list[tuple[int, str]]] = {}
    for name in files:
        match = re.search(r"sub-([^_]+)_ses-(\d+)_task-([^_]+)_run-([^_]+)_", Path(name).name)
        if match:
            runs.setdefault(match[3], []).append((int(match[2]), match[4]))
    lines = []
    for book, items in sorted(runs.items()):
        parts: list[list[tp.Any]] = []
        for ses, run in sorted(set(items)):
            if parts and parts[-1][2] == run and parts[-1][1] == ses - 1:
                parts[-1][1] = ses
            else:
                parts.append([ses, ses, run])
        lines.append(f"  {book}: " + ", ".join(f"ses-{a}" + (f"..{b}" if b != a else "") + f" run-{r}"
                                               for a, b, r in parts))
    return "\n".join(lines)


def offline_help(root: Path, spec: dict[str, tp.Any], missing: tp.Sequence[str], reason: str) -> str:
    """What to place where when the hub cannot be reached (the message of the offline error)."""
    preproc = spec["preproc"]
    repo = spec["repos"][0]
    lines = [f"libribrain2025: the Hugging Face hub cannot be reached ({reason}).",
             f"Place the files yourself: under {root} (the study root, paths.studies.libribrain2025), each run of "
             f"split {spec['split']!r} needs two files, laid out as in the hub repository {repo}:",
             f"  {{book}}/derivatives/serialised/sub-{{s}}_ses-{{ses}}_task-{{book}}_run-{{run}}_proc-{preproc}_meg.h5",
             "  {book}/derivatives/events/sub-{s}_ses-{ses}_task-{book}_run-{run}_events.tsv"]
    runs = [f for f in missing if f.endswith("_meg.h5") or f.endswith("_events.tsv")]
    if runs:
        lines += [f"{len(runs)} of these files are missing, for these runs (subject 0):", _runs_text(runs),
                  f"  e.g. {root / runs[0]}"]
    grouped = [f for f in missing if f.startswith("grouped/")]
    if grouped:
        lines += [f"and the grouped files of the hub repository {spec['grouped_repo']} (its data/grouped_K/ folders "
                  f"under {root / 'grouped'}):", *(f"  {root / f}" for f in grouped),
                  f"  with network: hf download {spec['grouped_repo']} --repo-type dataset "
                  f"--local-dir {root / 'grouped'} " + " ".join(f"--include '{f.split('/', 1)[1]}'" for f in grouped)]
    include = " ".join(f"--include '{p}'" for p in (f"Sherlock*/derivatives/serialised/*_proc-{preproc}_meg.h5",
                                                      "Sherlock*/derivatives/events/*_events.tsv"))
    lines += ["On a machine with network, these files (and any other run of the repository) come with",
              f"  hf download {repo} --repo-type dataset --local-dir ROOT {include}",
              "(`huggingface-cli download` with the same arguments on older huggingface_hub; set HF_TOKEN if the "
              "repository asks for a login); copy ROOT here, or point paths.studies.libribrain2025 to it. Then run "
              "`python -m scripts.download libribrain2025` again to check the files, or train directly."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- hub access

def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, *NETWORK_ERRORS]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
        errors += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    for module in ("httpx2", "httpx"):  # the HTTP client of huggingface_hub (httpx2 from 2.x, httpx before)
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _clean(exc: BaseException, token: str | None) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return text.replace(token, "***") if token else text


def _call(func: tp.Callable[[], tp.Any], what: str, opts: dict[str, tp.Any], token: str | None) -> tp.Any:
    """``func()``, again after network errors or transient statuses (``retries`` more times, exponential backoff);
    :class:`_Offline` when the hub stays unreachable. Other errors go through."""
    network = _network_errors()
    retries = int(opts.get("retries", 3))
    for attempt in range(retries + 1):
        try:
            return func()
        except Exception as exc:  # noqa: BLE001 - sorted below
            status = _status(exc)
            transient = status in (408, 425, 429, 500, 502, 503, 504)
            if not transient and (status is not None or not isinstance(exc, network)):
                raise
            if attempt >= retries:
                raise _Offline(_clean(exc, token)) from None
            wait = min(float(opts.get("backoff", 2.0)) * 2 ** attempt, 60.0)
            logger.info("%s: %s; retrying in %.1fs (%d/%d)", what, _clean(exc, token), wait, attempt + 1, retries)
            time.sleep(wait)
    raise AssertionError("unreachable")


def list_hub_files(repos: tp.Sequence[str], paths: tp.Sequence[str], spec: dict[str, tp.Any],
                   opts: dict[str, tp.Any], token: str | None) -> dict[str, HubFile]:
    """Size and sha256 of each of ``paths`` in the first repository of ``repos`` that has it (paths found in none
    are absent from the result). Repositories that do not exist or refuse access are skipped with a warning
    (:class:`CredentialsError` if every one refused access)."""
    import huggingface_hub

    api = huggingface_hub.HfApi(endpoint=spec.get("endpoint"), token=token or None)
    found: dict[str, HubFile] = {}
    refused: list[str] = []
    for repo in repos:
        todo = [p for p in paths if p not in found]
        if not todo:
            break
        def listing(repo: str = repo, todo: list[str] = todo) -> list[tp.Any]:
            # in batches: one request per 100 paths keeps each request small whatever the hub's limits
            return [info for start in range(0, len(todo), LIST_BATCH)
                    for info in api.get_paths_info(repo, todo[start:start + LIST_BATCH],
                                                   repo_type=spec.get("repo_type", "dataset"),
                                                   revision=spec.get("revision"))]

        try:
            infos = _call(listing, f"listing {repo}", opts, token)
        except _Offline:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing / gated repository: try the next one
            status = _status(exc)
            if status in (401, 403) or type(exc).__name__ == "GatedRepoError":
                refused.append(repo)
            elif status not in (404,) and type(exc).__name__ not in ("RepositoryNotFoundError",
                                                                      "RevisionNotFoundError"):
                raise DownloadError(f"listing {repo} on the hub failed ({_clean(exc, token)})") from None
            logger.warning("hub repository %s: %s; trying the next one", repo, _clean(exc, token))
            continue
        for info in infos:
            if not hasattr(info, "size"):  # a folder
                continue
            lfs = getattr(info, "lfs", None)
            sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            found.setdefault(info.path, HubFile(repo, info.path, int(info.size), sha))
    if not found and refused and len(refused) == len(repos):
        raise CredentialsError(f"the hub refused access to {list(repos)}: accept the dataset's terms on its page while "
                               f"logged in, create an access token and export {spec.get('token_env', 'HF_TOKEN')}=<it>")
    return found


def _problem(path: Path, remote: HubFile, verify: str) -> str:
    """Why ``path`` is not ``remote`` ('' when it is)."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"size: expected {remote.size} bytes, got {size}"
    if verify == "sha256" and remote.sha256:
        digest = file_digest(path, "sha256")
        if digest != remote.sha256.lower():
            return f"sha256: expected {remote.sha256}, got {digest}"
    return ""


def _complete(dest: Path, remote: HubFile) -> bool:
    # A file under its final name was verified after its transfer (size at least, as download_file does).
    return dest.is_file() and (remote.size is None or dest.stat().st_size == remote.size)


class _Silent(tqdm):  # type: ignore[misc]
    def __init__(self, *args: tp.Any, **kwargs: tp.Any) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def fetch_hub_file(remote: HubFile, local_dir: Path, spec: dict[str, tp.Any], opts: dict[str, tp.Any],
                   token: str | None) -> Path:
    """``remote`` into ``local_dir / remote.path`` (resumed by the hub, verified, under ``{dest}.lock``)."""
    import huggingface_hub

    dest = local_dir / remote.path
    if _complete(dest, remote):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.with_name(dest.name + ".lock"))):
        if _complete(dest, remote):  # another job finished it while we waited
            return dest
        if dest.exists():  # wrong size: never kept as complete (the hub would trust its local metadata)
            logger.warning("%s: %d bytes instead of %s: incomplete, downloading it again", dest,
                           dest.stat().st_size, remote.size)
            dest.unlink()
        problem = ""
        for fetch in range(2):
            kwargs: dict[str, tp.Any] = {"repo_type": spec.get("repo_type", "dataset"),
                                         "revision": spec.get("revision"), "local_dir": str(local_dir),
                                         "token": token or None, "endpoint": spec.get("endpoint")}
            if not progress_enabled(opts.get("progress", True)):
                kwargs["tqdm_class"] = _Silent

            def transfer(kwargs: dict[str, tp.Any] = kwargs) -> str:
                return huggingface_hub.hf_hub_download(remote.repo, remote.path, **kwargs)

            got = Path(_call(transfer, f"{remote.repo}/{remote.path}", opts, token))
            if got.resolve() != dest.resolve():
                raise DownloadError(f"{remote.repo}/{remote.path} landed at {got}, not at {dest}")
            problem = _problem(dest, remote, str(spec.get("verify", "sha256")))
            if not problem:
                return dest
            dest.unlink()
            if fetch == 0:
                logger.warning("%s/%s failed verification (%s): deleted, downloading again", remote.repo,
                               remote.path, problem)
        raise ChecksumError(f"{remote.repo}/{remote.path}: the download failed verification twice ({problem}); the "
                            "file was deleted. Try again later, or check the revision in the `download:` config.")


def download_libribrain2025(root: Path, spec: dict[str, tp.Any], opts: dict[str, tp.Any]) -> None:
    """The LibriBrain 2025 downloader of :func:`bm2.download.download_study` (see the module docstring)."""
    unknown = sorted(set(spec) - set(LIBRIBRAIN_DEFAULTS))
    if unknown:
        raise DownloadError(f"download.libribrain2025: unknown key(s) {unknown}; valid keys: "
                            f"{sorted(LIBRIBRAIN_DEFAULTS)}")
    spec = {**LIBRIBRAIN_DEFAULTS, **spec}
    if spec["verify"] not in ("sha256", "size"):
        raise DownloadError(f"download.libribrain2025.verify={spec['verify']!r}: use sha256 or size")
    token = os.environ.get(str(spec["token_env"])) if spec.get("token_env") else None
    wanted = libribrain_files(spec["split"], spec.get("books"), spec["preproc"])
    from ..data.grouped_h5 import hub_files

    grouped = [p for k in spec.get("grouped") or [] for p in hub_files(int(k))]
    missing = [p for p in wanted if not (root / p).is_file()] + [f"grouped/{p}" for p in grouped
                                                                 if not (root / "grouped" / p).is_file()]
    try:
        listed = list_hub_files(spec["repos"], wanted, spec, opts, token)
        listed_grouped = list_hub_files([spec["grouped_repo"]], grouped, spec, opts, token) if grouped else {}
    except _Offline as exc:
        raise DownloadError(offline_help(root, spec, missing, str(exc))) from None
    absent = [p for p in wanted if p not in listed] + [p for p in grouped if p not in listed_grouped]
    if absent and len(absent) == len(wanted) + len(grouped):
        raise DownloadError(f"none of the {len(absent)} files of split {spec['split']!r} is in {spec['repos']} "
                            f"(e.g. {absent[0]}); check download.libribrain2025.repos / revision / preproc")
    if absent:
        logger.warning("libribrain2025: %d file(s) of split %r are in none of %s and are not downloaded: %s",
                       len(absent), spec["split"], spec["repos"] + ([spec["grouped_repo"]] if grouped else []),
                       absent[:10])
    jobs = [(f, root) for f in listed.values()] + [(f, root / "grouped") for f in listed_grouped.values()]
    todo = [(f, where) for f, where in jobs if not _complete(where / f.path, f)]
    logger.info("libribrain2025: %d of %d files to fetch into %s", len(todo), len(jobs), root)
    failures: list[str] = []
    offline: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, int(opts.get("workers") or 1))) as pool:
        futures = {pool.submit(fetch_hub_file, f, where, spec, opts, token): f for f, where in todo}
        for future in as_completed(futures):
            remote = futures[future]
            try:
                future.result()
            except _Offline as exc:
                offline.append(str(exc))
            except DownloadError as exc:
                failures.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - reported with the others, token removed
                hint = (f" (access refused: accept the dataset's terms on the hub and export "
                        f"{spec['token_env']}=<an access token>)" if _status(exc) in (401, 403) else "")
                failures.append(f"{remote.repo}/{remote.path}: {_clean(exc, token)}{hint}")
    if offline:
        still = [p for p in missing if not ((root / p).is_file())]
        raise DownloadError(offline_help(root, spec, still, offline[0]))
    if failures:
        listed_text = "\n  ".join(failures[:5]) + (f"\n  ... and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise DownloadError(f"{len(failures)} of {len(todo)} files could not be downloaded into {root}:\n  "
                            f"{listed_text}\nRun the same command again: complete files are kept and partial ones "
                            "resumed.")
