"""A synthetic LibriBrain-like study: generated locally in the serialised LibriBrain layout, read back by the
:mod:`~bm2.studies.libribrain2025` loader itself (no download; the embedded default of the LibriBrain recipes).

One listener, ``n_train_runs`` training runs (``Sherlock1`` sessions 1 ... n, run 1) plus the 2025 validation
(``ses-11 run-2``) and test (``ses-12 run-2``) runs, so the ``named`` 2025 selectors apply unchanged. Each run is a
speech stream: sentences of words of phonemes (39 ARPABET classes drawn with a Zipf-like imbalance, position tags
``_B / _I / _E / _S``, a few ``oov_S`` and ``sil`` rows) separated by pauses written as ``silence`` rows. The MEG
(306 Neuromag channels at ``sfreq``) is the sum of

* phoneme-specific responses: each class drives ``N_SOURCES`` latent sources with its own amplitudes, each source
  with its own gamma-shaped temporal response (peaks 60-250 ms), mixed onto the sensors by fixed random patterns;
* a speech-on response: a slow source following the speech / silence timeline with a 4-6 Hz syllabic modulation;
* background: spatially correlated 1/f noise, white sensor noise, slow drifts and channel offsets.

``snr`` scales the evoked part (1.0: the phoneme field's RMS is ``PHONEME_RMS`` of the background's).
Generation takes seconds; the data live in ``root/<GEN_VERSION>-<hash of the options>``.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..events import ARPABET
from ..utils.hashing import content_hash
from ._common import generate_once
from .base import StudyError
from .libribrain2025 import N_CHANNELS, PREPROC, LibriBrain2025, events_path, h5_path

GEN_VERSION = "v1"
MARKER = "bm2_complete.json"
BOOK = "Sherlock1"
N_SOURCES = 12
N_BACKGROUND = 24
PHONEME_RMS = 0.5       # phoneme-evoked RMS relative to the background RMS at snr = 1
SPEECH_RMS = 0.5        # speech-on field RMS relative to the background RMS at snr = 1
SCALE = 1e-12           # Tesla-like magnitude of the background
VALID_RUN = ("0", "11", BOOK, "2")
TEST_RUN = ("0", "12", BOOK, "2")


def _gamma(times: np.ndarray, peak: float) -> np.ndarray:
    shape = 4.0
    x = np.maximum(times, 0) / peak
    out = x ** (shape - 1) * np.exp(-(shape - 1) * (x - 1))
    return out / np.abs(out).max()


def phoneme_stream(rng: np.random.Generator, seconds: float) -> pd.DataFrame:
    """The events of one run in the LibriBrain TSV format (``kind``, ``segment``, ``timemeg``, ``duration``,
    ``sentenceidx``): silence rows between sentences, word rows and phoneme rows with position tags."""
    prior = 1.0 / (np.arange(len(ARPABET)) + 4.0)
    prior = prior[np.random.default_rng(1234).permutation(len(ARPABET))]  # fixed imbalance, same in every run
    prior /= prior.sum()
    rows: list[tuple[str, str, float, float, tp.Any]] = []
    t, sentence = 0.0, 0
    while True:
        pause = float(rng.uniform(0.5, 1.5))
        rows.append(("silence", "", round(t, 4), round(pause, 4), ""))
        rows.append(("phoneme", "sil", round(t, 4), round(pause, 4), ""))
        t += pause
        n_words = int(rng.integers(3, 9))
        words = [int(rng.integers(1, 5)) for _ in range(n_words)]
        length = sum(words) * 0.14
        if t + length + 0.6 > seconds:
            break
        for n_phones in words:
            start = t
            phones = []
            for k in range(n_phones):
                dur = float(rng.uniform(0.06, 0.14))
                tag = "S" if n_phones == 1 else "B" if k == 0 else "E" if k == n_phones - 1 else "I"
                label = "oov" if rng.random() < 0.01 else ARPABET[int(rng.choice(len(ARPABET), p=prior))].lower()
                phones.append(("phoneme", f"{label}_{tag}", round(t, 4), round(dur, 4), sentence))
                t += dur
            rows.append(("word", f"w{sentence}_{len(rows)}", round(start, 4), round(t - start, 4), sentence))
            rows.extend(phones)
        sentence += 1
    rows.append(("silence", "", round(t, 4), round(seconds - t, 4), ""))
    return pd.DataFrame(rows, columns=["kind", "segment", "timemeg", "duration", "sentenceidx"])


class BrainModel:
    """The listener: fixed sensor patterns, phoneme amplitudes and temporal responses (from the seed)."""

    def __init__(self, seed: int, sfreq: float) -> None:
        rng = np.random.default_rng([seed, 1])
        self.sfreq = sfreq
        self.patterns = rng.standard_normal((N_CHANNELS, N_SOURCES)) / np.sqrt(N_SOURCES)
        self.amplitudes = rng.standard_normal((len(ARPABET), N_SOURCES))
        times = np.arange(int(0.5 * sfreq)) / sfreq
        self.kernels = np.stack([_gamma(times, float(p)) * rng.choice([-1, 1])
                                 for p in rng.uniform(0.06, 0.25, N_SOURCES)])
        self.speech_pattern = rng.standard_normal(N_CHANNELS) / np.sqrt(N_CHANNELS)
        self.background = rng.standard_normal((N_CHANNELS, N_BACKGROUND)) / np.sqrt(N_BACKGROUND)

    def simulate(self, events: pd.DataFrame, n_times: int, snr: float, rng: np.random.Generator) -> np.ndarray:
        """MEG ``(306, n_times)`` float32 for the events of one run."""
        from scipy import signal

        sfreq = self.sfreq
        index = {p: i for i, p in enumerate(ARPABET)}
        drive = np.zeros((N_SOURCES, n_times))
        phones = events[events.kind == "phoneme"]
        for label, onset in zip(phones.segment, phones.timemeg):
            core = str(label).split("_")[0].upper()
            if core in index:
                at = int(round(float(onset) * sfreq))
                if at < n_times:
                    drive[:, at] += self.amplitudes[index[core]]
        sources = np.stack([signal.fftconvolve(drive[k], self.kernels[k])[:n_times] for k in range(N_SOURCES)])
        evoked = self.patterns @ sources
        speech = np.zeros(n_times)
        silences = events[events.kind == "silence"]
        speech[:] = 1.0
        for onset, dur in zip(silences.timemeg, silences.duration):
            speech[int(onset * sfreq):int((onset + dur) * sfreq)] = 0.0
        smooth = signal.sosfiltfilt(signal.butter(2, 3.0, fs=sfreq, output="sos"), speech)
        rhythm = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(4, 6) * np.arange(n_times) / sfreq)
        speech_field = np.outer(self.speech_pattern, smooth * rhythm)
        # background: 1/f sources mixed onto the sensors, white sensor noise, drifts, offsets
        white = rng.standard_normal((N_BACKGROUND, n_times))
        freqs = np.fft.rfftfreq(n_times, 1 / sfreq)
        pink = np.fft.irfft(np.fft.rfft(white, axis=1) / np.sqrt(np.maximum(freqs, 1.0)), n=n_times, axis=1)
        background = self.background @ pink
        background += 0.3 * background.std() * rng.standard_normal((N_CHANNELS, n_times))
        level = background.std()
        drift = np.cumsum(rng.standard_normal((N_CHANNELS, n_times)), axis=1) * level * 2e-3
        offsets = rng.standard_normal((N_CHANNELS, 1)) * level
        ev_rms = evoked.std() or 1.0
        sp_rms = speech_field.std() or 1.0
        data = (background + drift + offsets + snr * PHONEME_RMS * level * evoked / ev_rms
                + snr * SPEECH_RMS * level * speech_field / sp_rms)
        return (data / level * SCALE).astype(np.float32)


class LibriBrainSynthetic(LibriBrain2025):
    """The synthetic LibriBrain-like study (see the module docstring).

    Parameters
    ----------
    root : folder holding generated datasets (each set of options in ``root/<GEN_VERSION>-<hash>``).
    n_train_runs : training runs (Sherlock1 sessions 1 ... n); the validation and test runs are added.
    run_seconds : length of each run.
    sfreq : sampling rate (Hz; LibriBrain's is 250).
    snr : scale of the evoked (phoneme and speech-on) fields.
    seed : seed of everything random.
    """

    name = "libribrain_synthetic"
    device = "simulated Neuromag 306 (102 magnetometers + 204 planar gradiometers), 250 Hz"
    paradigm = "simulated passive listening to a continuous speech stream"
    licence = "MIT"
    url = "generated"
    doi = "n/a (generated locally by bm2)"
    description = ("Simulated LibriBrain-like MEG: one listener, several runs, phoneme-specific spatio-temporal "
                   "responses, speech / silence spans, 1/f noise and drifts, written in the serialised layout.")
    downloadable = False  # nothing to fetch: prepare() generates it

    def __init__(self, root: str | Path, n_train_runs: int = 4, run_seconds: float = 90.0, sfreq: float = 250.0,
                 snr: float = 1.0, seed: int = 0) -> None:
        if n_train_runs < 1 or run_seconds < 10 or sfreq < 100:
            raise ValueError("n_train_runs must be >= 1, run_seconds >= 10 and sfreq >= 100")
        self.options: dict[str, tp.Any] = {"n_train_runs": int(n_train_runs), "run_seconds": float(run_seconds),
                                           "sfreq": float(sfreq), "snr": float(snr), "seed": int(seed)}
        self.base = Path(root).expanduser().resolve()
        super().__init__(self.base / f"{GEN_VERSION}-{content_hash(self.options)}", split=None)

    def runs(self) -> list[tuple[str, str, str, str]]:
        """Run keys generated: the training runs, then validation and test."""
        return [("0", str(s), BOOK, "1") for s in range(1, self.options["n_train_runs"] + 1)] + [VALID_RUN, TEST_RUN]

    def is_prepared(self) -> bool:
        return (self.root / MARKER).is_file()

    def prepare(self) -> None:
        """Generate the runs unless they are complete; concurrent callers wait for one generator."""
        generate_once(self.root, self.generate, MARKER, {"version": GEN_VERSION, **self.options})

    def generate(self, out: Path) -> None:
        """Write every run (h5 + events TSV) under ``out`` in the serialised layout."""
        import h5py

        opt = self.options
        model = BrainModel(opt["seed"], opt["sfreq"])
        n_times = int(opt["run_seconds"] * opt["sfreq"])
        for i, key in enumerate(self.runs()):
            rng = np.random.default_rng([opt["seed"], 2, i])
            events = phoneme_stream(rng, opt["run_seconds"])
            data = model.simulate(events, n_times, opt["snr"], rng)
            h5 = h5_path(out, *key, PREPROC)
            h5.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(h5, "w") as f:
                f.create_dataset("data", data=data, chunks=(N_CHANNELS, 50))
                f.attrs["sample_frequency"] = opt["sfreq"]
            tsv = events_path(out, *key)
            tsv.parent.mkdir(parents=True, exist_ok=True)
            events.to_csv(tsv, sep="\t", index=False)

    def iter_recordings(self):  # type: ignore[no-untyped-def]
        if not self.is_prepared():
            raise StudyError(f"study {self.name!r}: no generated data in {self.root}; call prepare() first")
        return super().iter_recordings()
