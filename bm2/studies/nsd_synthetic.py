"""A synthetic ECoG speech-production study in the Neural Speech Decoding release's layout, generated locally.

:meth:`NSDSynthetic.prepare` writes ``root/<GEN_VERSION>-<hash of the options>/SY01.h5 ...`` with the release's keys
(:mod:`bm2.studies.nsd2024`: ``ecog_alldataset``, ``wave_re_alldataset``, ``wave_re_spec_alldataset``,
``start_ind_re_valid_alldataset``, ``end_ind_re_valid_alldataset``, ``label_alldataset``,
``noisesample_re_alldataset``, and the TRUE f0 / formants in ``pitch_re_alldataset`` / ``formant_re_alldataset``
where the release has Praat's; plus bm2's ``task_alldataset``; the power spectrogram ``_amp_`` is left out, as
the layout allows, to halve the disk) and reads them back with the ``nsd2024`` loader.

The simulation (everything seeded by ``seed``):

- **Words**: ``n_words`` words, each with its own family of speech-parameter trajectories: 2 to 4 segments
  (syllable-like), each unvoiced with probability ``unvoiced`` (default 0.3; every word keeps one voiced segment),
  with its targets (f0 in the sex's range, F1-F6 inside the sex's formant ranges, formant amplitudes, noise formant
  4-8 kHz, noise share, loudness), a base duration of 0.4-0.75 s. Voiced segments have the voicing
  ``1 - voiced_noise`` (default 0.92), unvoiced ones 0.12. A trial of a word jitters the durations (+-10 %), the
  targets (+-3 %), f0 (+-5 %) and the loudness (+-2 dB); per frame (125 Hz) the piecewise targets are smoothed
  (Gaussian, 24 ms) under a 40-ms onset / offset ramp, so the same word sounds alike across trials and different
  words differently.
- **Audio**: each trial spoken by bm2's formant synthesizer (:func:`bm2.models.formant_synth`, untrained: fixed
  triangular formant shapes, the speaker's ``sex``) with 10 silent frames on each side, laid into a continuous
  16-kHz track of white background noise at ``background_db`` per bin (default -70 dB: under the spectrogram's
  -50 dB floor, so silence is the constant -1 and only the words are heard; -35 dB, the synthesizer's own default
  and this study's before v3, puts a random draw in every silent bin), the words' power raised by ``gain_db``
  (default 0 dB: voiced segments at -28..-20 dB, unvoiced at -36..-28 dB before the formant filters); 140-180
  frames (1.1-1.4 s) of silence between trials. ``start`` / ``end`` are the frames where the word's loudness ramp
  crosses half its height. The stored spectrogram is the release's
  (:func:`bm2.features.nsd_spec.release_spectrogram`) of that track.
- **ECoG**: an 8 x 8 grid (64 electrodes, row-major) of high-gamma envelopes at 125 Hz. Seven speech features per
  frame (log loudness, voicing, f0, F1, F2, noise share, and a pre-onset "preparation" bump 0.3-0.1 s before each
  word) drive the electrodes through spatially smooth tuning maps (each feature has one or two Gaussian blobs on
  the grid, 1.5 electrodes wide). Columns 0-3 are "motor" (precentral): they **lead** the speech by 40-100 ms;
  columns 4-7 "auditory" (superior temporal): they **lag** it by 50-150 ms. Envelope = softplus(gain x drive) with
  per-electrode gains, plus AR(1) noise (phi 0.9) and white noise scaled by ``1 / snr``; ``n_bad`` bad
  electrodes: the first flat, the others ten times noisier with slow drifts.
- **Tasks**: trial ``i`` belongs to task ``TASKS[i % 5]``, so the last 50 trials hold the last 10 of each task
  (the original's ``TestNum``) and ``dset.split.last_n_per=task`` gives the same test set.

Default size (``n_trials=200``, one participant): about 6.5 min of recording, ~85 MB on disk, generated in about
10-30 s on a loaded 2-core machine (most of it the synthesizer).
"""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import numpy as np

from ..utils.hashing import content_hash
from ._common import GeneratedStudy
from .nsd2024 import HOP, N_BINS, NSD2024, SAMPLE_RATE, TASKS

logger = logging.getLogger(__name__)

GEN_VERSION = "v3"  # bump whenever generation changes
MARKER = "bm2_complete.json"
MARGIN = 10  # silent frames synthesized on each side of a word
WORDS = ("apple", "river", "garden", "window", "yellow", "basket", "pencil", "monkey", "candle", "ladder",
         "ocean", "forest", "button", "rabbit", "kitchen", "paper", "silver", "tiger", "dinner", "blanket",
         "cactus", "dragon", "helmet", "island", "jacket", "lemon", "magnet", "napkin", "pepper", "rocket",
         "saddle", "tunnel", "violin", "wagon", "zebra", "anchor", "bottle", "camera", "donkey", "feather",
         "guitar", "hammer", "insect", "jungle", "kettle", "lizard", "mitten", "needle", "orange", "parrot")
FEATURES = ("loudness", "voicing", "f0", "f1", "f2", "noise", "preparation")
MOTOR_LEAD_FRAMES = (5, 12)  # 40-100 ms
AUDITORY_LAG_FRAMES = (6, 19)  # 50-150 ms
#: default power gain of the words (dB): see NSDSynthetic.true_parameter_pcc and the README's measurement
GAIN_DB = 0.0
#: default background level (dB per bin): under the spectrogram's -50 dB floor, so silence is constant (-1)
BACKGROUND_DB = -70.0


def write_release(path: str | Path, ecog: np.ndarray, wave: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  labels: tp.Sequence[str], spec: np.ndarray | None = None, noise: np.ndarray | None = None,
                  tasks: tp.Sequence[str] | None = None, pitch: np.ndarray | None = None,
                  formant: np.ndarray | None = None) -> None:
    """Write one participant's file with the release's keys: ``ecog`` (T, E) float32, ``wave`` (T x 128,) float32,
    ``spec`` (T, 256) float32, trial frames int64, labels as UTF-8 bytes (and bm2's per-trial tasks), the optional
    ``pitch`` (T,) and ``formant`` (T, 6) tracks in Hz."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("ecog_alldataset", data=np.asarray(ecog, dtype=np.float32))
        f.create_dataset("wave_re_alldataset", data=np.asarray(wave, dtype=np.float32))
        f.create_dataset("start_ind_re_valid_alldataset", data=np.asarray(starts, dtype=np.int64))
        f.create_dataset("end_ind_re_valid_alldataset", data=np.asarray(ends, dtype=np.int64))
        f.create_dataset("label_alldataset", data=np.array([w.encode("utf-8") for w in labels], dtype="S"))
        if spec is not None:
            f.create_dataset("wave_re_spec_alldataset", data=np.asarray(spec, dtype=np.float32))
        if noise is not None:
            f.create_dataset("noisesample_re_alldataset", data=np.asarray(noise, dtype=np.float32))
        if pitch is not None:
            f.create_dataset("pitch_re_alldataset", data=np.asarray(pitch, dtype=np.float32))
        if formant is not None:
            f.create_dataset("formant_re_alldataset", data=np.asarray(formant, dtype=np.float32))
        if tasks is not None:
            f.create_dataset("task_alldataset", data=np.array([t.encode("utf-8") for t in tasks], dtype="S"))


def _smooth(x: np.ndarray, sigma: float, axis: int = -1) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(x, sigma, axis=axis, mode="nearest")


class WordFamily:
    """The trajectory family of one word: segments with their targets (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, sex: str, unvoiced: float = 0.3, voiced_noise: float = 0.08
                 ) -> None:
        """``unvoiced``: probability that a segment is unvoiced; ``voiced_noise``: ``1 - voicing`` of the voiced
        ones (:class:`NSDSynthetic`)."""
        from ..models.formant_synth import F0_RANGES, FORMANT_RANGES, NOISE_FORMANT_RANGE

        n = int(rng.integers(2, 5))
        self.duration = float(rng.uniform(0.4, 0.75))  # s
        weights = rng.uniform(0.6, 1.4, n)
        self.fractions = weights / weights.sum()
        self.voiced = rng.random(n) < 1.0 - unvoiced
        self.voiced[int(rng.integers(n))] = True  # every word has a vowel
        lo, hi = F0_RANGES[sex]
        self.f0 = rng.uniform(lo + 0.1 * (hi - lo), hi - 0.3 * (hi - lo), (n, 2))  # start / end of each segment
        ranges = np.array(FORMANT_RANGES[sex])
        self.formants = np.sort(rng.uniform(ranges[:, 0], ranges[:, 1], (n, 6)), axis=1)
        amp = np.array([0.45, 0.3, 0.14, 0.06, 0.03, 0.02]) * rng.uniform(0.7, 1.3, (n, 6))
        self.amps = amp / amp.sum(axis=1, keepdims=True)
        self.noise_hz = rng.uniform(*NOISE_FORMANT_RANGE, n)
        self.noise_bw = rng.uniform(800.0, 3000.0, n)
        self.noise_amp = np.where(self.voiced, rng.uniform(0.05, 0.2, n), rng.uniform(0.5, 0.9, n))
        self.voiced_noise = float(voiced_noise)
        self.loudness_db = np.where(self.voiced, rng.uniform(-28.0, -20.0, n), rng.uniform(-36.0, -28.0, n))

    def trial(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], int]:
        """``(params, n_spoken)``: per-frame parameters ``[T]`` / ``[T, 6]`` of one trial, with :data:`MARGIN`
        silent frames on each side, and the number of spoken frames between them."""
        n_spoken = max(8, int(round(self.duration * (1 + 0.1 * rng.standard_normal()) * 125)))
        weights = self.fractions * rng.uniform(0.9, 1.1, len(self.fractions))
        bounds = np.round(np.cumsum(np.r_[0.0, weights / weights.sum()]) * n_spoken).astype(int)
        seg = np.searchsorted(bounds[1:], np.arange(n_spoken), side="right").clip(0, len(self.fractions) - 1)
        within = (np.arange(n_spoken) - bounds[seg]) / np.maximum(bounds[seg + 1] - bounds[seg], 1)
        jitter = 1 + 0.03 * rng.standard_normal(6)
        f0 = (self.f0[seg, 0] + (self.f0[seg, 1] - self.f0[seg, 0]) * within) * (1 + 0.05 * rng.standard_normal())
        track = {
            "f0_hz": f0,
            "voicing": np.where(self.voiced[seg], 1.0 - self.voiced_noise, 0.12),
            "formant_hz": self.formants[seg] * jitter,
            "formant_amp": self.amps[seg],
            "noise_formant_hz": self.noise_hz[seg],
            "noise_formant_bw_hz": self.noise_bw[seg],
            "noise_amp": self.noise_amp[seg],
            "loudness_db": self.loudness_db[seg] + 2.0 * rng.standard_normal(),
        }
        total = n_spoken + 2 * MARGIN
        out: dict[str, np.ndarray] = {}
        for key, value in track.items():
            padded = np.concatenate([np.repeat(value[:1], MARGIN, axis=0), value,
                                     np.repeat(value[-1:], MARGIN, axis=0)], axis=0)
            out[key] = _smooth(padded.astype(np.float64), 3.0, axis=0)
        ramp = np.zeros(total)
        ramp[MARGIN:MARGIN + n_spoken] = 1.0
        ramp = np.clip(_smooth(ramp, 2.0), 0.0, 1.0)
        out["formant_hz"] = np.sort(out["formant_hz"], axis=1)
        out["formant_amp"] = out["formant_amp"] / out["formant_amp"].sum(axis=1, keepdims=True)
        out["loudness"] = 10.0 ** (out.pop("loudness_db") / 10.0) * ramp
        out["envelope"] = ramp
        return out, n_spoken


class NSDSynthetic(GeneratedStudy, NSD2024):
    """Simulated ECoG speech production in the nsd2024 release's layout (module docstring).

    Parameters
    ----------
    root : folder of generated datasets; each set of options lives in ``root/<GEN_VERSION>-<hash>``.
    n_subjects : participants (files ``SY01.h5`` ...), each with its own electrodes' tuning.
    n_trials : trials per participant (at least 60: 50 test trials plus training).
    n_words : distinct words (at most 50), trial ``i`` says word ``i % n_words`` in a shuffled order.
    sex : the simulated speakers' sex (``female`` / ``male``): the synthesizer's f0 and formant ranges.
    snr : scale of the speech-driven envelopes against the noise.
    gain_db : power gain (dB) of the spoken words, on top of their loudness (voiced segments -28..-20 dB, unvoiced
        -36..-28 dB); the ECoG does not depend on it. Default :data:`GAIN_DB` (0); more clamps bins at +22.5 dB.
    unvoiced : probability that a segment is unvoiced (in [0, 1]; each word keeps one voiced segment).
    voiced_noise : noise share ``1 - voicing`` of voiced segments (in [0, 1]).
    background_db : level (dB per bin) of the white background noise. The default (:data:`BACKGROUND_DB`, -70)
        lies under the spectrogram's -50 dB floor: silence is then constant and trivially predictable, which is
        what lifts :meth:`true_parameter_pcc` (a background at -35 dB is a random draw in every silent bin).
        These four options shape how predictable the audio is from its parameters (the README's measurement).
    n_bad : bad electrodes per participant.
    seed : seed of everything random; identical options give identical files.
    subjects, and the block options : as for ``nsd2024``.
    """

    gen_version = GEN_VERSION
    marker = MARKER
    name = "nsd_synthetic"
    modality = "ecog"
    device = "simulated 8 x 8 ECoG grid, high-gamma envelopes at 125 Hz"
    language = "en"
    paradigm = "speech production of single words (simulated), the spoken audio synthesized at 16 kHz"
    licence = "MIT"
    url = "generated"
    doi = "n/a (generated locally by bm2)"
    description = ("Simulated ECoG speech production: words spoken by bm2's formant synthesizer from smooth "
                   "per-word parameter trajectories, and an 8 x 8 grid of high-gamma envelopes encoding those "
                   "parameters (motor leads, auditory lags, spatial tuning, noise, bad electrodes), written in the "
                   "nsd2024 release's HDF5 layout and read by its loader.")
    downloadable = False

    def __init__(self, root: str | Path, n_subjects: int = 1, n_trials: int = 200, n_words: int = 40,
                 sex: str = "female", snr: float = 1.0, n_bad: int = 3, seed: int = 0, gain_db: float = GAIN_DB,
                 unvoiced: float = 0.3, voiced_noise: float = 0.08, background_db: float = BACKGROUND_DB,
                 subjects: tp.Sequence[str] | None = None, block_before: int = 80, block_after: int = 63,
                 block_min_after_onset: int = 96) -> None:
        if (n_subjects < 1 or n_trials < 60 or not 1 <= n_words <= len(WORDS) or n_bad < 0 or snr <= 0
                or not 0.0 <= unvoiced <= 1.0 or not 0.0 <= voiced_noise <= 1.0):
            raise ValueError(f"studies.nsd_synthetic: need n_subjects >= 1, n_trials >= 60 (50 test trials plus "
                             f"training), 1 <= n_words <= {len(WORDS)}, n_bad >= 0, snr > 0 and unvoiced, "
                             f"voiced_noise in [0, 1]; got n_subjects={n_subjects}, n_trials={n_trials}, "
                             f"n_words={n_words}, n_bad={n_bad}, snr={snr}, unvoiced={unvoiced}, "
                             f"voiced_noise={voiced_noise}")
        if sex not in ("female", "male"):
            raise ValueError(f"studies.nsd_synthetic.sex must be female or male, got {sex!r}")
        self.options: dict[str, tp.Any] = {"n_subjects": int(n_subjects), "n_trials": int(n_trials),
                                           "n_words": int(n_words), "sex": sex, "snr": float(snr),
                                           "n_bad": int(n_bad), "seed": int(seed), "gain_db": float(gain_db),
                                           "unvoiced": float(unvoiced), "voiced_noise": float(voiced_noise),
                                           "background_db": float(background_db)}
        super().__init__(Path(root).expanduser().resolve(), pattern="SY*.h5", subjects=subjects, sex=sex,
                         block_before=block_before, block_after=block_after,
                         block_min_after_onset=block_min_after_onset)

    @property
    def dataset(self) -> Path:
        """Folder of the dataset generated with these options."""
        return self.root / f"{GEN_VERSION}-{content_hash(self.options)}"

    @property
    def data_root(self) -> Path:
        return self.dataset


    # -- generation ---------------------------------------------------------------------------------------

    def _generate(self, out: Path) -> None:
        opt = self.options
        logger.info("generating nsd_synthetic in %s: %d participant(s) x %d trials of %d words", self.dataset,
                    opt["n_subjects"], opt["n_trials"], opt["n_words"])
        families = self._families()
        words = list(WORDS[:opt["n_words"]])
        for s in range(opt["n_subjects"]):
            sub_rng = np.random.default_rng([opt["seed"], s + 1])
            data = self.simulate(sub_rng, families, words)
            write_release(out / f"SY{s + 1:02d}.h5", **data)

    def simulate(self, rng: np.random.Generator, families: list[WordFamily], words: list[str]) -> dict[str, tp.Any]:
        """One participant: the arrays :func:`write_release` takes."""
        return self._render(rng, families, words)[0]

    def _render(self, rng: np.random.Generator, families: list[WordFamily], words: list[str]
                ) -> tuple[dict[str, tp.Any], list[tuple[dict[str, np.ndarray], int]], list[int]]:
        """One participant: the arrays of :func:`write_release`, each trial's ``(params, n_spoken)`` and its first
        synthesized frame."""
        opt = self.options
        n_trials = opt["n_trials"]
        order = np.concatenate([rng.permutation(len(words)) for _ in range(-(-n_trials // len(words)))])[:n_trials]
        trials = [families[w].trial(rng) for w in order]
        gaps = rng.integers(140, 181, n_trials + 1)
        starts, ends, offsets = [], [], []
        t = int(gaps[0])
        for (_, n_spoken), gap in zip(trials, gaps[1:]):
            offsets.append(t - MARGIN)
            starts.append(t)
            ends.append(t + n_spoken)
            t += n_spoken + int(gap)
        n_frames = t
        tracks = self._frame_tracks(trials, offsets, n_frames)
        wave = self._audio(rng, trials, offsets, n_frames)
        spec = self._spectrogram(wave, n_frames)
        # the pre-trial baseline: 30-40 frames before each onset, past the onset ramp (smoothed over a few frames)
        # and the STFT window, which still reach frames 5-15 before it (audible once the background is quiet)
        noise = np.concatenate([spec[max(a - 40, 0):a - 30] for a in starts[:20]], axis=0)
        ecog = self._ecog(rng, tracks, np.array(starts))
        pitch, formant = self._true_tracks(trials, offsets, n_frames)
        return dict(ecog=ecog, wave=wave, starts=np.array(starts), ends=np.array(ends),
                    labels=[words[w] for w in order], spec=spec, noise=noise,
                    tasks=[TASKS[i % len(TASKS)] for i in range(n_trials)], pitch=pitch, formant=formant
                    ), trials, offsets

    def _families(self) -> list[WordFamily]:
        """Every word's trajectory family, drawn from :attr:`options` ``seed`` (the same for every participant)."""
        opt = self.options
        rng = np.random.default_rng(opt["seed"])
        return [WordFamily(rng, opt["sex"], opt["unvoiced"], opt["voiced_noise"]) for _ in range(opt["n_words"])]

    @staticmethod
    def _true_tracks(trials: list[tuple[dict[str, np.ndarray], int]], offsets: list[int], n_frames: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The release's pitch ``(T,)`` and formant ``(T, 6)`` tracks (Hz, 0 where undefined), here the TRUE ones:
        f0 where a word is spoken (its loudness ramp above half) and voiced (voicing above 0.5), F1-F6 where it is
        spoken. The release stores Praat's estimates there; Praat on this audio finds f0 almost exactly but F1-F3
        only roughly (r 0.6-0.7 against the truth, README), so the true tracks make the a2a stage's formant
        supervision (``dset.extra_targets=[speech,praat]``) exact; ``features.praat.source=computed`` uses Praat."""
        pitch = np.zeros(n_frames, dtype=np.float32)
        formant = np.zeros((n_frames, 6), dtype=np.float32)
        for (params, _), offset in zip(trials, offsets):
            span = np.arange(offset, offset + len(params["f0_hz"]))
            spoken = params["envelope"] > 0.5
            voiced = spoken & (params["voicing"] > 0.5)
            pitch[span[voiced]] = params["f0_hz"][voiced]
            formant[span[spoken]] = params["formant_hz"][spoken]
        return pitch, formant

    def true_parameter_pcc(self, subject: int = 0) -> dict[str, float]:
        """How predictable the generated audio is from its speech parameters: participant ``subject``'s data is
        simulated again (in memory, identical to its file) and bm2's untrained synthesizer is fed each trial's TRUE
        parameters (with :attr:`options` ``gain_db`` and ``background_db``); its spectrogram of every synthesized
        trial span (the word and :data:`MARGIN` frames each side) is compared with the stored one, as the
        reconstruction task scores PCC (Pearson r of each bin over all frames of all trials, averaged over bins).
        Returns ``pcc`` (noise drawn), ``pcc_expected_noise`` (the expected noise power: no draw), ``clamped`` and
        ``floor`` (shares of the
        stored spectrogram's values at the +22.5 dB ceiling and at the -50 dB floor within the spans). Roughly what
        a perfect speech encoder can score: the power-mode synthesizer misses the spectrogram of its own waveform
        where its formant gains vanish (the analysis window's leakage from nearby harmonics fills those bins in the
        waveform's spectrogram), most of what remains below 1 once silence is constant; learned formant shapes
        can recover part of it."""
        import torch
        from torchmetrics.functional import pearson_corrcoef

        from ..features.nsd_spec import MAX_DB, NOISE_DB
        from ..models.formant_synth import FormantSynthesizer

        opt = self.options
        families = self._families()
        data, trials, offsets = self._render(np.random.default_rng([opt["seed"], subject + 1]), families,
                                             list(WORDS[:opt["n_words"]]))
        spec = data["spec"]  # (T, 256) in [-1, 1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            synth = FormantSynthesizer(sex=opt["sex"], background_db=opt["background_db"])
        gain = 10.0 ** (opt["gain_db"] / 10.0)
        keys = ("f0_hz", "loudness", "voicing", "formant_hz", "formant_amp", "noise_formant_hz",
                "noise_formant_bw_hz", "noise_amp")
        outs: dict[bool, list[torch.Tensor]] = {False: [], True: []}
        targets = []
        generator = torch.Generator().manual_seed(opt["seed"] + 1)
        for (params, _), offset in zip(trials, offsets):
            batch = {k: torch.from_numpy(params[k][None].astype(np.float32)) for k in keys}
            batch["loudness"] = batch["loudness"] * gain
            for expected in (False, True):
                with torch.no_grad():
                    out = synth(batch, waveform=False, generator=generator, expected_noise=expected)["output"]
                outs[expected].append(out[0].T.double())  # (frames, 256)
            targets.append(torch.from_numpy(spec[offset:offset + len(params["f0_hz"])]).double())
        target = torch.cat(targets)
        result = {}
        for expected, name in ((False, "pcc"), (True, "pcc_expected_noise")):
            result[name] = float(np.nanmean(pearson_corrcoef(torch.cat(outs[expected]), target).numpy()))
        top = (MAX_DB - NOISE_DB - 1e-3) / (MAX_DB - NOISE_DB) * 2.0 - 1.0
        result["clamped"] = float((target >= top).double().mean())
        result["floor"] = float((target <= -top).double().mean())
        return result

    def _frame_tracks(self, trials: list[tuple[dict[str, np.ndarray], int]], offsets: list[int], n_frames: int
                      ) -> dict[str, np.ndarray]:
        """The speech features driving the electrodes, ``{name: [n_frames]}`` (0 outside speech)."""
        tracks = {k: np.zeros(n_frames) for k in ("loud", "env", "voicing", "f0", "f1", "f2", "noise")}
        for (params, _), offset in zip(trials, offsets):
            span = slice(offset, offset + len(params["f0_hz"]))
            env = params["envelope"]
            tracks["env"][span] = env
            tracks["loud"][span] = np.log10(params["loudness"] + 1e-6) + 6.0  # 0 in silence, ~3.5 in speech
            tracks["voicing"][span] = params["voicing"] * env
            tracks["f0"][span] = params["f0_hz"] * env
            tracks["f1"][span] = params["formant_hz"][:, 0] * env
            tracks["f2"][span] = params["formant_hz"][:, 1] * env
            tracks["noise"][span] = params["noise_amp"] * env
        return tracks

    def _audio(self, rng: np.random.Generator, trials: list[tuple[dict[str, np.ndarray], int]],
               offsets: list[int], n_frames: int) -> np.ndarray:
        """The continuous 16-kHz track: background noise, each trial's synthesized word laid in its span."""
        import torch

        from ..features.nsd_spec import stft_length
        from ..models.formant_synth import FormantSynthesizer

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            synth = FormantSynthesizer(sex=self.options["sex"], background_db=self.options["background_db"])
        class Zero(torch.nn.Module):
            def forward(self, z: torch.Tensor) -> torch.Tensor:
                return torch.zeros_like(z)

        # The untrained background MLP is residual with a near-zero last layer (white noise plus ~1e-3 of it);
        # its 128-channel pass over every sample is most of the synthesis time, so the plain white noise is used.
        synth.background = Zero()  # type: ignore[assignment]
        energy = float(torch.hann_window(stft_length(), periodic=True).square().sum())
        level = float(np.sqrt(float(synth.profile[0]) / energy))  # the background's std in the waveform
        wave = (level * rng.standard_normal(n_frames * HOP)).astype(np.float32)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        keys = ("f0_hz", "loudness", "voicing", "formant_hz", "formant_amp", "noise_formant_hz",
                "noise_formant_bw_hz", "noise_amp")
        order = np.argsort([len(p["f0_hz"]) for p, _ in trials])
        for chunk in np.array_split(order, max(1, len(order) // 16)):
            length = max(len(trials[i][0]["f0_hz"]) for i in chunk)
            batch = {}
            for key in keys:  # pad with the last frame (silent: the loudness ramp is 0 there)
                batch[key] = torch.from_numpy(np.stack([
                    np.concatenate([trials[i][0][key], np.repeat(trials[i][0][key][-1:],
                                                                 length - len(trials[i][0][key]), axis=0)])
                    for i in chunk]).astype(np.float32))
            batch["loudness"] = batch["loudness"] * 10.0 ** (self.options["gain_db"] / 10.0)
            with torch.no_grad():
                out = synth(batch, generator=generator)["waveform"].numpy()
            for row, i in enumerate(chunk):
                n = len(trials[i][0]["f0_hz"]) * HOP
                wave[offsets[i] * HOP:offsets[i] * HOP + n] = out[row, :n]
        return wave

    @staticmethod
    def _spectrogram(wave: np.ndarray, n_frames: int) -> np.ndarray:
        """The release spectrogram of the track, ``(T, 256)`` as the release stores it."""
        from ..features.nsd import chunked_release_spectrogram

        class _Track:
            sample_rate, n_samples = SAMPLE_RATE, len(wave)

            @staticmethod
            def read(start: int = 0, stop: int | None = None) -> np.ndarray:
                return wave[start:stop]

        spec = chunked_release_spectrogram(_Track(), n_frames)
        assert spec.shape[0] == N_BINS
        return np.ascontiguousarray(spec.T)

    def _ecog(self, rng: np.random.Generator, tracks: dict[str, np.ndarray], starts: np.ndarray) -> np.ndarray:
        """``(T, 64)`` high-gamma envelopes (module docstring)."""
        n_frames = len(tracks["loud"])
        speaking = tracks["env"] > 0.5
        features = []
        for key in ("loud", "voicing", "f0", "f1", "f2", "noise"):
            x = tracks[key].copy()
            if key in ("f0", "f1", "f2"):  # deviations from the speaker's mean while speaking
                mean = x[speaking].mean() if speaking.any() else 0.0
                x = np.where(tracks["env"] > 0, x - mean * tracks["env"], 0.0)
            features.append(x / max(float(x.std()), 1e-9))
        preparation = np.zeros(n_frames)
        for a in starts:
            preparation[max(a - 38, 0):max(a - 12, 0)] = 1.0  # 0.3-0.1 s before the word
        features.append(_smooth(preparation, 4.0) / max(float(_smooth(preparation, 4.0).std()), 1e-9))
        x = np.stack(features)  # [K, T]
        rows, cols = np.divmod(np.arange(64), 8)
        pos = np.stack([rows, cols], axis=1).astype(float)
        motor = cols < 4
        weights = np.zeros((64, len(features)))
        for k in range(len(features)):
            for _ in range(int(rng.integers(1, 3))):
                region = rng.random() < 0.5
                centre = np.array([rng.uniform(0, 7), rng.uniform(0, 3) if region else rng.uniform(4, 7)])
                weights[:, k] += rng.uniform(0.6, 1.2) * rng.choice([-1, 1]) * np.exp(
                    -((pos - centre) ** 2).sum(axis=1) / (2 * 1.5 ** 2))
        delays = np.where(motor, -rng.integers(*MOTOR_LEAD_FRAMES, 64), rng.integers(*AUDITORY_LAG_FRAMES, 64))
        drive = np.empty((64, n_frames))
        for e in range(64):
            d = int(delays[e])  # ECoG at t reflects the speech at t - d (d < 0: the electrode leads)
            shifted = np.roll(x, d, axis=1)
            if d > 0:
                shifted[:, :d] = 0.0
            elif d < 0:
                shifted[:, d:] = 0.0
            drive[e] = weights[e] @ shifted
        gain = rng.uniform(0.7, 1.3, 64)[:, None]
        signal = np.log1p(np.exp(gain * drive)) * self.options["snr"]
        from scipy.signal import lfilter

        noise = lfilter([np.sqrt(1 - 0.81)], [1.0, -0.9], rng.standard_normal((64, n_frames)), axis=1)  # AR(1)
        ecog = signal + 0.6 * noise + 0.4 * rng.standard_normal((64, n_frames))
        bad = rng.choice(64, self.options["n_bad"], replace=False)
        for j, e in enumerate(bad):
            if j == 0:
                ecog[e] = 0.0
            else:
                drift = np.cumsum(rng.standard_normal(n_frames)) * 0.05
                ecog[e] = 10.0 * rng.standard_normal(n_frames) + drift
        return ecog.T.astype(np.float32)


__all__ = ["NSDSynthetic", "WORDS", "WordFamily", "write_release"]
