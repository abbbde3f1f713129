"""Alice (Brennan & Hale 2019): EEG of 42 subjects (33 kept) listening to chapter one of Alice in Wonderland.

On disk (Deep Blue archive): ``S01.mat`` ... (FieldTrip ``raw`` structs: ``trial`` (cell of channels x
samples, µV), ``time``, ``label``, ``fsample`` 500; MATLAB v5, or v7.3 / HDF5, both read), ``proc/S01.mat``
(``proc.trl``: FieldTrip trial definitions, one row per audio segment: begsample, endsample, offset[, segment]),
``AliceChapterOne-EEG.csv`` (``Word``, ``Segment`` 1-12, ``onset`` / ``offset`` in s within the segment,
``Sentence``, ``Position`` ...) and ``audio/DownTheRabbitHoleFinal_SoundFile{1..12}.wav``.

Channels named by easycap-M10 numbers are EEG (positions from that montage); ``VEOG`` is EOG and ``AUD``
(the audio copy) misc. Blocks are sentences (``Sentence`` column), uid = the sentence text.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import quiet, require_file, sentence_blocks, sentence_id
from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import mne

EXCLUDED = ("S02", "S24", "S26", "S27", "S30", "S32", "S34", "S35", "S36")
CSV = "AliceChapterOne-EEG.csv"
AUDIO = "audio/DownTheRabbitHoleFinal_SoundFile{}.wav"
N_SEGMENTS = 12


def _flat_cells(value: tp.Any) -> list[tp.Any]:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def read_fieldtrip_raw(path: Path, var: str = "raw") -> tuple[list[np.ndarray], list[str], float]:
    """(trials as channels x samples, labels, fsample) of a FieldTrip raw struct, MATLAB v5 or v7.3."""
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if var not in f:
                raise StudyError(f"{path}: no variable {var!r} (found {list(f.keys())})")
            g = f[var]

            def cells(name: str) -> list[np.ndarray]:
                return [np.asarray(f[ref]) for ref in np.asarray(g[name]).ravel(order="F")]

            trials = [np.asarray(t, dtype=np.float64).T for t in cells("trial")]
            labels = ["".join(chr(int(c)) for c in np.asarray(lab).ravel()) for lab in cells("label")]
            return trials, labels, float(np.asarray(g["fsample"]).ravel()[0])
    from scipy.io import loadmat

    try:
        mat = loadmat(path, simplify_cells=False, squeeze_me=False, struct_as_record=False)
    except (ValueError, OSError) as exc:
        raise StudyError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if var not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise StudyError(f"{path}: no FieldTrip struct {var!r} (variables: {names})")
    raw = mat[var].ravel()[0]
    trials = [np.atleast_2d(np.asarray(t, dtype=np.float64)) for t in _flat_cells(raw.trial)]
    labels = [str(np.asarray(lab).ravel()[0]) for lab in _flat_cells(raw.label)]
    return trials, labels, float(np.asarray(raw.fsample).ravel()[0])


class Brennan2019Recording(Recording):
    """One subject's session."""

    def __init__(self, study: Brennan2019, subject: str) -> None:
        path = study.root / f"{subject}.mat"
        super().__init__(Brennan2019.name, subject, identity={"size": path.stat().st_size})
        self.path = path
        self.root = study.root
        self.pad = study.block_pad

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        trials, labels, sfreq = read_fieldtrip_raw(self.path)
        if len(trials) != 1:
            raise StudyError(f"{self.path}: expected one continuous trial, found {len(trials)}")
        data = trials[0] * 1e-6  # µV -> V
        montage = mne.channels.make_standard_montage("easycap-M10")
        types = ["eeg" if lab in montage.ch_names else "eog" if "EOG" in lab.upper() else "misc" for lab in labels]
        if types.count("eeg") < 32:
            raise StudyError(f"{self.path}: only {types.count('eeg')} labels match the easycap-M10 montage")
        raw = mne.io.RawArray(data, mne.create_info(labels, sfreq, types), verbose="error")
        with quiet():
            raw.set_montage(montage, on_missing="ignore")
        return raw

    def _segment_onsets(self, sfreq: float) -> dict[int, float]:
        from scipy.io import loadmat

        proc = require_file(self.root / "proc" / f"{self.subject}.mat", Brennan2019.name,
                            "the per-subject trial definitions (proc/S??.mat from the archive) give the audio "
                            "segment onsets")
        mat = loadmat(proc, squeeze_me=True, struct_as_record=False)
        if "proc" not in mat or not hasattr(mat["proc"], "trl"):
            raise StudyError(f"{proc}: expected a struct 'proc' with a field 'trl'")
        trl = np.atleast_2d(np.asarray(mat["proc"].trl, dtype=float))
        segments = trl[:, 3].astype(int) if trl.shape[1] > 3 else np.arange(1, len(trl) + 1)
        # FieldTrip: begsample is 1-based; offset = position of t=0 relative to begsample (samples)
        return {int(s): float(b - 1 - off) / sfreq for s, b, off in zip(segments, trl[:, 0], trl[:, 2])}

    def _load_events(self) -> pd.DataFrame:
        import soundfile

        table = self.root_table()
        onsets = self._segment_onsets(float(self.raw().info["sfreq"]))
        missing = sorted(set(table["Segment"]) - set(onsets))
        if missing:
            raise StudyError(f"proc/{self.subject}.mat: no trial for audio segment(s) {missing}")
        onset = table["Segment"].map(onsets) + table["onset"]
        words = pd.DataFrame({"kind": "word", "onset": onset, "duration": (table["offset"] - table["onset"]).clip(0),
                              "text": table["Word"].astype(str)})
        sent = table["Sentence"]
        texts = words.groupby(sent, sort=False)["text"].apply(lambda s: " ".join(s))
        words["sentence_id"] = sent.map(texts).map(sentence_id)
        words["word_index"] = words.groupby(sent, sort=False).cumcount()
        sounds = []
        for seg in sorted(set(table["Segment"])):
            path = self.root / AUDIO.format(seg)
            if path.exists():
                duration = soundfile.info(str(path)).duration
            else:  # the audio is optional for text features; span the segment's words
                duration = float(table.loc[table["Segment"] == seg, "offset"].max()) + 0.5
            sounds.append(dict(kind="sound", onset=onsets[seg], duration=duration, filepath=str(path), offset=0.0))
        blocks = sentence_blocks(words.assign(sentence_id=sent.astype(str)), pad=self.pad)
        return pd.concat([words, pd.DataFrame(sounds), blocks], ignore_index=True)

    def root_table(self) -> pd.DataFrame:
        path = require_file(self.root / CSV, Brennan2019.name, "download it from the Deep Blue archive")
        table = pd.read_csv(path)
        needed = [c for c in ("Word", "Segment", "onset", "offset", "Sentence") if c not in table.columns]
        if needed:
            raise StudyError(f"{path}: missing column(s) {needed}")
        return table


class Brennan2019(Study):
    """Alice in Wonderland EEG; excluded subjects (per the authors) are skipped.

    Parameters
    ----------
    root : folder with ``S??.mat``, ``proc/``, ``audio/`` and ``AliceChapterOne-EEG.csv``.
    subjects : keep only these (e.g. ``[S01, S03]``); None = all but the excluded ones.
    block_pad : s before the first / after the last sentence.
    """

    name = "brennan2019"
    modality = "eeg"
    device = "actiCHamp 61 channels (easycap-M10 layout, incl. VEOG) + audio channel, 500 Hz"
    language = "en"
    paradigm = "passive listening to chapter one of Alice's Adventures in Wonderland (12 min, 12 segments)"
    licence = "CC BY 4.0"
    url = "https://deepblue.lib.umich.edu/data/concern/data_sets/bg257f92t"
    doi = "10.7302/Z29C6VNH"
    description = ("EEG of 42 subjects (33 kept) listening to an audiobook chapter; word onsets and "
                   "linguistic predictors in AliceChapterOne-EEG.csv (6.7 h kept).")

    def __init__(self, root: str | Path, subjects: tp.Sequence[str] | None = None, block_pad: float = 1.0) -> None:
        super().__init__(Path(root).expanduser().resolve())
        self.subjects = None if subjects is None else {str(s) for s in subjects}
        self.block_pad = float(block_pad)

    def iter_recordings(self) -> tp.Iterator[Brennan2019Recording]:
        """Subjects ``S??.mat`` in name order, without the excluded ones."""
        self.prepare()
        names = sorted(p.stem for p in self.root.glob("S*.mat") if p.stem[1:].isdigit())
        kept = [n for n in names if n not in EXCLUDED and (self.subjects is None or n in self.subjects)]
        if not kept:
            raise StudyError(f"study 'brennan2019': no subject file S??.mat under {self.root} (excluded: "
                             f"{list(EXCLUDED)}); point paths.studies.brennan2019 to the Alice archive")
        for name in kept:
            yield Brennan2019Recording(self, name)
