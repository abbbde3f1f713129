"""Natural Speech (Broderick et al. 2018, Dryad 2019): 128-channel Biosemi EEG of 19 subjects listening to
an audiobook (The Old Man and the Sea), 20 runs of ~3 min each.

On disk: ``Subject{n}/Subject{n}_Run{r}.mat`` with ``eegData`` (samples x 128, µV, Biosemi 128 layout),
``mastoids`` (samples x 2) and ``fs`` (128); ``Stimuli/Text/Run{r}.mat`` with ``wordVec`` (cell of words),
``onset_time`` / ``offset_time`` (s from the run's audio onset = EEG sample 0) and ``sentence_boundaries``
(s, end time of each sentence). Blocks are sentences, uid = the sentence text.

The audiobook audio is not part of the public archive: give its folder with the ``audio`` option
(files ``audio_pattern``, default ``audio{run}.wav``) for audio features (mel, wav2vec). Without it the
sound events still point there and text-derived features (word onsets, phonemes ...) work.
"""

from __future__ import annotations

import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import quiet, require_file, sentence_blocks, sentence_id
from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import mne


def _load_mat(path: Path) -> dict[str, tp.Any]:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except (ValueError, OSError, NotImplementedError) as exc:
        raise StudyError(f"{path}: not a readable MATLAB v5 file ({exc})") from exc


class Broderick2019Recording(Recording):
    """One run of one subject."""

    def __init__(self, study: Broderick2019, subject: int, run: int) -> None:
        path = study.root / f"Subject{subject}" / f"Subject{subject}_Run{run}.mat"
        super().__init__(Broderick2019.name, str(subject), task=str(run), identity={"size": path.stat().st_size})
        self.path, self.run, self.study_ = path, run, study

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        mat = _load_mat(self.path)
        missing = [k for k in ("eegData", "fs") if k not in mat]
        if missing:
            raise StudyError(f"{self.path}: missing variable(s) {missing}")
        eeg = np.asarray(mat["eegData"], dtype=np.float64)
        if eeg.ndim != 2 or eeg.shape[1] != 128:
            raise StudyError(f"{self.path}: eegData must be samples x 128, got {eeg.shape}")
        montage = mne.channels.make_standard_montage("biosemi128")
        data, names, types = [eeg], list(montage.ch_names), ["eeg"] * 128
        if "mastoids" in mat:
            data.append(np.asarray(mat["mastoids"], dtype=np.float64).reshape(len(eeg), -1))
            names += [f"M{i + 1}" for i in range(data[-1].shape[1])]
            types += ["misc"] * data[-1].shape[1]
        raw = mne.io.RawArray(np.concatenate(data, axis=1).T * 1e-6, mne.create_info(names, float(mat["fs"]), types),
                              verbose="error")
        with quiet():
            raw.set_montage(montage, on_missing="ignore")
        return raw

    def _load_events(self) -> pd.DataFrame:
        st = self.study_
        path = require_file(st.root / "Stimuli" / "Text" / f"Run{self.run}.mat", Broderick2019.name,
                            "the stimulus folder Stimuli/Text of the Dryad archive holds the word timings")
        mat = _load_mat(path)
        missing = [k for k in ("wordVec", "onset_time", "offset_time", "sentence_boundaries") if k not in mat]
        if missing:
            raise StudyError(f"{path}: missing variable(s) {missing}")
        text = [str(w).strip() for w in np.atleast_1d(mat["wordVec"])]
        onset = np.atleast_1d(np.asarray(mat["onset_time"], dtype=float))
        offset = np.atleast_1d(np.asarray(mat["offset_time"], dtype=float))
        if not len(text) == len(onset) == len(offset):
            raise StudyError(f"{path}: wordVec, onset_time and offset_time differ in length")
        bounds = np.sort(np.atleast_1d(np.asarray(mat["sentence_boundaries"], dtype=float)))
        sentence = np.searchsorted(bounds, onset, side="right")  # sentence k ends at bounds[k]
        words = pd.DataFrame({"kind": "word", "onset": onset, "duration": np.clip(offset - onset, 0, None),
                              "text": text, "group": sentence}).query("text != ''")
        texts = words.groupby("group")["text"].apply(lambda s: " ".join(s))
        words["sentence_id"] = words["group"].map(texts).map(sentence_id)
        words["word_index"] = words.groupby("group").cumcount()
        blocks = sentence_blocks(words.assign(sentence_id=words["group"]), pad=st.block_pad)
        audio = st.audio_path(self.run)
        if audio is not None and audio.exists():
            import soundfile

            duration = soundfile.info(str(audio)).duration
        else:
            duration = float(offset.max()) + 0.5
        sound = pd.DataFrame([dict(kind="sound", onset=0.0, duration=duration, offset=0.0,
                                   filepath=str(audio if audio is not None else st.root / "audio" /
                                                st.audio_pattern.format(run=self.run)))])
        return pd.concat([words.drop(columns="group"), blocks, sound], ignore_index=True)


class Broderick2019(Study):
    """Natural Speech EEG.

    Parameters
    ----------
    root : the extracted Dryad archive (``Subject1`` ... and ``Stimuli``).
    audio : folder of the audiobook runs (not distributed); None = text features only.
    audio_pattern : file name of run ``run`` inside ``audio``.
    subjects, runs : keep only these numbers (None = all).
    block_pad : s before the first / after the last sentence of a run.
    """

    name = "broderick2019"
    modality = "eeg"
    device = "BioSemi ActiveTwo 128 channels (+2 mastoids), downsampled to 128 Hz"
    language = "en"
    paradigm = "passive listening to an audiobook (The Old Man and the Sea), 20 runs of ~180 s"
    licence = "CC0 1.0"
    url = "https://datadryad.org/stash/dataset/doi:10.5061/dryad.070jc"
    doi = "10.5061/dryad.070jc"
    description = ("Natural Speech dataset: 19 subjects x 20 runs of EEG during audiobook listening, with word "
                   "timings from forced alignment (19.2 h). The audio itself is not public.")

    def __init__(self, root: str | Path, audio: str | Path | None = None, audio_pattern: str = "audio{run}.wav",
                 subjects: tp.Sequence[int] | None = None, runs: tp.Sequence[int] | None = None,
                 block_pad: float = 1.0) -> None:
        super().__init__(Path(root).expanduser().resolve())
        self.audio = None if audio is None else Path(audio).expanduser().resolve()
        self.audio_pattern = audio_pattern
        self.subjects = None if subjects is None else {int(s) for s in subjects}
        self.runs = None if runs is None else {int(r) for r in runs}
        self.block_pad = float(block_pad)

    def audio_path(self, run: int) -> Path | None:
        """The audio file of ``run`` in the ``audio`` folder, or None without one."""
        return None if self.audio is None else self.audio / self.audio_pattern.format(run=run)

    def iter_recordings(self) -> tp.Iterator[Broderick2019Recording]:
        """Runs sorted by subject number then run number."""
        self.prepare()
        found = []
        for path in self.root.glob("Subject*/Subject*_Run*.mat"):
            m = re.fullmatch(r"Subject(\d+)_Run(\d+)\.mat", path.name)
            if m and path.parent.name == f"Subject{m.group(1)}":
                sub, run = int(m.group(1)), int(m.group(2))
                if (self.subjects is None or sub in self.subjects) and (self.runs is None or run in self.runs):
                    found.append((sub, run))
        if not found:
            raise StudyError(f"study 'broderick2019': no Subject*/Subject*_Run*.mat under {self.root}; point "
                             "paths.studies.broderick2019 to the extracted Dryad archive")
        for sub, run in sorted(found):
            yield Broderick2019Recording(self, sub, run)
