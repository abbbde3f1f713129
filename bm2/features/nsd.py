"""``nsd_spec``: the Neural Speech Decoding release's spectrogram of a recording's own audio, at 125 Hz.

The target of the Neural Speech Decoding models (Chen et al. 2024): the participant's speech
(:meth:`~bm2.studies.base.Recording.audio_track`, 16 kHz) through :func:`bm2.features.nsd_spec.release_spectrogram`
(511-point STFT, hop 128, dB clamped to [-50, 22.5] mapped to [-1, 1]), one frame per ECoG frame: frame ``t`` is
centred on audio sample ``128 t``, i.e. at ``t / 125`` s, the time of ECoG frame ``t``. Values stay in [-1, 1]
(set ``norm.scale_features=false`` to keep them so in batches).

When the file also stores the spectrogram (``wave_re_spec_alldataset``), the computed one is **checked** against
it: a largest absolute difference above ``atol`` (in [-1, 1] units; 0.01 = 0.36 dB) is an error naming the file,
the difference and where it lies. ``source: stored`` uses the stored spectrogram instead (trusting it, no check),
``check: false`` computes without checking.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch

from ..cache import Cache
from ..studies.base import AudioTrack, Recording
from .base import Feature, FeatureError
from .nsd_spec import FRAME_RATE, HOP, N_FFT, SAMPLE_RATE, release_spectrogram, stft_length

SOURCES = ("waveform", "stored")


def chunked_release_spectrogram(track: AudioTrack, n_frames: int, chunk: int = 4096) -> np.ndarray:
    """The release spectrogram of a whole audio track, frames ``[0, n_frames)``, float32 ``[256, n_frames]``.

    Computed ``chunk`` frames at a time on slices with two frames of margin on each side (more than the half
    window of 255 samples), so that every frame equals that of :func:`release_spectrogram` on the whole track (its
    reflect padding applies at the track's ends only). Frames past the track's last (``1 + (S - 1) // 128``: the
    511-sample window is odd, so centring pads 255 samples a side) repeat it.
    """
    n_samples = int(track.n_samples)
    total = 1 + (n_samples - 1) // HOP  # frames of torch.stft(center=True) with an odd 511-sample window
    out = np.empty((N_FFT, n_frames), dtype=np.float32)
    margin = 2
    assert margin * HOP > stft_length() // 2
    for a in range(0, min(n_frames, total), chunk):
        b = min(a + chunk, n_frames, total)
        lo = max(a - margin, 0)
        hi = min((b + margin) * HOP, n_samples)
        wave = torch.from_numpy(track.read(lo * HOP, hi))
        spec, _ = release_spectrogram(wave)
        out[:, a:b] = spec[:, a - lo:b - lo].numpy()
    if n_frames > total:
        out[:, total:] = out[:, total - 1:total]
    return out


class NSDSpectrogram(Feature):
    """The release spectrogram of the recording's audio track, ``[256, n_times]`` at 125 Hz (module docstring).

    Parameters
    ----------
    source : ``waveform`` (computed, checked against the stored one when present) or ``stored`` (the file's
        ``wave_re_spec_alldataset``, trusted).
    check : compare with the stored spectrogram when computing (``source: waveform``).
    atol : the largest absolute difference allowed by the check ([-1, 1] units).
    chunk : frames per STFT call (memory only; does not change the result).

    Raises :class:`FeatureError` when the model rate is not 125 Hz, when the recording has no audio track (or no
    stored spectrogram with ``source: stored``), and when the check fails.
    """

    name = "nsd_spec"
    version = "1"

    def __init__(self, source: str = "waveform", check: bool = True, atol: float = 0.01, chunk: int = 4096) -> None:
        if source not in SOURCES:
            raise FeatureError(f"features.nsd_spec.source must be one of {list(SOURCES)}, got {source!r}")
        self.source, self.check, self.atol, self.chunk = source, bool(check), float(atol), int(chunk)

    @property
    def dimension(self) -> int:
        return N_FFT

    def params(self) -> dict[str, tp.Any]:
        return {"source": self.source, "check": self.check, "atol": self.atol}

    def compute_timeline(self, recording: Recording, sample_rate: float, n_times: int,
                         cache: Cache) -> np.ndarray:
        if abs(sample_rate - FRAME_RATE) > 1e-6:
            raise FeatureError(f"feature nsd_spec: one frame per 8 ms ECoG frame needs the model rate at "
                               f"{FRAME_RATE} Hz, got {sample_rate:g} Hz: set preprocess.sample_rate={FRAME_RATE}")
        where = getattr(recording, "path", repr(recording))
        stored = getattr(recording, "stored_spectrogram", None)
        if self.source == "stored":
            value = stored() if stored is not None else None
            if value is None:
                raise FeatureError(f"feature nsd_spec: {where} stores no spectrogram (wave_re_spec_alldataset):"
                                   " set features.nsd_spec.source=waveform to compute it from the audio")
            return _fit_length(value, n_times)
        track = recording.audio_track()
        if track is None:
            raise FeatureError(f"feature nsd_spec: {recording!r} has no audio track (Recording.audio_track); "
                               "this feature needs a study that records the spoken audio (nsd2024, nsd_synthetic)")
        if int(track.sample_rate) != SAMPLE_RATE:
            raise FeatureError(f"feature nsd_spec: the audio of {where} is at {track.sample_rate} Hz; the "
                               f"release spectrogram is defined at {SAMPLE_RATE} Hz")
        value = chunked_release_spectrogram(track, n_times, self.chunk)
        if self.check and stored is not None:
            reference = stored()
            if reference is not None:
                check_against_stored(value, reference, self.atol, str(where))
        return value


def _fit_length(value: np.ndarray, n_times: int) -> np.ndarray:
    if value.shape[1] >= n_times:
        return np.ascontiguousarray(value[:, :n_times])
    return np.concatenate([value, np.repeat(value[:, -1:], n_times - value.shape[1], axis=1)], axis=1)


def check_against_stored(computed: np.ndarray, stored: np.ndarray, atol: float, source: str) -> float:
    """The largest absolute difference between ``computed`` and ``stored`` ``[256, T]`` spectrograms over their
    common frames; raises :class:`FeatureError` naming ``source``, the difference, its frame and bin, when it
    exceeds ``atol``."""
    n = min(computed.shape[1], stored.shape[1])
    if stored.shape[0] != computed.shape[0] or n == 0:
        raise FeatureError(f"feature nsd_spec: {source}: the stored spectrogram has shape "
                           f"{tuple(stored.shape)} (bins first), the computed one {tuple(computed.shape)}")
    diff = np.abs(computed[:, :n] - stored[:, :n])
    worst = float(np.nanmax(diff)) if np.isfinite(diff).any() else float("inf")
    if not worst <= atol:
        k, t = np.unravel_index(int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0, diff.shape)
        raise FeatureError(
            f"feature nsd_spec: {source}: the spectrogram computed from wave_re_alldataset differs from the "
            f"stored wave_re_spec_alldataset by up to {worst:.4g} (in [-1, 1] units; frame {t}, bin {k}: computed "
            f"{computed[k, t]:.4g}, stored {stored[k, t]:.4g}; tolerance atol={atol:g}). The file's spectrogram was "
            "made another way, or the audio does not match it: set features.nsd_spec.source=stored to train "
            "on the stored one, or check=false to use the computed one")
    return worst


__all__ = ["NSDSpectrogram", "check_against_stored", "chunked_release_spectrogram"]
