"""Praat pitch and formant tracks of a recording's own audio: the optional batch target ``praat`` ``[B, 4, T]``.

Neural Speech Decoding's audio-to-audio stage can supervise the speech encoder's f0 and F1-F3 with Praat's
estimates (``--pitch_supervision``, ``--formant_supervision``; ANCHORS_WAVE2 §3). Per frame of the model rate, rows
are f0, F1, F2, F3 in Hz, **NaN where Praat finds none** (unvoiced or silent frames for f0).

Where they come from (``source``):

- ``auto`` (default): the release's ``pitch_re_alldataset`` (T,) and ``formant_re_alldataset`` (T, >= 3; its first
  three columns taken as F1-F3 in Hz, an assumption: the release does not document the columns) when the
  recording holds both (:meth:`~bm2.studies.nsd2024.NSDRecording.optional`; zeros and non-finite values become
  NaN), else computed;
- ``stored``: the release's tracks, an error when absent; ``computed``: always computed.

Computed with praat-parselmouth (``pip install bm2[praat]``; Praat's GPL-3.0 code, an optional extra) on the
recording's audio track (:meth:`~bm2.studies.base.Recording.audio_track`): ``Sound.to_pitch`` (autocorrelation,
``pitch_floor`` / ``pitch_ceiling`` Hz) and ``Sound.to_formant_burg`` (5 formants up to ``max_formant_hz``: by
Praat's convention 5500 Hz for a female voice, 5000 Hz for a male one, used when it is null and the recording
says its speaker's ``sex``), both one analysis frame per model frame, read at the frame times ``t / rate`` (nearest
analysis frame). Cached per recording and parameters.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np

from ..cache import Cache, EntryWriter
from ..studies.base import Recording
from .base import FeatureError

DIM = 4
SOURCES = ("auto", "stored", "computed")
VERSION = "2"  # 2: no value beyond half an analysis step (edges)
STORED_RATE = 125.0  # Hz, the release's pitch / formant tracks: one value per ECoG frame
MAX_FORMANT_BY_SEX = {"female": 5500.0, "male": 5000.0}


@dataclasses.dataclass(frozen=True)
class PraatParams:
    """Where the ``praat`` target comes from and Praat's settings (module docstring)."""

    source: str = "auto"
    pitch_floor: float = 75.0
    pitch_ceiling: float = 500.0
    max_formant_hz: float | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"features.praat.source must be one of {list(SOURCES)}, got {self.source!r}")
        if not 0 < self.pitch_floor < self.pitch_ceiling:
            raise ValueError("features.praat: need 0 < pitch_floor < pitch_ceiling")


def _fit(value: np.ndarray, n_times: int) -> np.ndarray:
    out = np.full((value.shape[0], n_times), np.nan, dtype=np.float32)
    n = min(n_times, value.shape[1])
    out[:, :n] = value[:, :n]
    return out


def stored_tracks(recording: Recording, n_times: int, sample_rate: float = STORED_RATE) -> np.ndarray | None:
    """``[4, n_times]`` from the release's pitch and formant keys (one value per 125-Hz frame), or None when the
    recording lacks either. Raises :class:`FeatureError` when ``sample_rate`` is not the tracks' 125 Hz (frame t
    would take the value of another time)."""
    optional = getattr(recording, "optional", None)
    if optional is None:
        return None
    pitch, formant = optional("pitch_re_alldataset"), optional("formant_re_alldataset")
    if pitch is None or formant is None:
        return None
    if abs(float(sample_rate) - STORED_RATE) > 1e-9:
        raise FeatureError(f"praat target: {getattr(recording, 'path', recording)} stores its pitch / formant tracks "
                           f"at {STORED_RATE:g} Hz, but the model rate is {sample_rate:g} Hz: set "
                           f"preprocess.sample_rate={STORED_RATE:g} (as recipe nsd_data does), or "
                           "features.praat.source=computed to compute the tracks at the model rate")
    pitch = np.asarray(pitch, dtype=np.float32).reshape(-1)
    formant = np.asarray(formant, dtype=np.float32)
    if formant.ndim != 2 or formant.shape[1] < 3:
        raise FeatureError(f"praat target: {getattr(recording, 'path', recording)}: formant_re_alldataset must be "
                           f"(T, >= 3), got {formant.shape}")
    value = np.concatenate([pitch[None], formant[:, :3].T], axis=0)
    value[~np.isfinite(value) | (value <= 0)] = np.nan
    return _fit(value, n_times)


def computed_tracks(wave: np.ndarray, audio_rate: int, frame_rate: float, n_times: int, params: PraatParams,
                    sex: str | None = None) -> np.ndarray:
    """``[4, n_times]`` f0, F1, F2, F3 (Hz, NaN where undefined) of ``wave`` by Praat (parselmouth), at frame times
    ``t / frame_rate``. Raises :class:`FeatureError` when parselmouth is not installed."""
    try:
        import parselmouth
    except ImportError as exc:
        raise FeatureError("the praat target computes pitch and formants with praat-parselmouth: "
                           "pip install 'bm2[praat]' (or give the release's pitch / formant tracks)") from exc
    sound = parselmouth.Sound(np.asarray(wave, dtype=np.float64), sampling_frequency=float(audio_rate))
    step = 1.0 / frame_rate
    times = np.arange(n_times) / frame_rate
    out = np.full((DIM, n_times), np.nan, dtype=np.float32)
    pitch = sound.to_pitch(time_step=step, pitch_floor=params.pitch_floor, pitch_ceiling=params.pitch_ceiling)
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    f0[f0 <= 0] = np.nan
    out[0] = _at(times, np.asarray(pitch.xs()), f0)
    max_formant = params.max_formant_hz or MAX_FORMANT_BY_SEX.get(sex or "", 5500.0)
    formant = sound.to_formant_burg(time_step=step, max_number_of_formants=5, maximum_formant=max_formant)
    xs = np.asarray(formant.xs())
    for i in range(1, 4):
        matrix = parselmouth.praat.call(formant, "To Matrix", i)
        values = np.asarray(matrix.values, dtype=np.float64).reshape(-1)
        values[~np.isfinite(values) | (values <= 0)] = np.nan
        out[i] = _at(times, xs, values)
    return out


def _at(times: np.ndarray, xs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (at analysis times ``xs``) at ``times``: the nearest analysis frame, NaN beyond half a step."""
    if len(xs) == 0:
        return np.full(len(times), np.nan)
    index = np.clip(np.searchsorted(xs, times), 1, len(xs) - 1) if len(xs) > 1 else np.zeros(len(times), int)
    if len(xs) > 1:
        left = xs[index - 1]
        index = np.where(np.abs(times - left) <= np.abs(xs[index] - times), index - 1, index)
    out = values[index].copy()
    step = xs[1] - xs[0] if len(xs) > 1 else 1.0
    out[np.abs(xs[index] - times) > step / 2 + 1e-9] = np.nan
    return out


def praat_tracks(recording: Recording, sample_rate: float, n_times: int, cache: Cache,
                 params: PraatParams | None = None) -> np.ndarray:
    """The cached ``[4, n_times]`` target of ``recording`` at ``sample_rate`` (module docstring; a read-only memory
    map). Raises :class:`FeatureError` when neither the release's tracks nor the audio are there."""
    params = params or PraatParams()
    where = getattr(recording, "path", repr(recording))
    key = {"recording": recording.uid, "sample_rate": sample_rate, "n_times": n_times,
           "params": dataclasses.asdict(params), "sex": getattr(recording, "sex", None)}

    def build(writer: EntryWriter) -> None:
        value = stored_tracks(recording, n_times, sample_rate) if params.source in ("auto", "stored") else None
        if value is None and params.source == "stored":
            raise FeatureError(f"praat target: {where} holds no pitch_re_alldataset / formant_re_alldataset: set "
                               "features.praat.source=auto (or computed) to compute them with Praat")
        if value is None:
            track = recording.audio_track()
            if track is None:
                raise FeatureError(f"praat target: {recording!r} has no audio track to compute pitch and formants")
            value = computed_tracks(track.read(), track.sample_rate, sample_rate, n_times, params,
                                    getattr(recording, "sex", None))
        writer.save("value", value.astype(np.float32))

    return tp.cast(np.ndarray, cache.get("praat", key, VERSION, build, desc=f"praat {recording!r}")["value"])


__all__ = ["PraatParams", "computed_tracks", "praat_tracks", "stored_tracks"]
