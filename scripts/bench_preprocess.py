"""Helpers of ``scripts.bench``: a KIT-like 208-channel FIF recording on disk, and one preprocessing run.

``python -m scripts.bench_preprocess --side {bm2,mne} --fif FILE --out DIR [--highpass HZ]`` turns the FIF
file into a float32 array at ``--sample-rate`` Hz and prints one JSON line with the elapsed time and the
peak memory of the process. It is run in a fresh subprocess for each side so that the peak resident set
size (``VmHWM``, else ``ru_maxrss``) of one side does not pollute the other.

* ``bm2``: :func:`bm2.preprocessing.preprocess` on a :class:`FifRecording` opened with ``preload=False``
  (chunks of channels are read from the file, filtered, resampled and written into the cache).
* ``mne``: ``read_raw_fif(preload=True)``, ``Raw.filter(highpass, None)``, ``Raw.resample(sample_rate)``,
  then the array is saved as ``.npy`` (the same output as bm2's cache entry).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from bm2.studies.base import Recording

VOCABULARY = 600  # distinct words of the benchmark's events


def channel_names(n_channels: int) -> list[str]:
    """KIT-style channel names (``MEG 001`` ...)."""
    return [f"MEG {i + 1:03d}" for i in range(n_channels)]


def grid_positions(n_channels: int) -> np.ndarray:
    """Positions of ``n_channels`` sensors on a disc (a sunflower spiral), in [0, 1]^2, float32."""
    i = np.arange(n_channels) + 0.5
    radius = np.sqrt(i / n_channels)
    angle = np.pi * (3 - np.sqrt(5)) * i
    pos = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    pos = pos - pos.min(axis=0)
    return (pos / np.maximum(pos.max(axis=0), 1e-12)).astype(np.float32)


def write_fif(path: str | Path, n_channels: int = 208, sfreq: float = 1000.0, seconds: float = 600.0,
              seed: int = 0) -> Path:
    """Write a magnetometer recording (noise plus a slow drift, ~1e-12 T) as a FIF file; returns its path."""
    import mne

    path = Path(path)
    rng = np.random.default_rng(seed)
    n_times = int(round(seconds * sfreq))
    data = np.empty((n_channels, n_times), dtype=np.float64)
    t = np.arange(n_times) / sfreq
    drift = np.sin(2 * np.pi * 0.02 * t)  # a slow drift that the high-pass removes
    for start in range(0, n_channels, 16):
        stop = min(start + 16, n_channels)
        noise = rng.standard_normal((stop - start, n_times), dtype=np.float32)
        data[start:stop] = (noise + 3 * drift) * 1e-12
    info = mne.create_info(channel_names(n_channels), sfreq, "mag")
    raw = mne.io.RawArray(data, info, verbose="error")
    del data
    path.parent.mkdir(parents=True, exist_ok=True)
    raw.save(path, overwrite=True, verbose="error")
    return path


def write_wav(path: str | Path, seconds: float = 3.0, sample_rate: int = 16000, seed: int = 0) -> Path:
    """A short noisy chirp as a wav file (the sound of every block of the benchmark's events)."""
    import soundfile

    path = Path(path)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    wav += 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav.astype(np.float32), sample_rate)
    return path


def make_events(seconds: float, wav: str | Path, block_s: float = 30.0, sound_s: float = 3.0,
                word_s: float = 0.4) -> pd.DataFrame:
    """Blocks of ``block_s`` covering the recording, each with a sound at its start and words every ``word_s``."""
    rows: list[dict[str, tp.Any]] = []
    n_blocks = int(seconds // block_s)
    word = 0
    for b in range(n_blocks):
        onset = b * block_s
        rows.append(dict(kind="block", onset=onset, duration=block_s, uid=f"benchmark block {b}"))
        rows.append(dict(kind="sound", onset=onset, duration=sound_s, filepath=str(wav), offset=0.0))
        for w, t in enumerate(np.arange(onset + 0.6, onset + block_s - 2.6, word_s)):
            rows.append(dict(kind="word", onset=float(t), duration=word_s * 0.8, text=f"w{word % VOCABULARY}",
                             sentence_id=f"s{b}", word_index=w))
            word += 1
    return pd.DataFrame(rows)


class FifRecording(Recording):
    """A recording read lazily from a FIF file (``preload=False``), with synthetic events and positions."""

    def __init__(self, fif: str | Path, events: pd.DataFrame | None = None) -> None:
        fif = Path(fif).resolve()
        stat = fif.stat()
        super().__init__("bench", "01", identity={"file": str(fif), "size": stat.st_size,
                                                  "mtime_ns": stat.st_mtime_ns})
        self.fif = fif
        self._table = events

    def _load_raw(self) -> tp.Any:
        import mne

        return mne.io.read_raw_fif(self.fif, preload=False, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        if self._table is None:
            raise ValueError("FifRecording built without events")
        return self._table

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        pos = grid_positions(len(self.raw().ch_names))
        index = {n: i for i, n in enumerate(self.raw().ch_names)}
        return pos[[index[c] for c in ch_names]]


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """Peak resident set size of this process (MiB).

    ``VmHWM`` of ``/proc/self/status`` where available: unlike ``ru_maxrss``, it belongs to the process's own
    address space, whereas ``ru_maxrss`` starts at the parent's peak when the parent spawned us with vfork.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 2**10


def run_side(side: str, fif: Path, out: Path, highpass: float | None, sample_rate: float,
             chunk_channels: int) -> dict[str, tp.Any]:
    """Preprocess ``fif`` with ``side`` into ``out``; elapsed seconds and memory (MiB)."""
    import mne

    from bm2.cache import Cache
    from bm2.preprocessing import PreprocessParams, preprocess

    mne.set_log_level("ERROR")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    base_rss = _rss_mb()  # after imports: both sides import the same modules
    start = time.perf_counter()
    if side == "bm2":
        params = PreprocessParams(sample_rate=sample_rate, highpass=highpass, chunk_channels=chunk_channels)
        entry = preprocess(FifRecording(fif), Cache(out), params)
        shape = list(entry["brain"].shape)
    elif side == "mne":
        raw = mne.io.read_raw_fif(fif, preload=True)
        if highpass:
            raw.filter(highpass, None)
        raw.resample(sample_rate)
        data = raw.get_data().astype(np.float32)
        np.save(out / "brain.npy", data)
        shape = list(data.shape)
    else:
        raise ValueError(f"unknown side {side!r}: use bm2 or mne")
    elapsed = time.perf_counter() - start
    return {"side": side, "seconds": elapsed, "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_rss,
            "shape": shape}


def main(argv: list[str] | None = None) -> None:
    """Run one side and print its JSON result on the last line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", required=True, choices=["bm2", "mne"])
    parser.add_argument("--fif", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--highpass", type=float, default=None)
    parser.add_argument("--sample-rate", type=float, default=120.0)
    parser.add_argument("--chunk-channels", type=int, default=32)
    args = parser.parse_args(argv)
    result = run_side(args.side, args.fif, args.out, args.highpass, args.sample_rate, args.chunk_channels)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
