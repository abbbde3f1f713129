"""Tests for bm2.cache: hits, keys, atomicity, locking across processes, damage recovery."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from bm2.cache import STALE_SECONDS, Cache, CacheEntry, EntryWriter

KEY = {"recording": "sub-01/ses-1", "sample_rate": 120.0, "bands": [0.1, 40]}


def make_builder(calls: list, n: int = 10):
    """A builder writing two arrays and some meta, recording its calls."""
    def build(writer: EntryWriter) -> None:
        calls.append(1)
        writer.save("x", np.arange(n, dtype=np.float32))
        writer.save("y", np.eye(3))
        writer.meta["n"] = n
    return build


def test_build_then_hit(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []
    entry = cache.get("meg", KEY, "1", make_builder(calls))
    assert isinstance(entry, CacheEntry) and calls == [1]
    again = cache.get("meg", dict(reversed(list(KEY.items()))), "1", make_builder(calls))
    assert calls == [1]  # hit, even with another key order
    assert again.path == entry.path == cache.path_for("meg", KEY, "1")
    np.testing.assert_array_equal(again["x"], np.arange(10, dtype=np.float32))
    np.testing.assert_array_equal(again.arrays["y"], np.eye(3))
    assert again.meta == {"n": 10} and "x" in again
    for array in again.arrays.values():
        assert isinstance(array, np.memmap) and not array.flags.writeable
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["step"] == "meg" and manifest["version"] == "1"
    assert manifest["arrays"]["x"]["shape"] == [10]
    assert manifest["arrays"]["x"]["nbytes"] == 40


def test_key_and_version_change(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []
    a = cache.get("meg", KEY, "1", make_builder(calls))
    b = cache.get("meg", {**KEY, "sample_rate": 100.0}, "1", make_builder(calls))
    c = cache.get("meg", KEY, "2", make_builder(calls))
    d = cache.get("eeg", KEY, "1", make_builder(calls))
    assert len(calls) == 4 and len({a.path, b.path, c.path, d.path}) == 4


def _slow_build_worker(root: str, counter: str, barrier, queue) -> None:
    """Child process: build the same key as its sibling, with a slow builder."""
    def build(writer: EntryWriter) -> None:
        with open(counter, "a") as fh:
            fh.write("x")
        time.sleep(0.5)
        writer.save("x", np.arange(100))
    barrier.wait()
    entry = Cache(root).get("slow", KEY, "1", build)
    queue.put((str(entry.path), int(entry["x"].sum())))


def test_two_processes_build_once(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    counter = tmp_path / "counter.txt"
    procs = [ctx.Process(target=_slow_build_worker, args=(str(tmp_path / "cache"), str(counter),
                                                          barrier, queue)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert counter.read_text() == "x"  # the builder ran exactly once
    assert results[0] == results[1] == (str(Cache(tmp_path / "cache").path_for("slow", KEY, "1")),
                                        sum(range(100)))
    assert not list((tmp_path / "cache" / "slow").glob(".tmp-*"))


def _damage_truncate(path: Path) -> None:
    npy = path / "x.npy"
    with open(npy, "r+b") as fh:
        fh.truncate(npy.stat().st_size - 8)


def _damage_header(path: Path) -> None:
    with open(path / "x.npy", "r+b") as fh:
        fh.write(b"garbage!")


def _damage_shape(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["arrays"]["x"]["shape"] = [5, 2]
    (path / "manifest.json").write_text(json.dumps(manifest))


def _damage_key(path: Path) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["key"]["recording"] = "other"
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, reason", [
    (_damage_truncate, "expected"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable manifest"),
    (lambda p: (p / "manifest.json").unlink(), "missing manifest"),
    (lambda p: (p / "x.npy").unlink(), "missing array file"),
    (_damage_header, "unreadable x.npy"),
    (_damage_shape, "shape/dtype"),
    (_damage_key, "mismatch"),
])
def test_damage_detected_and_rebuilt(tmp_path: Path, caplog, damage, reason: str) -> None:
    cache, calls = Cache(tmp_path), []
    entry = cache.get("meg", KEY, "1", make_builder(calls))
    damage(entry.path)
    del entry
    with caplog.at_level("WARNING", logger="bm2.cache"):
        rebuilt = cache.get("meg", KEY, "1", make_builder(calls))
    assert len(calls) == 2
    np.testing.assert_array_equal(rebuilt["x"], np.arange(10, dtype=np.float32))
    assert any(reason in rec.getMessage() and rebuilt.path.name in rec.getMessage()
               for rec in caplog.records)
    cache.get("meg", KEY, "1", make_builder(calls))
    assert len(calls) == 2  # and the rebuilt entry is valid
    assert [p.name for p in (tmp_path / "meg").iterdir() if p.name.startswith(".")] == []


def test_builder_exception_leaves_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def build(writer: EntryWriter) -> None:
        writer.save("x", np.zeros(3))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cache.get("meg", KEY, "1", build)
    assert not cache.path_for("meg", KEY, "1").exists()
    assert not list((tmp_path / "meg").glob(".tmp-*"))


def test_streaming_create(tmp_path: Path) -> None:
    expected = np.random.default_rng(0).standard_normal((1000, 4)).astype(np.float32)

    def build(writer: EntryWriter) -> None:
        out = writer.create("data", (1000, 4), np.float32)
        assert isinstance(out, np.memmap) and out.flags.writeable
        with writer.progress(10, "chunks") as bar:
            for start in range(0, 1000, 100):
                out[start:start + 100] = expected[start:start + 100]
                bar.update(1)
        writer.create("empty", (0, 3), "int16")

    entry = Cache(tmp_path).get("feat", KEY, "1", build, desc="features")
    np.testing.assert_array_equal(entry["data"], expected)
    assert entry["empty"].shape == (0, 3) and entry["empty"].dtype == np.int16


def test_lock_timeout(tmp_path: Path) -> None:
    cache = Cache(tmp_path, lock_timeout=0.2)
    lock_file = cache.lock_path("meg", KEY, "1")
    lock_file.parent.mkdir(parents=True)
    with FileLock(str(lock_file)), pytest.raises(TimeoutError, match=str(lock_file)):
        cache.get("meg", KEY, "1", make_builder([]))


def test_invalid_names(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    for name in ["../x", "a b", "1x", ""]:
        with pytest.raises(ValueError, match="Invalid array name"):
            cache.get("meg", {"name": name}, "1", lambda w, n=name: w.save(n, np.zeros(1)))
    with pytest.raises(ValueError, match="Invalid step"):
        cache.get("../meg", KEY, "1", make_builder([]))
    with pytest.raises(TypeError, match="JSON"):
        cache.get("meg", KEY, "1", lambda w: w.meta.update(bad=object()))
    assert not list((tmp_path / "meg").glob(".tmp-*"))


def test_stale_tmp_cleaned(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    stale = tmp_path / "meg" / ".tmp-0123456789abcdef-999-deadbeef"
    fresh = tmp_path / "meg" / ".tmp-fedcba9876543210-999-deadbeef"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
    old = time.time() - 2 * STALE_SECONDS
    os.utime(stale, (old, old))
    cache.get("meg", KEY, "1", make_builder([]))
    assert not stale.exists() and fresh.exists()  # a recent one may belong to a live builder


def test_pickle_and_clear(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.root == cache.root
    cache.get("meg", KEY, "1", make_builder(calls))
    clone.get("eeg", KEY, "1", make_builder(calls))
    assert clone.get("meg", KEY, "1", make_builder(calls)).meta == {"n": 10} and len(calls) == 2
    cache.clear("meg")
    assert not (tmp_path / "meg").exists() and (tmp_path / "eeg").exists()
    cache.clear()
    cache.get("eeg", KEY, "1", make_builder(calls))
    assert len(calls) == 3


def test_reads_and_builds_are_counted(tmp_path):
    from bm2.cache import Cache

    cache = Cache(tmp_path)
    build = lambda w: w.save("x", np.zeros(3))  # noqa: E731
    cache.get("step", {"a": 1}, "1", build)
    cache.get("step", {"a": 1}, "1", build)  # built by this process: not counted as read
    cache.get("step", {"a": 2}, "1", build)
    assert (cache.reads, cache.builds) == (0, 2)
    later = Cache(tmp_path)  # another run: every lookup of the earlier entries is a read
    for key in ({"a": 1}, {"a": 2}, {"a": 1}):
        later.get("step", key, "1", build)
    later.get("step", {"a": 3}, "1", build)
    later.get("step", {"a": 3}, "1", build)
    assert (later.reads, later.builds) == (3, 1)
