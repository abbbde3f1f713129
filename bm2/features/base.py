"""The feature API: dense targets on a recording's timeline, derived from its events.

Two families share one interface, :meth:`Feature.timeline`, which returns a ``(dimension, n_times)``
array at the model rate for a recording:

* :class:`SoundFeature`: computed once per **sound file** (mel spectrum now, wav2vec 2.0 next), cached,
  then placed at each sound event's onset and interpolated to the model rate;
* :class:`EventFeature`: computed from the events table alone (word onsets, phonemes ...).

Every timeline is cached with the keyed cache, keyed by the recording's uid, the rate, the length, the
feature's parameters and its code version.
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import Cache, EntryWriter
from ..studies.base import Recording
from ..utils.fingerprint import file_fingerprint


class FeatureError(ValueError):
    """A feature cannot be computed (missing audio file, bad parameters ...)."""


class Feature:
    """Base class: subclasses set ``name`` and ``version`` and implement :meth:`compute_timeline`."""

    name: tp.ClassVar[str]
    version: tp.ClassVar[str] = "1"

    @property
    def dimension(self) -> int:
        """Number of output channels."""
        raise NotImplementedError

    def params(self) -> dict[str, tp.Any]:
        """Every parameter that changes the output (enters the cache key)."""
        return {}

    def compute_timeline(self, recording: Recording, sample_rate: float, n_times: int,
                         cache: Cache) -> np.ndarray:
        """The feature for the whole recording, shape ``(dimension, n_times)`` float32."""
        raise NotImplementedError

    def timeline(self, recording: Recording, sample_rate: float, n_times: int, cache: Cache) -> np.ndarray:
        """Cached :meth:`compute_timeline` (a read-only memory map)."""
        key = {"recording": recording.uid, "sample_rate": sample_rate, "n_times": n_times,
               "feature": self.name, "params": self.params()}

        def build(writer: EntryWriter) -> None:
            value = self.compute_timeline(recording, sample_rate, n_times, cache)
            if value.shape != (self.dimension, n_times):
                raise FeatureError(f"feature {self.name} returned shape {value.shape}, "
                                   f"expected {(self.dimension, n_times)}")
            writer.save("value", value.astype(np.float32))

        entry = cache.get(f"feature-{self.name}", key, self.version, build, desc=f"{self.name} {recording!r}")
        return entry["value"]


class SoundFeature(Feature):
    """A feature of the audio: computed per sound file, then placed on the recording timeline.

    A **contextual** feature (``contextual = True``, e.g. a transformer over the waveform) sees audio far from
    each frame. So that no frame inside a block is influenced by audio of another block (which may belong to
    another split), such a feature is computed per *segment*: each sound event is cut at every block boundary
    that falls inside it, and each piece of audio is processed on its own (cached per file and segment bounds).
    Non-contextual features are computed once per whole file, as before.
    """

    contextual: tp.ClassVar[bool] = False

    def compute_sound(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        """Features of a mono waveform: ``(dimension, frames)`` and the frame rate in Hz."""
        raise NotImplementedError

    def sound_features(self, path: str | Path, cache: Cache, start: float | None = None,
                       stop: float | None = None) -> tuple[np.ndarray, float]:
        """Cached :meth:`compute_sound` of an audio file, keyed by the file's identity.

        With ``start`` / ``stop`` (seconds into the file), only that segment of the audio is processed (frame 0
        is then at ``start``); the bounds enter the cache key.
        """
        path = self._existing(path)
        # content, not size + mtime: an edited sound is recomputed, a touched or copied one is not
        key: dict[str, tp.Any] = {"file": str(path.resolve()), "content": file_fingerprint(path),
               "feature": self.name, "params": self.params()}
        segment = start is not None or stop is not None
        if segment:
            key["segment"] = [start, stop]

        def build(writer: EntryWriter) -> None:
            wav, sr = load_audio(path)
            if segment:
                a = 0 if start is None else int(round(start * sr))
                b = len(wav) if stop is None else int(round(stop * sr))
                wav = wav[a:b]
                if wav.size == 0:
                    raise FeatureError(f"segment [{start}, {stop}] s of {path} holds no audio")
            value, rate = self.compute_sound(wav, sr)
            writer.save("value", value.astype(np.float32))
            writer.meta["frame_rate"] = rate

        entry = cache.get(f"sound-{self.name}", key, self.version, build, desc=f"{self.name} {path.name}")
        return entry["value"], float(entry.meta["frame_rate"])

    def silence(self) -> np.ndarray:
        """The feature value of silence, used outside sound events, shape ``(dimension,)``."""
        value, _ = self.compute_sound(np.zeros(1600, dtype=np.float32), 16000)
        return value.mean(axis=1)

    def _existing(self, path: str | Path) -> Path:
        path = Path(path)
        if not path.exists():
            raise FeatureError(f"audio file {path} not found; the {self.name} feature needs the study's "
                               "stimuli folder")
        return path

    @staticmethod
    def _place(out: np.ndarray, times: np.ndarray, value: np.ndarray, rate: float, onset: float, end: float,
               file_offset: float) -> None:
        """Interpolate ``value`` (frame 0 at ``file_offset`` s) onto ``times`` in ``[onset, end)``."""
        start, stop = np.searchsorted(times, [onset, end])
        if stop <= start:
            return
        frame_pos = (times[start:stop] - onset + file_offset) * rate
        frames = np.arange(value.shape[1])
        inside = frame_pos <= frames[-1]
        for d in range(value.shape[0]):  # linear interpolation per dimension
            out[d, start:stop][inside] = np.interp(frame_pos[inside], frames, value[d])

    def compute_timeline(self, recording: Recording, sample_rate: float, n_times: int,
                         cache: Cache) -> np.ndarray:
        out = np.repeat(self.silence()[:, None].astype(np.float32), n_times, axis=1)
        times = np.arange(n_times) / sample_rate
        events = recording.events()
        sounds = events.query("kind == 'sound'")
        if self.contextual:
            blocks = events.query("kind == 'block'")
            bounds = np.unique(np.concatenate([blocks.onset.to_numpy(float),
                                               (blocks.onset + blocks.duration).to_numpy(float)]))
        for row in sounds.itertuples():
            if not self.contextual:
                value, rate = self.sound_features(row.filepath, cache)
                self._place(out, times, value, rate, row.onset, row.onset + row.duration, float(row.offset))
                continue
            path = self._existing(row.filepath)
            file_end = _audio_duration(path)
            for seg_on, seg_end in cut_at(row.onset, row.onset + row.duration, bounds):
                # the segment of the file heard during [seg_on, seg_end), in file seconds (rounded to 1 us so
                # that the same sentence heard by several subjects hits the same cache entry)
                a = round(float(row.offset) + seg_on - row.onset, 6)
                b = round(min(float(row.offset) + seg_end - row.onset, file_end), 6)
                if b - a <= 0:
                    continue
                value, rate = self.sound_features(path, cache, start=a, stop=b)
                self._place(out, times, value, rate, seg_on, seg_end, 0.0)
        return out


def cut_at(onset: float, end: float, bounds: np.ndarray, min_length: float = 1e-6) -> list[tuple[float, float]]:
    """``[onset, end)`` cut at every value of ``bounds`` strictly inside it: the list of ``(start, stop)``."""
    inner = [float(b) for b in np.sort(bounds) if onset + min_length < b < end - min_length]
    edges = [float(onset)] + inner + [float(end)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b - a > min_length]


def _audio_duration(path: Path) -> float:
    import soundfile

    try:
        info = soundfile.info(os.fspath(path))
    except RuntimeError as exc:
        raise FeatureError(f"cannot read audio file {path}: {exc}") from exc
    return info.frames / info.samplerate


class EventFeature(Feature):
    """A feature computed from the events table alone."""

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        """The feature from ``events``, shape ``(dimension, n_times)``."""
        raise NotImplementedError

    def compute_timeline(self, recording: Recording, sample_rate: float, n_times: int,
                         cache: Cache) -> np.ndarray:
        return self.compute_events(recording.events(), sample_rate, n_times)


def load_audio(path: str | Path, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Read a mono float32 waveform (channels averaged), optionally resampled to ``sample_rate``."""
    import soundfile
    from scipy.signal import resample_poly

    try:
        wav, sr = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except RuntimeError as exc:  # soundfile raises LibsndfileError (a RuntimeError) on corrupt files
        raise FeatureError(f"cannot read audio file {path}: {exc}") from exc
    wav = wav.mean(axis=1)
    if sample_rate is not None and sr != sample_rate:
        from math import gcd

        g = gcd(sr, sample_rate)
        wav = resample_poly(wav, sample_rate // g, sr // g).astype(np.float32)
        sr = sample_rate
    return wav, int(sr)
