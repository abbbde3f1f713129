"""A synthetic sEEG word-reading study in the Du-IN release's layout, generated locally (no download).

:meth:`SyntheticSeegStudy.prepare` writes ``root/<GEN_VERSION>-<hash of the options>/data/seeg.he2023xuanwu/
{001..}/word-recitation/run{1..}/dataset.bipolar.default.{aligned,unaligned}/{data,info}`` as pickles naming
the release's ``utils.DotDict.DotDict`` class, and the recordings are read back by the ``duin2024`` loader
(:class:`~bm2.studies.duin2024.Duin2024`, restricted unpickler included), exactly as the real data.

The model, per subject (everything seeded by ``seed``):

- ``n_channels`` bipolar contacts on three shafts (``SM``, ``P``, ``TI'``), 3-s epochs from -0.5 s at 1 kHz;
- ``n_responsive`` of them respond to words: the response of word ``w`` on contact ``c`` is a sum of Gaussian
  bumps (60 ms wide) at fixed latencies between 0.1 and 1.0 s with amplitudes drawn per (subject, word, contact,
  latency), so words differ in spatio-temporal pattern; plus a response shared by every word; each trial scales
  it by a gain around 1 and shifts it by a latency jitter (``aligned``: +-10 ms; ``unaligned``: +-80 ms, as if
  locked to the cue rather than to speech);
- background: 1/f-like AR(1) noise, white noise, 50 Hz line noise and, in 2% of the trials, an artefact (a
  large spike on one contact);
- ``snr`` scales the responses (RMS about 20 uV x snr against about 30 uV of background); data in uV
  (``data_s``; ``data_n`` is the same array: the synthetic study has no second version of the signal).

Continuous data for pre-training (``continuous_seconds`` per subject, 0 = none), in the layout the original's
pre-training reads: ``{subject}/pretrain/dataset.default.1000hz/`` with an ``info`` pickle (``ch_names``) and
``.npy`` files of at most ``CONTINUOUS_FILE_SECONDS`` each, arrays ``(2, channels, time)`` in uV (``X_s``,
``X_n``, equal). The same background, with a word read every 3 to 4 s (random words, same responses and
jitter as the ``unaligned`` runs), drawn from its own seed: no word-recitation trial is in it, so crops never
contain the classifier's test trials.
"""

from __future__ import annotations

import pickle
import typing as tp
from pathlib import Path

import numpy as np

from ..utils.hashing import content_hash
from ..utils.safe_pickle import AttrDict
from .duin2024 import DATASET, PRETRAIN, RELEASE_CLASSES, SFREQ, TASK, TMIN, Duin2024
from ._common import generate_once
from .base import StudyError

GEN_VERSION = "v2"  # v2: continuous pre-training data; bump whenever generation changes: old folders are then ignored
MARKER = "bm2_complete.json"
N_SAMPLES = 3000
SHAFTS = ("SM", "P", "TI'")
LATENCIES = (0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)  # s after word onset
WIDTH = 0.06  # s, standard deviation of each bump
JITTER = {"aligned": 0.01, "unaligned": 0.08}  # s, largest latency jitter per trial
CONTINUOUS_FILE_SECONDS = 100.0  # longest .npy file of the continuous data


_PurePickler: tp.Any = pickle._Pickler  # type: ignore[attr-defined]  # the pure-Python pickler (private, but stable since 3.0)


class _ReleasePickler(_PurePickler):
    """Pickles :class:`AttrDict` under the release's class path (``utils.DotDict.DotDict``) without importing
    it (the pure-Python pickler, whose ``save_global`` can be told the name)."""

    def save_global(self, obj: tp.Any, name: str | None = None) -> None:
        if obj is AttrDict:
            module, qualname = RELEASE_CLASSES[0].rsplit(".", 1)
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump_release(obj: tp.Any, path: Path) -> None:
    """Write ``obj`` as the release does (protocol 4), AttrDicts named ``utils.DotDict.DotDict``."""
    with open(path, "wb") as f:
        _ReleasePickler(f, protocol=4).dump(obj)


def channel_names(n_channels: int) -> list[str]:
    """``n_channels`` bipolar contact names spread over :data:`SHAFTS` (``SM1``, ``P1``, ``TI'1``, ``SM2`` ...)."""
    return [f"{SHAFTS[i % len(SHAFTS)]}{i // len(SHAFTS) + 1}" for i in range(n_channels)]


class SyntheticSeegStudy(Duin2024):
    """Simulated sEEG of subjects reading words, in the Du-IN release's pickle layout (module docstring).

    Parameters
    ----------
    root : folder of generated datasets; each set of options lives in ``root/<GEN_VERSION>-<hash>``.
    n_subjects, n_runs : subjects (``"001"`` ...) and runs per subject (``run1`` ...).
    n_words : vocabulary size (``word00`` ...); 61 as in Du-IN.
    repeats : trials of each word in each run.
    n_channels, n_responsive : contacts per subject, and how many of them carry word responses.
    snr : scale of the word responses against the background.
    seed : seed of everything random; identical options give identical files.
    continuous_seconds : seconds of continuous pre-training data per subject (0: none, so that pre-training
        falls back to the epochs).
    aligned, subjects, channels : as for ``duin2024`` (what is read back; not part of the generation).
    """

    name = "synthetic_seeg"
    modality = "seeg"
    device = "simulated bipolar sEEG, 1 kHz"
    language = "zh"
    paradigm = "word reading (simulated), one 3-s epoch per word"
    licence = "MIT"
    url = "generated"
    doi = "n/a (generated locally by bm2)"
    description = ("Simulated sEEG of subjects reading words: word-specific evoked patterns on a subset of bipolar "
                   "contacts, 1/f and line noise, artefacts; written in Du-IN's pickle layout and read by duin2024.")
    downloadable = False

    def __init__(self, root: str | Path, n_subjects: int = 2, n_runs: int = 2, n_words: int = 61, repeats: int = 3,
                 n_channels: int = 10, n_responsive: int = 4, snr: float = 1.0, seed: int = 0,
                 continuous_seconds: float = 300.0, aligned: bool = False,
                 subjects: tp.Sequence[str | int] | None = None,
                 channels: tp.Sequence[str] | tp.Mapping[str, tp.Sequence[str]] | None = None) -> None:
        super().__init__(Path(root).expanduser().resolve(), subjects=subjects, aligned=aligned, channels=channels,
                         unit_scale=1e-6)
        if min(n_subjects, n_runs, n_words, repeats, n_channels) < 1:
            raise ValueError("n_subjects, n_runs, n_words, repeats and n_channels must be >= 1")
        if not 0 <= n_responsive <= n_channels:
            raise ValueError(f"n_responsive must be in [0, n_channels={n_channels}], got {n_responsive}")
        self.options: dict[str, tp.Any] = {
            "n_subjects": int(n_subjects), "n_runs": int(n_runs), "n_words": int(n_words), "repeats": int(repeats),
            "n_channels": int(n_channels), "n_responsive": int(n_responsive), "snr": float(snr), "seed": int(seed),
            "continuous_seconds": float(continuous_seconds)}
        if continuous_seconds < 0:
            raise ValueError(f"continuous_seconds must be >= 0, got {continuous_seconds}")

    @property
    def dataset(self) -> Path:
        """Folder of the dataset generated with these options."""
        return self.root / f"{GEN_VERSION}-{content_hash(self.options)}"

    @property
    def data_root(self) -> Path:
        return self.dataset / "data" / DATASET

    def is_prepared(self) -> bool:
        return (self.dataset / MARKER).is_file()

    def prepare(self) -> None:
        """Generate the dataset unless it is complete; concurrent callers wait for one generator."""
        generate_once(self.dataset, lambda out: self._generate(out / "data" / DATASET), MARKER,
                      {"version": GEN_VERSION, **self.options})

    def iter_recordings(self) -> tp.Iterator[tp.Any]:
        if not self.is_prepared():
            raise StudyError(f"study 'synthetic_seeg': no generated data in {self.dataset}; "
                             "call SyntheticSeegStudy.prepare() first to generate it")
        return super().iter_recordings()

    # -- generation ---------------------------------------------------------------------------------------

    def words(self) -> list[str]:
        return [f"word{i:02d}" for i in range(self.options["n_words"])]

    def templates(self, subject: int) -> tuple[np.ndarray, np.ndarray]:
        """``(word_responses[n_words, n_channels, N_SAMPLES], shared[n_channels, N_SAMPLES])`` in uV, before
        jitter: zero on the contacts that do not respond."""
        opt = self.options
        rng = np.random.default_rng([opt["seed"], 1, subject])
        responsive = rng.permutation(opt["n_channels"])[:opt["n_responsive"]]
        t = TMIN + np.arange(N_SAMPLES) / SFREQ
        bumps = np.exp(-0.5 * ((t[None, :] - np.array(LATENCIES)[:, None]) / WIDTH) ** 2)  # (K, T)
        amps = rng.standard_normal((opt["n_words"], len(responsive), len(LATENCIES)))
        words = np.zeros((opt["n_words"], opt["n_channels"], N_SAMPLES))
        words[:, responsive] = amps @ bumps
        shared = np.zeros((opt["n_channels"], N_SAMPLES))
        shared[responsive] = rng.standard_normal((len(responsive), len(LATENCIES))) @ bumps
        rms = np.sqrt((words[:, responsive] ** 2).mean()) if len(responsive) else 1.0
        scale = 20.0 * opt["snr"] / max(rms, 1e-12)
        return words * scale, shared * scale

    def simulate_run(self, subject: int, run: int, variant: str) -> tuple[list[str], np.ndarray]:
        """``(labels, data[trials, channels, N_SAMPLES])`` in uV of one run; both variants share the trial order,
        the noise and the gains, and differ in latency jitter."""
        opt = self.options
        words, shared = self.templates(subject)
        rng = np.random.default_rng([opt["seed"], 2, subject, run])
        order = rng.permutation(np.repeat(np.arange(opt["n_words"]), opt["repeats"]))
        n, c = len(order), opt["n_channels"]
        background = self.background(rng, (n, c, N_SAMPLES))  # the same draws, in the same order, as before v2
        gains = rng.normal(1.0, 0.2, n)
        unit_jitter = rng.uniform(-1.0, 1.0, n)
        artefacts = np.flatnonzero(rng.uniform(size=n) < 0.02)
        spike_at = rng.integers(0, N_SAMPLES - 20, len(artefacts))
        spike_ch = rng.integers(0, c, len(artefacts))
        data = background
        for i, w in enumerate(order):
            shift = int(round(unit_jitter[i] * JITTER[variant] * SFREQ))
            data[i] += gains[i] * np.roll(words[w] + shared, shift, axis=-1)
        for trial, at, ch in zip(artefacts.tolist(), spike_at.tolist(), spike_ch.tolist()):
            data[trial, ch, at:at + 20] += 500.0 * np.hanning(20)
        return [self.words()[w] for w in order], data.astype(np.float32)

    def background(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """1/f-like AR(1) noise (about 30 uV), white noise (5 uV) and 50 Hz line noise (3 uV, random phase per
        row) of ``shape`` ``(..., channels, time)``."""
        from scipy.signal import lfilter

        n_times = shape[-1]
        data = lfilter([1.0], [1.0, -0.95], rng.standard_normal((*shape[:-1], n_times + 500)), axis=-1)[..., 500:]
        data *= 30.0 / data.std()
        data += 5.0 * rng.standard_normal(shape)
        t = np.arange(n_times) / SFREQ
        data += 3.0 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi, (*shape[:-1], 1)))
        return data

    def simulate_continuous(self, subject: int) -> np.ndarray:
        """``data[channels, continuous_seconds * 1 kHz]`` in uV: background plus a random word every 3 to 4 s
        (module docstring)."""
        opt = self.options
        words, shared = self.templates(subject)
        rng = np.random.default_rng([opt["seed"], 3, subject])
        n_times = int(round(opt["continuous_seconds"] * SFREQ))
        data = self.background(rng, (opt["n_channels"], n_times))
        at = int(rng.uniform(0.0, 1.0) * SFREQ)
        while at + N_SAMPLES <= n_times:
            shift = int(round(rng.uniform(-1.0, 1.0) * JITTER["unaligned"] * SFREQ))
            w = int(rng.integers(opt["n_words"]))
            data[:, at:at + N_SAMPLES] += rng.normal(1.0, 0.2) * np.roll(words[w] + shared, shift, axis=-1)
            at += int(rng.uniform(3.0, 4.0) * SFREQ)
        return data.astype(np.float32)

    def _write_continuous(self, out: Path, subject: int, names: list[str]) -> None:
        data = self.simulate_continuous(subject)
        folder = out / f"{subject + 1:03d}" / PRETRAIN[0] / PRETRAIN[1]
        folder.mkdir(parents=True)
        dump_release(AttrDict(ch_names=names), folder / "info")
        step = int(CONTINUOUS_FILE_SECONDS * SFREQ)
        for k, start in enumerate(range(0, data.shape[1], step)):
            piece = data[:, start:start + step]
            np.save(folder / f"{k}.npy", np.stack([piece, piece]), allow_pickle=False)

    def _generate(self, out: Path) -> None:
        opt = self.options
        names = channel_names(opt["n_channels"])
        for s in range(opt["n_subjects"]):
            for r in range(opt["n_runs"]):
                for variant in ("aligned", "unaligned"):
                    labels, data = self.simulate_run(s, r, variant)
                    folder = out / f"{s + 1:03d}" / TASK / f"run{r + 1}" / f"dataset.bipolar.default.{variant}"
                    folder.mkdir(parents=True)
                    items = [AttrDict(name=label, data_s=epoch, data_n=epoch) for label, epoch in zip(labels, data)]
                    dump_release(items, folder / "data")
                    dump_release(AttrDict(ch_names=names), folder / "info")
            if opt["continuous_seconds"] > 0:
                self._write_continuous(out, s, names)


__all__ = ["SyntheticSeegStudy", "channel_names", "dump_release"]
