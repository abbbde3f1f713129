"""Tiny files in the Neural Speech Decoding release's HDF5 layout, written with h5py as the release's keys are named.

The layout (ANCHORS_WAVE2 §3): ``ecog_alldataset`` (T, E) float at 125 Hz; ``wave_re_alldataset`` (T x 128,)
float at 16 kHz; ``start_ind_re_valid_alldataset`` / ``end_ind_re_valid_alldataset`` (n,) integer frames;
``label_alldataset`` (n,) fixed-length bytes (UTF-8); optional ``wave_re_spec_alldataset`` /
``wave_re_spec_amp_alldataset`` (T, 256), ``noisesample_re_alldataset`` (N, 256), ``formant_re_alldataset`` (T, 6),
``pitch_re_alldataset`` / ``intensity_re_alldataset`` (T,).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from bm2.features.nsd_spec import release_spectrogram

WORDS = ("apple", "river", "cat", "stone", "blue", "table", "run", "green")


def tiny_trials(n_trials: int = 12, spoken: int = 40, gap: int = 160, first: int = 100
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """``(starts, ends, T)``: trials of ``spoken`` frames (a little varied), ``gap`` frames apart."""
    lengths = spoken + (np.arange(n_trials) % 3) * 5
    starts = first + np.concatenate([[0], np.cumsum(lengths[:-1] + gap)])
    ends = starts + lengths
    return starts.astype(np.int64), ends.astype(np.int64), int(ends[-1] + first)


def tiny_signals(n_frames: int, n_electrodes: int = 64, starts=(), ends=(), seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(ecog [T, E], wave [T * 128])``: ECoG whose value encodes (frame, electrode) exactly
    (``frame + electrode / 1000``) and a waveform with a tone inside each trial over faint noise."""
    ecog = (np.arange(n_frames)[:, None] + np.arange(n_electrodes)[None, :] / 1000.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    wave = (1e-3 * rng.standard_normal(n_frames * 128)).astype(np.float32)
    t = np.arange(n_frames * 128) / 16000
    for i, (a, b) in enumerate(zip(starts, ends)):
        span = slice(int(a) * 128, int(b) * 128)
        wave[span] += (0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t[span])).astype(np.float32)
    return ecog, wave


def write_nsd(path: Path, ecog: np.ndarray, wave: np.ndarray, starts, ends, labels, *, spec: str | np.ndarray |
              None = "computed", noise: bool = True, formant: bool = False, tasks=None,
              raw_labels: list[bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """Write one participant's file. ``spec='computed'`` stores the release spectrogram of ``wave`` (T, 256) and its
    power; an array stores that array; None stores none. ``raw_labels`` replaces the encoded words (bytes as
    given); ``drop`` leaves keys out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, np.ndarray] = {
        "ecog_alldataset": np.asarray(ecog, dtype=np.float32),
        "wave_re_alldataset": np.asarray(wave, dtype=np.float32),
        "start_ind_re_valid_alldataset": np.asarray(starts, dtype=np.int64),
        "end_ind_re_valid_alldataset": np.asarray(ends, dtype=np.int64),
        "label_alldataset": np.array(raw_labels if raw_labels is not None else [w.encode() for w in labels],
                                     dtype="S"),
    }
    n_frames = len(ecog)
    if isinstance(spec, str):
        norm, power = release_spectrogram(torch.from_numpy(np.asarray(wave, dtype=np.float32)))
        data["wave_re_spec_alldataset"] = norm.numpy()[:, :n_frames].T.copy()
        data["wave_re_spec_amp_alldataset"] = power.numpy()[:, :n_frames].T.copy()
    elif spec is not None:
        data["wave_re_spec_alldataset"] = np.asarray(spec, dtype=np.float32)
    if noise:
        data["noisesample_re_alldataset"] = np.full((20, 256), -0.9, dtype=np.float32)
    if formant:
        data["formant_re_alldataset"] = np.tile(np.array([500, 1500, 2500, 3500, 4500, 5500], np.float32),
                                                (n_frames, 1))
        data["pitch_re_alldataset"] = np.full(n_frames, 120.0, dtype=np.float32)
        data["intensity_re_alldataset"] = np.full(n_frames, 60.0, dtype=np.float32)
    if tasks is not None:
        data["task_alldataset"] = np.array([t.encode() for t in tasks], dtype="S")
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            if key not in drop:
                f.create_dataset(key, data=value)
    return path


def write_tiny(root: Path, name: str = "HB02.h5", n_trials: int = 12, **kwargs) -> tuple[Path, dict]:
    """A complete tiny participant file; returns its path and what was written (starts, ends, ecog, wave ...)."""
    starts, ends, n_frames = tiny_trials(n_trials)
    ecog, wave = tiny_signals(n_frames, starts=starts, ends=ends)
    labels = [WORDS[i % len(WORDS)] for i in range(n_trials)]
    path = write_nsd(root / name, ecog, wave, starts, ends, labels, **kwargs)
    return path, dict(starts=starts, ends=ends, n_frames=n_frames, ecog=ecog, wave=wave, labels=labels)
