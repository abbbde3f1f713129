"""Keyed, atomic, locked, memory-mapped cache for preprocessed recordings and features.

An entry lives in ``root/<step>/<hash>/`` (one ``.npy`` per array + ``manifest.json``), where
``hash`` covers every key item and the version of the step's code. Entries are built in a
temporary sibling folder and renamed into place, so a reader never sees a half-written entry;
builders of the same key are serialised by a file lock; damaged entries are detected cheaply
(file sizes + npy headers), removed and rebuilt, so nobody ever has to wipe the cache by hand.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
import typing as tp
import uuid
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from tqdm import tqdm

from .utils.io import fsync_dir
from . import __version__
from .utils.hashing import canonical, content_hash

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STALE_SECONDS = 3600.0  # temporary folders older than this come from killed builders
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STEP_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class DamagedEntry(Exception):
    """Raised internally when an entry on disk fails validation."""


class EntryWriter:
    """Handed to builders: writes arrays into the temporary folder of an entry being built."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, tp.Any] = {}
        self._names: list[str] = []
        self._memmaps: dict[str, np.memmap] = {}

    def _path(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"Invalid array name {name!r}: must be a simple identifier.")
        if name in self._names:
            raise ValueError(f"Array {name!r} was already written in this entry.")
        self._names.append(name)
        return self.folder / f"{name}.npy"

    @staticmethod
    def _check_dtype(dtype: np.dtype) -> None:
        if dtype.hasobject:  # object arrays need pickle and cannot be memory-mapped
            raise TypeError("Object dtypes cannot be cached.")

    def create(self, name: str, shape: tp.Sequence[int] | int, dtype: tp.Any) -> np.memmap:
        """Create a writable memory-mapped array, to be filled chunk by chunk by the builder."""
        dtype = np.dtype(dtype)
        self._check_dtype(dtype)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        array = np.lib.format.open_memmap(self._path(name), mode="w+", dtype=dtype, shape=shape)
        self._memmaps[name] = array
        return array

    def save(self, name: str, array: tp.Any) -> None:
        """Save an in-memory array under ``name``."""
        array = np.asanyarray(array)
        self._check_dtype(array.dtype)
        path = self._path(name)
        with open(path, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())

    def progress(self, total: int | None = None, desc: str | None = None) -> tqdm:
        """A tqdm progress bar, disabled when stderr is not a tty or ``BM2_NO_PROGRESS=1``."""
        disable = os.environ.get("BM2_NO_PROGRESS") == "1" or not sys.stderr.isatty()
        return tqdm(total=total, desc=desc, disable=disable, leave=False)

    def _finalize(self) -> dict[str, dict[str, tp.Any]]:
        """Flush everything to disk and describe the arrays for the manifest."""
        for array in self._memmaps.values():
            array.flush()  # msync the mapped pages before we fsync/rename
        self._memmaps.clear()
        infos = {}
        for name in self._names:
            path = self.folder / f"{name}.npy"
            with open(path, "rb+") as fh:
                os.fsync(fh.fileno())
            array = np.load(path, mmap_mode="r")
            infos[name] = {
                "file": path.name,
                "shape": list(array.shape),
                "dtype": np.lib.format.dtype_to_descr(array.dtype),
                "nbytes": int(array.nbytes),
                "size": path.stat().st_size,  # expected file size, to detect truncation cheaply
            }
            del array
        return infos


class CacheEntry:
    """A valid cache entry: ``.path``, ``.meta``, ``.arrays`` (read-only memmaps), ``entry[name]``."""

    def __init__(self, path: Path, manifest: dict[str, tp.Any], arrays: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.meta: dict[str, tp.Any] = manifest.get("meta", {})
        self.arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self.arrays

    def __repr__(self) -> str:
        return f"CacheEntry({str(self.path)!r}, arrays={sorted(self.arrays)})"


class Cache:
    """Keyed, atomic, locked, memory-mapped cache rooted at ``root``.

    Parameters
    ----------
    root : folder holding one sub-folder per step.
    lock_timeout : seconds to wait for another builder of the same key (None: forever).
    """

    def __init__(self, root: str | Path, lock_timeout: float | None = None) -> None:
        # Only plain, picklable state: the cache is shipped to DataLoader workers.
        self.root = Path(root)
        self.lock_timeout = lock_timeout
        # for progress messages: get() calls answered by an entry this process did not build (an earlier run's or
        # another process's), and the entries this process built
        self.reads = 0
        self._built: set[Path] = set()

    def path_for(self, step: str, key: dict, version: str) -> Path:
        """Folder of the entry for (step, key, version)."""
        if not isinstance(step, str) or not _STEP_RE.match(step):
            raise ValueError(f"Invalid step name {step!r}.")
        return self.root / step / content_hash({"key": key, "version": version})

    def lock_path(self, step: str, key: dict, version: str) -> Path:
        """Lock file serialising the builders of (step, key, version)."""
        folder = self.path_for(step, key, version)
        return folder.parent / f"{folder.name}.lock"

    @property
    def builds(self) -> int:
        """Entries that this process built."""
        return len(self._built)

    def _count_read(self, folder: Path) -> None:
        if folder not in self._built:  # not one it built itself a moment ago
            self.reads += 1

    def get(self, step: str, key: dict, version: str,
            build: tp.Callable[[EntryWriter], None], desc: str | None = None) -> CacheEntry:
        """Return the entry for (step, key, version), building it with ``build`` if needed."""
        folder = self.path_for(step, key, version)
        identity = {"step": step, "key": key, "version": version}
        # Fast path without the lock: complete entries only ever appear through an atomic rename.
        if folder.exists():
            try:
                entry = self._open(folder, identity)
                self._count_read(folder)
                return entry
            except DamagedEntry:
                pass  # maybe being replaced right now; decide under the lock
        lock_file = folder.parent / f"{folder.name}.lock"
        folder.parent.mkdir(parents=True, exist_ok=True)
        timeout = -1 if self.lock_timeout is None else self.lock_timeout
        lock = FileLock(str(lock_file), timeout=timeout)
        try:
            lock.acquire()
        except Timeout as exc:
            raise TimeoutError(f"Timed out after {self.lock_timeout}s waiting for cache lock "
                               f"{lock_file} (another process is building this entry?)") from exc
        try:
            if folder.exists():
                try:
                    entry = self._open(folder, identity)
                    self._count_read(folder)
                    return entry
                except DamagedEntry as exc:
                    logger.warning("Damaged cache entry %s (%s): removing and rebuilding.", folder, exc)
                    self._remove(folder)
            self._clean_stale(folder)
            entry = self._build(folder, identity, build, desc or step)
            self._built.add(folder)
            return entry
        finally:
            lock.release()

    def _build(self, folder: Path, identity: dict, build: tp.Callable[[EntryWriter], None],
               desc: str) -> CacheEntry:
        tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        logger.debug("building %s ...", desc)
        start = time.time()
        try:
            writer = EntryWriter(tmp)
            build(writer)
            try:  # key items that are not JSON get their repr (as in the hash); meta must be JSON
                json.dumps(writer.meta)
            except TypeError as exc:
                raise TypeError(f"writer.meta must be JSON-serialisable: {exc}") from exc
            manifest = {**identity, "created": time.time(), "bm2_version": __version__,
                        "meta": writer.meta, "arrays": writer._finalize()}
            # The manifest is written last: its presence marks the folder content as complete.
            with open(tmp / MANIFEST, "w") as fh:
                json.dump(manifest, fh, default=repr, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(tmp)
            os.rename(tmp, folder)
            fsync_dir(folder.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.debug("built %s in %.1fs -> %s", desc, time.time() - start, folder)
        return self._open(folder, identity)

    @staticmethod
    def _open(folder: Path, identity: dict) -> CacheEntry:
        """Validate an entry cheaply (manifest, sizes, npy headers) and memory-map its arrays."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise DamagedEntry("missing manifest") from None
        except (OSError, ValueError) as exc:
            raise DamagedEntry(f"unreadable manifest: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("arrays"), dict):
            raise DamagedEntry("malformed manifest")
        stored = {name: manifest.get(name) for name in identity}
        if canonical(stored) != canonical(json.loads(canonical(identity))):
            raise DamagedEntry("manifest step/key/version mismatch")
        arrays = {}
        for name, info in manifest["arrays"].items():
            try:
                path = folder / info["file"]
                expected, shape, descr = info["size"], info["shape"], info["dtype"]
            except (KeyError, TypeError):
                raise DamagedEntry(f"malformed manifest record for {name!r}") from None
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise DamagedEntry(f"missing array file {path.name}") from None
            if size != expected:
                raise DamagedEntry(f"{path.name} has {size} bytes, expected {expected}")
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
            except (OSError, ValueError, EOFError) as exc:  # bad magic/header, unmappable file
                raise DamagedEntry(f"unreadable {path.name}: {exc}") from None
            if list(array.shape) != shape or (
                    canonical(np.lib.format.dtype_to_descr(array.dtype)) != canonical(descr)):
                raise DamagedEntry(f"{path.name} shape/dtype differ from the manifest")
            arrays[name] = array
        return CacheEntry(folder, manifest, arrays)

    @staticmethod
    def _remove(folder: Path) -> None:
        # Rename first so that the entry disappears atomically, then delete at leisure.
        trash = folder.parent / f".del-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, trash)
        except OSError:
            trash = folder
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _clean_stale(folder: Path) -> None:
        """Remove temporary folders left by killed builders (called under ``folder``'s lock)."""
        now = time.time()
        for child in folder.parent.iterdir():
            if not child.name.startswith((".tmp-", ".del-")):
                continue
            # We hold this key's lock, so its temporary folders are certainly dead;
            # other keys' ones are only removed once clearly stale.
            mine = child.name.startswith((f".tmp-{folder.name}-", f".del-{folder.name}-"))
            try:
                if mine or now - child.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(child, ignore_errors=True)
            except FileNotFoundError:
                pass

    def clear(self, step: str | None = None) -> None:
        """Delete all entries of ``step`` (or the whole cache); do not call while others build."""
        target = self.root if step is None else self.root / step
        shutil.rmtree(target, ignore_errors=True)
