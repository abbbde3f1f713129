"""Natural Speech (Broderick et al. 2018, Dryad 2019): 128-channel Biosemi EEG of 19 subjects listening to
an audiobook (The Old Man and the Sea), 20 runs of ~3 min each.

The Dryad download (doi:10.5061/dryad.070jc) is one zip holding five inner zips, one per experiment
(``Cocktail Party.zip``, ``N400.zip``, ``Natural Speech - Reverse.zip``, ``Natural Speech.zip``,
``Speech in Noise.zip``). ``python -m scripts.download broderick2019`` saves it as
``<root>/broderick2019_dryad.zip``, extracts it into ``<root>`` and then extracts ``Natural Speech.zip`` next
to itself, which gives::

    <root>/Natural Speech/EEG/Subject{n}/Subject{n}_Run{r}.mat     eegData (samples x 128), mastoids
                                                                  (samples x 2), fs (128)
    <root>/Natural Speech/Stimuli/Text/Run{r}.mat                 wordVec (cell of words), onset_time /
                                                                  offset_time (s), sentence_boundaries (s)
    <root>/Natural Speech/Stimuli/Envelopes/audio{r}_128Hz.mat    env (not used)

The data folder is looked for in these layouts, in order (:data:`LAYOUTS`): ``<root>/Natural Speech`` (the
download), ``<root>`` itself being ``Natural Speech`` (``<root>/EEG/Subject*``), ``<root>/*/Natural Speech``
(the archive extracted inside a folder of its own) and the older flat layout ``<root>/Subject*`` with
``<root>/Stimuli``. The first one holding ``Subject{n}/Subject{n}_Run{r}.mat`` files is used.

Assumed, as the files carry no channel names, units nor time stamps: ``eegData`` columns are the Biosemi 128
electrodes in their standard order (A1 ... D32, positions of mne's ``biosemi128`` montage) in µV; ``mastoids``
become two misc channels ``M1``, ``M2``; ``onset_time`` / ``offset_time`` are seconds from the run's audio
onset, which is EEG sample 0. Sentence ``k`` ends at ``sentence_boundaries[k]`` (sorted); blocks are
sentences, uid = the sentence text.

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

DATA_DIR = "Natural Speech"
#: (description, glob of the folder holding Subject*/ under the root); the stimuli are in ``Stimuli`` next to
#: the ``EEG`` folder, or inside the root for the flat layout.
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("<root>/Natural Speech/EEG/Subject*/ (as downloaded)", f"{DATA_DIR}/EEG"),
    ("<root>/EEG/Subject*/ (root = the Natural Speech folder)", "EEG"),
    ("<root>/*/Natural Speech/EEG/Subject*/ (archive extracted in a subfolder)", f"*/{DATA_DIR}/EEG"),
    ("<root>/Subject*/ with <root>/Stimuli/ (flat)", "."),
)
RUN_GLOB = "Subject*/Subject*_Run*.mat"
#: Loader version: enters the recording uid (with the content of the run file and the events).
FORMAT = 2


def _load_mat(path: Path) -> dict[str, tp.Any]:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True)
    except (ValueError, OSError, NotImplementedError) as exc:
        raise StudyError(f"{path}: not a readable MATLAB v5 file ({exc})") from exc


def _run_key(path: Path) -> tuple[int, int] | None:
    """(subject, run) of ``Subject{n}/Subject{n}_Run{r}.mat``, None for any other path."""
    m = re.fullmatch(r"Subject(\d+)_Run(\d+)\.mat", path.name)
    if m is None or path.parent.name != f"Subject{m.group(1)}":
        return None
    return int(m.group(1)), int(m.group(2))


class Broderick2019Recording(Recording):
    """One run of one subject."""

    events_in_uid = True

    def __init__(self, study: Broderick2019, subject: int, run: int) -> None:
        eeg, _ = study.data_dirs()
        path = eeg / f"Subject{subject}" / f"Subject{subject}_Run{run}.mat"
        # the identity leaves the layout out: the same files give the same uid wherever they are (the events
        # enter through their content, the audio files through theirs)
        super().__init__(Broderick2019.name, str(subject), task=str(run),
                         identity={"format": FORMAT, "options": {"block_pad": study.block_pad,
                                                                 "audio_pattern": study.audio_pattern}})
        self.path, self.run, self.study_ = path, run, study

    def input_files(self) -> dict[str, Path]:
        return {f"{self.path.parent.name}/{self.path.name}": self.path}

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
        path = require_file(st.data_dirs()[1] / "Text" / f"Run{self.run}.mat", Broderick2019.name,
                            "the stimulus folder Stimuli/Text of the Natural Speech archive holds the word timings")
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
    root : where the Dryad archive was extracted (holding ``Natural Speech``), the ``Natural Speech`` folder
        itself, or a flat folder with ``Subject1`` ... and ``Stimuli`` (see :data:`LAYOUTS`).
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
        self._dirs: tuple[Path, Path] | None = None

    def data_dirs(self) -> tuple[Path, Path]:
        """(folder holding ``Subject{n}/``, stimulus folder holding ``Text/``) of the first layout of
        :data:`LAYOUTS` with run files; a :class:`StudyError` listing the layouts searched if none has any."""
        if self._dirs is None:
            for _, pattern in LAYOUTS:
                for folder in sorted(self.root.glob(pattern)) if "*" in pattern else [self.root / pattern]:
                    if any(_run_key(p) is not None for p in folder.glob(RUN_GLOB)):
                        folder = folder.resolve()
                        stimuli = folder / "Stimuli" if pattern == "." else folder.parent / "Stimuli"
                        self._dirs = (folder, stimuli)
                        return self._dirs
            searched = "; ".join(desc for desc, _ in LAYOUTS)
            raise StudyError(f"study 'broderick2019': no Subject{{n}}/Subject{{n}}_Run{{r}}.mat under {self.root} "
                             f"in any known layout (searched: {searched}); point paths.studies.broderick2019 to "
                             "the folder where the Dryad archive and its 'Natural Speech.zip' were extracted")
        return self._dirs

    def audio_path(self, run: int) -> Path | None:
        """The audio file of ``run`` in the ``audio`` folder, or None without one."""
        return None if self.audio is None else self.audio / self.audio_pattern.format(run=run)

    def iter_recordings(self) -> tp.Iterator[Broderick2019Recording]:
        """Runs sorted by subject number then run number."""
        self.prepare()
        eeg, _ = self.data_dirs()
        found = []
        for path in eeg.glob(RUN_GLOB):
            key = _run_key(path)
            if key is not None:
                sub, run = key
                if (self.subjects is None or sub in self.subjects) and (self.runs is None or run in self.runs):
                    found.append((sub, run))
        if not found:
            subjects = None if self.subjects is None else sorted(self.subjects)
            runs = None if self.runs is None else sorted(self.runs)
            raise StudyError(f"study 'broderick2019': no Subject{{n}}/Subject{{n}}_Run{{r}}.mat under {eeg} for "
                             f"subjects={subjects} and runs={runs}")
        for sub, run in sorted(found):
            yield Broderick2019Recording(self, sub, run)
