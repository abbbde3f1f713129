"""Simulated MEG responses to the synthetic speech: 102 Neuromag magnetometers, in Tesla.

A few latent sources with dipolar field patterns respond to the audio's band envelopes, to acoustic edges
and to word and phoneme onsets (with word- and phoneme-specific amplitudes) through gamma-shaped temporal
response functions. Spatially correlated 1/f background with an alpha rhythm, sensor noise, 50 Hz line
noise, slow drifts, channel offsets and rare large artefacts are added on top.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as tp

import numpy as np

from ...events import ARPABET
from .speech import PHONES, SAMPLE_RATE, WORDS

if tp.TYPE_CHECKING:
    import mne

N_BANDS = 8
BAND_EDGES = np.geomspace(100.0, 7000.0, N_BANDS + 1)
ENV_RATE = 1000  # Hz, rate of the stored envelopes (they are low-passed at ENV_CUTOFF)
ENV_CUTOFF = 15.0
N_SOURCES = 8
N_BACKGROUND = 24
KERNEL_SECONDS = 0.6
GROUPS = ("env", "edge", "word", "phoneme")
# GROUP_SCALE brings each group's field to unit RMS during speech (measured); GROUP_GAIN then weighs them,
# with weights whose root-sum-square is one so that the evoked field's RMS is about EVOKED_RMS * snr.
GROUP_SCALE = {"env": 1 / 0.24, "edge": 1 / 0.09, "word": 1 / 0.42, "phoneme": 1 / 1.0}
GROUP_GAIN = {"env": 0.65, "edge": 0.3, "word": 0.55, "phoneme": 0.4}
EMBED_DIM = 4
# Field levels (Tesla). EVOKED_RMS is the RMS over sensors of the stimulus-driven field at snr=1 during speech.
EVOKED_RMS = 75e-15
BACKGROUND_RMS = 150e-15
SENSOR_NOISE = 20e-15
LINE_AMPLITUDE = 100e-15
DRIFT_AMPLITUDE = 500e-15
OFFSET_STD = 300e-15
ARTEFACTS_PER_MINUTE = 6.0
LINE_FREQ = 50.0


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[list[str], np.ndarray]:
    import mne

    layout = mne.channels.read_layout("Vectorview-mag")
    pos = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    pos = (pos - pos.min(axis=0)) / np.ptp(pos, axis=0)
    return list(layout.names), pos


def channel_names() -> list[str]:
    """The 102 magnetometer names of mne's ``Vectorview-mag`` layout (e.g. ``"MEG 0111"``)."""
    return list(_layout()[0])


def layout_xy() -> np.ndarray:
    """2-D positions in [0, 1] of :func:`channel_names`, shape ``(102, 2)``."""
    return _layout()[1].copy()


def _sensor_locs(names: list[str]) -> np.ndarray:
    """12-element ``loc`` of each magnetometer: Neuromag's canonical geometry, else a helmet projection."""
    import mne

    try:
        canonical = mne.channels.read_meg_canonical_info("neuromag", verbose="error")  # mne >= 1.12
        locs = {ch["ch_name"]: ch["loc"].copy() for ch in canonical["chs"]}
        return np.stack([locs[n] for n in names])
    except (AttributeError, KeyError, ValueError):
        xy = (layout_xy() - 0.5) * 2  # unit disc -> hemisphere of radius 0.12 m
        theta = np.clip(np.linalg.norm(xy, axis=1), 0, 1.2) * np.pi / 2.4
        phi = np.arctan2(xy[:, 1], xy[:, 0])
        ez = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
        ex = np.cross([0.0, 0.0, 1.0], ez) + np.array([1e-6, 0, 0])
        ex /= np.linalg.norm(ex, axis=1, keepdims=True)
        ey = np.cross(ez, ex)
        return np.concatenate([0.12 * ez + [0, 0, 0.04], ex, ey, ez], axis=1)


def magnetometer_info(sfreq: float) -> mne.Info:
    """An :class:`mne.Info` of 102 Neuromag (VectorView T3) magnetometers with their 3-D geometry."""
    import mne
    from mne.io.constants import FIFF

    names = channel_names()
    info = mne.create_info(names, sfreq, "mag", verbose="error")
    for ch, loc in zip(info["chs"], _sensor_locs(names)):
        ch["coil_type"] = FIFF.FIFFV_COIL_VV_MAG_T3
        ch["loc"][:] = loc
    info["line_freq"] = LINE_FREQ
    return info


def band_envelopes(audio: np.ndarray) -> np.ndarray:
    """Compressed envelopes of :data:`N_BANDS` log-spaced bands, at :data:`ENV_RATE`, shape ``(time, band)``."""
    from scipy import signal  # lazy: not needed once the study is generated

    step = SAMPLE_RATE // ENV_RATE
    n = len(audio) // step * step
    lowpass = signal.butter(4, ENV_CUTOFF, fs=ENV_RATE, output="sos")
    out = []
    for lo, hi in zip(BAND_EDGES[:-1], BAND_EDGES[1:]):
        band = signal.sosfilt(signal.butter(3, [lo, hi], btype="bandpass", fs=SAMPLE_RATE, output="sos"), audio)
        env = np.abs(band[:n]).reshape(-1, step).mean(axis=1)
        out.append(np.maximum(signal.sosfiltfilt(lowpass, env), 0.0) ** 0.3)  # loudness-like compression
    return np.stack(out, axis=1)


def _gamma_kernel(rng: np.random.Generator, times: np.ndarray, n_peaks: int) -> np.ndarray:
    """Sum of gamma-shaped bumps of alternating sign peaking between 50 and 300 ms, unit peak."""
    lows = np.linspace(0.05, 0.2, n_peaks)
    peaks = [rng.uniform(lo, lo + 0.1) for lo in lows]
    sign = rng.choice([-1.0, 1.0])
    kernel = np.zeros_like(times)
    for i, peak in enumerate(peaks):
        shape = rng.uniform(4.0, 8.0)
        x = np.maximum(times, 1e-9) / peak
        kernel += sign * (-1) ** i * rng.uniform(0.5, 1.0) * x ** (shape - 1) * np.exp(-(shape - 1) * (x - 1))
    return kernel / np.abs(kernel).max()


def _blobs(xy: np.ndarray, centres: np.ndarray, widths: np.ndarray) -> np.ndarray:
    d2 = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / widths[None, :] ** 2)


def _phoneme_embedding(rng: np.random.Generator) -> dict[str, np.ndarray]:
    feats = []
    for label in ARPABET:
        ph = PHONES[label]
        feats.append([ph.kind in ("vowel", "diphthong"), ph.voicing > 0.1, ph.band is not None,
                      ph.formants[1] / 2000.0])
    emb = np.array(feats, float) + 0.3 * rng.standard_normal((len(ARPABET), EMBED_DIM))
    emb = (emb - emb.mean(0)) / emb.std(0)
    return dict(zip(ARPABET, emb))


@dataclasses.dataclass
class Stimulus:
    """What one recording presents: sentences placed on the recording's timeline."""

    onsets: list[float]  # seconds, sound onset of each sentence
    envelopes: list[np.ndarray]  # (time at ENV_RATE, N_BANDS), already normalised
    words: list[tuple[float, str]]  # (absolute onset, word)
    phonemes: list[tuple[float, str]]  # (absolute onset, ARPABET label)


class BrainModel:
    """Subject-independent part of the simulation (sources, response functions, embeddings), from a seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        self.centres = rng.uniform(0.15, 0.85, (N_SOURCES, 2))
        angle = rng.uniform(0, 2 * np.pi, N_SOURCES)
        self.dipole = rng.uniform(0.12, 0.25, (N_SOURCES, 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
        self.widths = rng.uniform(0.08, 0.14, N_SOURCES)
        self.n_peaks = rng.integers(2, 4, (N_SOURCES, len(GROUPS)))
        self.kernel_seeds = rng.integers(0, 2 ** 31, (N_SOURCES, len(GROUPS)))
        self.weights = {"env": rng.dirichlet(np.full(N_BANDS, 0.5), N_SOURCES),
                        "edge": rng.uniform(0.3, 1.0, (N_SOURCES, 1)),
                        "word": rng.standard_normal((N_SOURCES, EMBED_DIM + 1)) / np.sqrt(EMBED_DIM + 1),
                        "phoneme": rng.standard_normal((N_SOURCES, EMBED_DIM + 1)) / np.sqrt(EMBED_DIM + 1)}
        self.word_embedding = dict(zip(WORDS, rng.standard_normal((len(WORDS), EMBED_DIM))))
        self.phoneme_embedding = _phoneme_embedding(rng)
        self.bg_centres = rng.uniform(-0.1, 1.1, (N_BACKGROUND, 2))
        self.bg_widths = rng.uniform(0.15, 0.4, N_BACKGROUND)
        self.bg_signs = rng.choice([-1.0, 1.0], N_BACKGROUND)

    def subject(self, rng: np.random.Generator) -> SubjectModel:
        """Perturb the model for one subject: rotated / shifted / rescaled patterns, shifted latencies."""
        xy = layout_xy() - 0.5
        a = rng.normal(0, np.deg2rad(8))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        xy = xy @ rot.T + 0.5 + rng.normal(0, 0.04, 2)
        half = self.dipole / 2
        patterns = (_blobs(xy, self.centres + half, self.widths) - _blobs(xy, self.centres - half, self.widths))
        patterns *= rng.lognormal(0, 0.2, N_SOURCES) / np.abs(patterns).max(axis=0)
        background = _blobs(xy, self.bg_centres, self.bg_widths) * self.bg_signs
        return SubjectModel(self, patterns, background, latency=rng.uniform(0.92, 1.08),
                            noise=rng.uniform(0.8, 1.2), line_phase=rng.uniform(0, 2 * np.pi),
                            line_tilt=rng.normal(0, 0.5, 2))


@dataclasses.dataclass
class SubjectModel:
    """One subject's field patterns, latency scale and noise levels."""

    model: BrainModel
    patterns: np.ndarray  # (102, N_SOURCES)
    background: np.ndarray  # (102, N_BACKGROUND)
    latency: float
    noise: float
    line_phase: float
    line_tilt: np.ndarray

    def kernels(self, sfreq: float) -> np.ndarray:
        """Response functions at ``sfreq``, shape ``(N_SOURCES, len(GROUPS), time)``."""
        times = np.arange(int(KERNEL_SECONDS * sfreq)) / sfreq / self.latency
        out = np.zeros((N_SOURCES, len(GROUPS), len(times)))
        for k in range(N_SOURCES):
            for g in range(len(GROUPS)):
                rng = np.random.default_rng(self.model.kernel_seeds[k, g])
                out[k, g] = _gamma_kernel(rng, times, int(self.model.n_peaks[k, g]))
        return out


def _features(stim: Stimulus, model: BrainModel, sfreq: float, n_times: int) -> dict[str, np.ndarray]:
    """Stimulus features on the recording's time grid, ``(time, dim)`` per group."""
    times = np.arange(n_times) / sfreq
    env = np.zeros((n_times, N_BANDS))
    for onset, e in zip(stim.onsets, stim.envelopes):
        lo, hi = np.searchsorted(times, [onset, onset + len(e) / ENV_RATE])
        local = (times[lo:hi] - onset) * ENV_RATE
        for b in range(N_BANDS):
            env[lo:hi, b] = np.interp(local, np.arange(len(e)), e[:, b])
    edge = np.maximum(np.gradient(env.mean(axis=1)) * sfreq / 10.0, 0)[:, None]

    def impulses(events: list[tuple[float, str]], table: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros((n_times + 1, EMBED_DIM + 1))
        for t, key in events:
            pos = t * sfreq
            i = int(pos)
            frac = pos - i  # split between neighbouring samples: sub-sample timing survives
            value = np.concatenate([[1.0], table[key]])
            out[i] += (1 - frac) * value
            out[i + 1] += frac * value
        return out[:n_times]

    return {"env": env, "edge": edge, "word": impulses(stim.words, model.word_embedding),
            "phoneme": impulses(stim.phonemes, model.phoneme_embedding)}


def _coloured_noise(rng: np.random.Generator, n_series: int, n_times: int, sfreq: float,
                    alpha: int = 0) -> np.ndarray:
    """1/f (pink) noise of unit RMS, ``(n_series, time)``; the first ``alpha`` series carry an alpha rhythm."""
    from scipy import fft as sp_fft  # lazy: not needed once the study is generated

    n_fft = sp_fft.next_fast_len(n_times, real=True)  # odd lengths with large prime factors are slow
    freqs = np.fft.rfftfreq(n_fft, 1 / sfreq)
    spec = rng.standard_normal((n_series, len(freqs))) + 1j * rng.standard_normal((n_series, len(freqs)))
    spec *= 1 / np.sqrt(np.maximum(freqs, 0.5))
    if alpha:
        spec[:alpha] *= 1 + 4 * np.exp(-0.5 * ((freqs - rng.uniform(9, 11)) / 1.0) ** 2)
    spec[:, 0] = 0
    out = sp_fft.irfft(spec, n=n_fft, axis=1)[:, :n_times]
    return out / out.std(axis=1, keepdims=True)


def _add_artefacts(out: np.ndarray, rng: np.random.Generator, xy: np.ndarray, sfreq: float, level: float) -> None:
    """Add rare bursts and decaying jumps of 20-2000x ``level`` on a patch of channels to ``out`` in place.

    The amplitudes are log-uniform: like SQUID jumps and movement in real MEG, a few events dwarf the
    brain signal by orders of magnitude, which is why clamping after robust scaling matters.
    """
    n_times = out.shape[1]
    n = rng.poisson(ARTEFACTS_PER_MINUTE * n_times / sfreq / 60)
    for _ in range(n):
        start = int(rng.integers(0, n_times))
        weights = _blobs(xy, rng.uniform(0, 1, (1, 2)), np.array([0.15]))[:, 0]
        weights[weights < 0.2] = 0
        amp = np.exp(rng.uniform(np.log(20), np.log(2000))) * level * rng.choice([-1.0, 1.0])
        if rng.random() < 0.6:  # muscle / movement burst
            length = max(4, int(rng.uniform(0.05, 0.3) * sfreq))
            wave = np.hanning(length) * (0.5 + rng.standard_normal(length))
            wave /= np.abs(wave).max()
        else:  # SQUID jump that the electronics slowly recover from
            length = n_times - start
            wave = np.exp(-np.arange(length) / (rng.uniform(0.5, 3.0) * sfreq))
        stop = min(n_times, start + length)
        rows = np.flatnonzero(weights)
        out[rows, start:stop] += amp * weights[rows, None] * wave[None, :stop - start]


def simulate(stim: Stimulus, subject: SubjectModel, rng: np.random.Generator, sfreq: float, n_times: int,
             snr: float = 1.0) -> np.ndarray:
    """The magnetometer signal (Tesla) of one recording, shape ``(102, n_times)``."""
    from scipy import signal  # lazy: not needed once the study is generated

    feats = _features(stim, subject.model, sfreq, n_times)
    kernels = subject.kernels(sfreq)
    sources = np.zeros((N_SOURCES, n_times))
    for g, group in enumerate(GROUPS):
        drive = feats[group] @ subject.model.weights[group].T  # (time, source)
        # continuous features integrate over the kernel (dt); an impulse event gives the kernel itself
        dt = 1 / sfreq if group in ("env", "edge") else 1.0
        resp = signal.oaconvolve(drive, kernels[:, g].T * dt, axes=0)[:n_times]
        sources += GROUP_GAIN[group] * GROUP_SCALE[group] * resp.T
    evoked = subject.patterns @ sources
    evoked *= snr * EVOKED_RMS
    xy = layout_xy()
    background = subject.background @ _coloured_noise(rng, N_BACKGROUND, n_times, sfreq, alpha=3)
    background = 0.9 * background / background.std() + 0.3 * _coloured_noise(rng, len(xy), n_times, sfreq)
    brain = evoked + subject.noise * (BACKGROUND_RMS * background
                                      + SENSOR_NOISE * rng.standard_normal(background.shape))
    # Line noise, drifts and offsets are sums of a few sinusoids with per-channel phases: one low-rank product.
    t = np.arange(n_times) / sfreq
    mixing, basis = [OFFSET_STD * rng.standard_normal((len(xy), 1))], [np.ones((1, n_times))]
    gain = LINE_AMPLITUDE * (1 + xy @ subject.line_tilt)
    for h, rel in ((1, 1.0), (2, 0.2), (3, 0.3)):
        if h * LINE_FREQ < 0.45 * sfreq:
            phase = subject.line_phase * h + 0.3 * xy[:, 0]
            mixing.append(rel * gain[:, None] * np.stack([np.cos(phase), np.sin(phase)], 1))
            basis.append(np.stack([np.sin(2 * np.pi * h * LINE_FREQ * t), np.cos(2 * np.pi * h * LINE_FREQ * t)]))
    for _ in range(3):
        f = rng.uniform(0.005, 0.08)
        amp = DRIFT_AMPLITUDE * (0.5 * rng.standard_normal() + 0.5 * rng.standard_normal(len(xy)))
        phase = rng.uniform(0, 2 * np.pi, len(xy))
        mixing.append(amp[:, None] * np.stack([np.cos(phase), np.sin(phase)], 1))
        basis.append(np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)]))
    slow = np.concatenate(mixing, axis=1) @ np.concatenate(basis, axis=0)
    level = float(np.median(brain.std(axis=1)))
    brain += slow
    _add_artefacts(brain, rng, xy, sfreq, level)
    return brain
