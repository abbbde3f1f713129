"""The synthetic study: generation of a BIDS dataset on disk and reading it back like a real study."""

from __future__ import annotations

import datetime
import io
import json
import os
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ...utils.hashing import content_hash
from ...utils.text import read_text
from .._common import bids_inputs, generate_once
from ..base import Recording, Study, StudyError
from . import brain, speech

if tp.TYPE_CHECKING:
    import mne

GEN_VERSION = "v2"  # bump whenever generation changes: old folders are then ignored
MARKER = "bm2_complete.json"
TASK = "listen"
STIMULI = "stimuli"
MIN_SFREQ = 100.0
EVENT_COLUMNS = ("onset", "duration", "trial_type", "sound", "word", "phoneme", "sentence_id", "word_index",
                 "block_uid")
EVENTS_JSON = {
    "trial_type": {"Description": "Kind of event (bm2 events schema)",
                   "Levels": {"sound": "a sentence's audio file starts playing",
                              "word": "onset of a word", "phoneme": "onset of a phoneme",
                              "block": "span of one sentence plus half of each neighbouring pause"}},
    "sound": {"Description": "Audio file played (sound events), relative to the dataset root"},
    "word": {"Description": "The word spoken (word events)"},
    "phoneme": {"Description": "ARPABET label without stress (phoneme events)"},
    "sentence_id": {"Description": "Content hash of the sentence text the event belongs to"},
    "word_index": {"Description": "Position of the word in its sentence, from 0 (word events)"},
    "block_uid": {"Description": "Text of the sentence a block spans (block events)"},
}


class SyntheticRecording(Recording):
    """One generated recording, read through mne-bids exactly like a downloaded study."""

    events_in_uid = True

    def __init__(self, bids_path: tp.Any, dataset: Path, subject: str, session: str) -> None:
        super().__init__(SyntheticStudy.name, subject, session, TASK,
                         identity={"generation": dataset.name,
                                   "file": str(bids_path.fpath.relative_to(dataset))})
        self.bids_path = bids_path
        self.dataset = dataset

    def input_files(self) -> dict[str, Path]:
        """The BIDS sidecars of the recording (channels.tsv, *_meg.json ...). The FIF file itself is identified
        by the generation parameters (the folder name): its bytes hold the time it was written."""
        files = bids_inputs(self.dataset, Path(self.bids_path.fpath))
        return {name: path for name, path in files.items() if not name.endswith(".fif")}

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne_bids

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mne_bids.read_raw_bids(self.bids_path, extra_params={"preload": False}, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        tsv = self.bids_path.copy().update(suffix="events", extension=".tsv").fpath
        table = pd.read_csv(io.StringIO(read_text(tsv)), sep="\t", na_values=["n/a"], keep_default_na=False)
        kind = table["trial_type"].astype(str)
        out = pd.DataFrame({"kind": kind, "onset": table["onset"].astype(float),
                            "duration": table["duration"].astype(float)})
        is_sound, is_word = kind.eq("sound"), kind.eq("word")
        sound = table["sound"].astype(object)
        out["filepath"] = sound.where(is_sound).map(lambda p: str(self.dataset / p), na_action="ignore")
        out["offset"] = pd.Series(0.0, index=table.index).where(is_sound)
        out["text"] = table["word"].astype(object).where(is_word, table["phoneme"].astype(object))
        out["sentence_id"] = table["sentence_id"].astype(object).where(is_word)
        out["word_index"] = table["word_index"].where(is_word)
        out["uid"] = table["block_uid"].astype(object).where(kind.eq("block"))
        return out


class SyntheticStudy(Study):
    """A simulated MEG listening experiment generated locally: trains and tests bm2 with no download.

    Parameters
    ----------
    root : folder holding generated datasets; each set of options lives in ``root/<GEN_VERSION>-<hash>``.
    n_subjects : number of subjects (ids ``"01"``, ``"02"`` ...).
    n_sessions : sessions per subject (ids ``"0"``, ``"1"`` ...), one recording each.
    n_sentences : size of the sentence corpus shared by all subjects.
    sentences_per_recording : sentences played in each recording, in the recording's own random order.
    sfreq : sampling rate of the MEG in Hz.
    snr : multiplier of the stimulus-driven field; at 1.0 its RMS during speech is about
        ``brain.EVOKED_RMS`` (75 fT) against ~150 fT of 1/f brain background.
    seed : seed of everything random; identical options give identical data.
    min_words, max_words : sentence length range in words.
    """

    name = "synthetic"
    modality = "meg"
    device = "simulated Neuromag-style 102 magnetometers"
    language = "en"
    paradigm = "passive listening to sentences"
    licence = "MIT"
    url = "generated"
    doi = "n/a (generated locally by bm2)"
    description = ("Simulated MEG of subjects listening to synthesised English-like sentences: latent sources "
                   "respond to the audio envelopes, words and phonemes; with 1/f background, line noise, "
                   "drifts and artefacts. Written as BIDS (FIF) with WAV stimuli.")

    def __init__(self, root: str | Path, n_subjects: int = 4, n_sessions: int = 2, n_sentences: int = 240,
                 sentences_per_recording: int = 60, sfreq: float = 600.0, snr: float = 1.0, seed: int = 0,
                 min_words: int = 4, max_words: int = 9) -> None:
        super().__init__(Path(root).expanduser().resolve())  # events carry absolute paths
        self._corpus: tuple[list[speech.SentenceAudio], list[np.ndarray]] | None = None
        self._model: brain.BrainModel | None = None
        if min(n_subjects, n_sessions, n_sentences, sentences_per_recording) < 1:
            raise ValueError("n_subjects, n_sessions, n_sentences and sentences_per_recording must be >= 1")
        if sfreq < MIN_SFREQ:  # the envelopes and response functions need this bandwidth
            raise ValueError(f"sfreq must be at least {MIN_SFREQ:g} Hz, got {sfreq}")
        self.options: dict[str, tp.Any] = {
            "n_subjects": int(n_subjects), "n_sessions": int(n_sessions), "n_sentences": int(n_sentences),
            "sentences_per_recording": int(min(sentences_per_recording, n_sentences)), "sfreq": float(sfreq),
            "snr": float(snr), "seed": int(seed), "min_words": int(min_words), "max_words": int(max_words)}

    @property
    def dataset(self) -> Path:
        """Folder of the dataset generated with these options."""
        return self.root / f"{GEN_VERSION}-{content_hash(self.options)}"

    def is_prepared(self) -> bool:
        """Whether the dataset of these options is complete on disk."""
        return (self.dataset / MARKER).is_file()

    def prepare(self) -> None:
        """Generate the dataset unless it is complete; concurrent callers wait for one generator."""
        generate_once(self.dataset, self._generate, MARKER, {"version": GEN_VERSION, **self.options})

    def iter_recordings(self) -> tp.Iterator[SyntheticRecording]:
        """Yield the recordings, sorted by subject then session, enumerated with mne-bids."""
        if not self.is_prepared():  # checked here, not in the generator, so the call itself fails
            raise StudyError(f"study 'synthetic': no generated data in {self.dataset}; "
                             "call SyntheticStudy.prepare() first to generate it")
        return self._iter_recordings()

    def _iter_recordings(self) -> tp.Iterator[SyntheticRecording]:
        import mne_bids

        root = self.dataset
        for subject in sorted(mne_bids.get_entity_vals(root, "subject")):
            for session in sorted(mne_bids.get_entity_vals(root / f"sub-{subject}", "session"), key=int):
                path = mne_bids.BIDSPath(root=root, subject=subject, session=session, task=TASK,
                                         datatype="meg", suffix="meg", extension=".fif")
                if path.fpath.is_file():
                    yield SyntheticRecording(path, root, subject, session)

    # -- generation ---------------------------------------------------------------------------------------

    def corpus(self) -> tuple[list[speech.SentenceAudio], list[np.ndarray]]:
        """The synthesised sentences and their normalised band envelopes (computed once, then kept)."""
        if self._corpus is None:
            opt = self.options
            texts = speech.make_sentences(opt["n_sentences"], np.random.default_rng([opt["seed"], 0]),
                                          opt["min_words"], opt["max_words"])
            sentences = [speech.synthesize(text, np.random.default_rng([opt["seed"], 10, i]))
                         for i, text in enumerate(texts)]
            envelopes = [brain.band_envelopes(sent.audio) for sent in sentences]
            scale = np.concatenate(envelopes).std(axis=0) + 1e-12  # corpus-wide, so every recording agrees
            self._corpus = sentences, [e / scale for e in envelopes]
        return self._corpus

    def simulate_recording(self, subject: int, session: int) -> tuple[mne.io.RawArray, pd.DataFrame]:
        """Generate one recording in memory (what :meth:`prepare` writes): the raw and its BIDS events table.

        ``subject`` and ``session`` are 0-based indices; the result depends only on them and the options.
        """
        seed = self.options["seed"]
        if self._model is None:
            self._model = brain.BrainModel(seed)
        subject_model = self._model.subject(np.random.default_rng([seed, 2, subject]))
        rng = np.random.default_rng([seed, 3, subject, session])
        raw, events = self._recording(*self.corpus(), subject_model, rng)
        raw.set_meas_date(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
                          + datetime.timedelta(days=7 * subject + session))
        return raw, events

    def _generate(self, out: Path) -> None:
        import mne_bids
        import soundfile
        from tqdm import tqdm

        opt = self.options
        (out / STIMULI).mkdir()
        for i, sent in enumerate(self.corpus()[0]):
            soundfile.write(out / STIMULI / f"sentence-{i:03d}.wav", sent.audio, speech.SAMPLE_RATE,
                            subtype="PCM_16")
        mne_bids.make_dataset_description(
            path=out, name="bm2 synthetic listening study", dataset_type="raw", authors=["bm2"],
            data_license="MIT", overwrite=True, verbose="error")
        recordings = [(s, k) for s in range(opt["n_subjects"]) for k in range(opt["n_sessions"])]
        quiet = True if os.environ.get("BM2_NO_PROGRESS") == "1" else None  # None: only on a terminal
        bar = tqdm(recordings, desc=f"generating synthetic/{self.dataset.name}", unit="recording", disable=quiet)
        for s, session in bar:
            raw, events = self.simulate_recording(s, session)
            path = mne_bids.BIDSPath(root=out, subject=f"{s + 1:02d}", session=str(session), task=TASK,
                                     datatype="meg")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mne_bids.write_raw_bids(raw, path, format="FIF", allow_preload=True, overwrite=True,
                                        verbose="error")
            tsv = path.copy().update(suffix="events", extension=".tsv").fpath
            events.to_csv(tsv, sep="\t", index=False, na_rep="n/a", float_format="%.7f")
            tsv.with_suffix(".json").write_text(json.dumps(EVENTS_JSON, indent=2))

    def _recording(self, sentences: list[speech.SentenceAudio], envelopes: list[np.ndarray],
                   subject: brain.SubjectModel, rng: np.random.Generator
                   ) -> tuple[mne.io.RawArray, pd.DataFrame]:
        """Lay sentences out on a timeline, simulate the MEG and build the BIDS events table."""
        import mne

        opt = self.options
        order = rng.permutation(len(sentences))[:opt["sentences_per_recording"]]
        onsets, t = [], round(rng.uniform(2.0, 3.0), 3)
        for i in order:
            onsets.append(t)
            t = float(np.ceil((t + sentences[i].duration + rng.uniform(1.5, 2.5)) * 1000) / 1000)  # ms grid
        ends = [on + sentences[i].duration for on, i in zip(onsets, order)]
        total = ends[-1] + rng.uniform(2.0, 3.0)
        # block boundaries: 1 s outside the first / last sentence, else the middle of each pause
        bounds = [onsets[0] - 1.0] + [(e + o) / 2 for e, o in zip(ends[:-1], onsets[1:])] + [ends[-1] + 1.0]
        rows: list[dict[str, tp.Any]] = []
        words, phonemes = [], []
        for j, (onset, i) in enumerate(zip(onsets, order)):
            sent = sentences[i]
            sid = content_hash(sent.text)
            rows.append({"onset": onset, "duration": sent.duration, "trial_type": "sound",
                         "sound": f"{STIMULI}/sentence-{i:03d}.wav", "sentence_id": sid})
            rows.append({"onset": bounds[j], "duration": bounds[j + 1] - bounds[j], "trial_type": "block",
                         "sentence_id": sid, "block_uid": sent.text})
            for k, (word, w_on, w_dur) in enumerate(sent.words):
                rows.append({"onset": onset + w_on, "duration": w_dur, "trial_type": "word", "word": word,
                             "sentence_id": sid, "word_index": k})
                words.append((onset + w_on, word))
            for label, p_on, p_dur in sent.phonemes:
                rows.append({"onset": onset + p_on, "duration": p_dur, "trial_type": "phoneme",
                             "phoneme": label, "sentence_id": sid})
                phonemes.append((onset + p_on, label))
        events = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
        rank = events["trial_type"].map({"block": 0, "sound": 1, "word": 2, "phoneme": 3})
        events = events.assign(_rank=rank).sort_values(["onset", "_rank"], kind="stable")
        events = events.drop(columns="_rank").reset_index(drop=True)
        events["word_index"] = events["word_index"].astype("Int64")
        sfreq = opt["sfreq"]
        stim = brain.Stimulus(onsets, [envelopes[i] for i in order], words, phonemes)
        data = brain.simulate(stim, subject, rng, sfreq, int(np.ceil(total * sfreq)) + 1, opt["snr"])
        raw = mne.io.RawArray(data, brain.magnetometer_info(sfreq), verbose="error")
        raw.orig_format = "single"  # mne-bids saves in this precision; float32 holds fT-scale data fine
        return raw, events

