"""Alice (Brennan & Hale 2019): EEG of 42 subjects (33 kept) listening to chapter one of Alice in Wonderland.

Layout of the Deep Blue Data archive (doi:10.7302/Z29C6VNH) once downloaded (``audio.zip`` and ``proc.zip``
extracted in place)::

    <root>/S01.mat ... S48.mat               one per subject (42 files), MATLAB v5 or v7.3 (HDF5): both read
    <root>/proc/S01.mat ...                  pre-processing parameters of each subject (MATLAB v5 read)
    <root>/AliceChapterOne-EEG.csv           one row per word of the story (2129 rows)
    <root>/audio/DownTheRabbitHoleFinal_SoundFile{1..12}.wav   the 12 audio segments

``S01.mat`` holds ``raw``, a FieldTrip raw struct: ``hdr`` (``Fs`` 500, ``nChans``, ``nSamples``, ``label``,
``chantype`` all 'eeg', ``chanunit`` all 'uV' ...), ``fsample`` 500, ``trial`` (a 1x1 cell: channels x samples
in µV, the whole continuous recording), ``time``, ``label`` and ``sampleinfo`` ``[1 nSamples]``. Labels: 60
electrodes named by their easycap-M10 number (``1`` ... ``61`` without ``29``) typed EEG with the positions of
that montage, ``VEOG`` typed EOG and, in most files, a copy of the audio (``AUD`` or ``Aux5``) typed misc
(so is any other label outside the montage).

``proc/S01.mat`` holds ``proc``: ``trl`` (a FieldTrip trial definition with ONE ROW PER WORD: begsample,
endsample, offset, then the variables named in ``varnames``, e.g. ``{'segment', 'tmin', 'Order'}``: the audio
segment 1-12, the word onset within it in s and the word's ``Order`` in the CSV; if ``varnames`` has as many
entries as ``trl`` has columns they name every column), ``impedence.bads`` and ``rejections.badchans`` (channel
labels, both put in ``raw.info['bads']``, which the preprocessing leaves out), ``tot_trials``, ``subject`` ...
Some subjects have fewer rows than the 2129 words (words missing from their recording).

Word timing. FieldTrip's ``begsample`` is 1-based and ``offset`` is the position of time zero (the word
onset) relative to ``begsample`` in samples, so the word starts at 1-based sample ``begsample - offset``, i.e.
at ``(begsample - offset - 1) / sfreq`` s from the first sample of the recording (``sampleinfo`` starts at 1:
the subject file is assumed to hold the recording from its first sample, as in the archive). ``trl`` rows are
joined to the CSV rows by ``Order`` (by row position when either lacks it, which requires equal counts). The
onset of each audio segment in the EEG is the median over its joined rows of (EEG onset - CSV ``onset``); every
CSV word of that segment is then placed at segment onset + CSV ``onset`` -- also the words without a ``trl``
row. A segment without any ``trl`` row is left out (with a logged warning). Sound events start at the segment
onsets; their duration is the wav file's (the audio is optional for text features).

Blocks are sentences (``Sentence`` column), uid = the sentence text. Subjects excluded by the authors
(:data:`EXCLUDED`) are skipped.
"""

from __future__ import annotations

import io
import logging
import typing as tp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.text import read_text
from ._common import quiet, require_file, sentence_blocks, sentence_id
from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

EXCLUDED = ("S02", "S24", "S26", "S27", "S30", "S32", "S34", "S35", "S36")
CSV = "AliceChapterOne-EEG.csv"
AUDIO = "audio/DownTheRabbitHoleFinal_SoundFile{}.wav"
N_SEGMENTS = 12
TRL_COLUMNS = ("begsample", "endsample", "offset")
#: Loader version: enters the recording uid (with the content of S??.mat and proc/S??.mat and the events, whose
#: audio files enter through their content), hence the caches derived from the events and bad channels.
FORMAT = 3
#: A segment whose rows disagree by more than this (s) on its onset in the EEG is reported (the join is suspect).
SPREAD_WARNING = 0.02


def _flat_cells(value: tp.Any) -> list[tp.Any]:
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _strings(value: tp.Any) -> list[str]:
    """The strings of a MATLAB cell / char array as loaded by scipy (``squeeze_me``); empty ones dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "U":
            return [str(v) for v in value.ravel() if str(v).strip()]
        if value.dtype == object:
            return [s for v in value.ravel(order="F") for s in _strings(v)]
    return []  # empty numeric array ([] in MATLAB) or anything else: no label


def read_fieldtrip_raw(path: Path, var: str = "raw") -> tuple[list[np.ndarray], list[str], float]:
    """(trials as channels x samples, labels, fsample) of a FieldTrip raw struct, MATLAB v5 or v7.3.

    The sampling rate is ``fsample``, or ``hdr.Fs`` where ``fsample`` is absent.
    """
    import h5py

    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if var not in f:
                raise StudyError(f"{path}: no variable {var!r} (found {list(f.keys())})")
            g = f[var]

            def cells(name: str) -> list[np.ndarray]:
                return [np.asarray(f[ref]) for ref in np.asarray(g[name]).ravel(order="F")]

            missing = [k for k in ("trial", "label") if k not in g]
            if missing:
                raise StudyError(f"{path}: FieldTrip struct {var!r} lacks {missing}")
            trials = [np.asarray(t, dtype=np.float64).T for t in cells("trial")]
            labels = ["".join(chr(int(c)) for c in np.asarray(lab).ravel()) for lab in cells("label")]
            if "fsample" in g:
                fs = np.asarray(g["fsample"])
            elif "hdr" in g and "Fs" in g["hdr"]:
                fs = np.asarray(g["hdr"]["Fs"])
            else:
                raise StudyError(f"{path}: FieldTrip struct {var!r} has neither 'fsample' nor 'hdr.Fs'")
            return trials, labels, float(fs.ravel()[0])
    from scipy.io import loadmat

    try:
        mat = loadmat(path, simplify_cells=False, squeeze_me=False, struct_as_record=False)
    except (ValueError, OSError, NotImplementedError) as exc:
        raise StudyError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if var not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise StudyError(f"{path}: no FieldTrip struct {var!r} (variables: {names})")
    raw = mat[var].ravel()[0]
    missing = [k for k in ("trial", "label") if not hasattr(raw, k)]
    if missing:
        raise StudyError(f"{path}: FieldTrip struct {var!r} lacks {missing}")
    trials = [np.atleast_2d(np.asarray(t, dtype=np.float64)) for t in _flat_cells(raw.trial)]
    labels = [str(np.asarray(lab).ravel()[0]) for lab in _flat_cells(raw.label)]
    if hasattr(raw, "fsample"):
        fs = np.asarray(raw.fsample)
    elif hasattr(raw, "hdr") and hasattr(np.asarray(raw.hdr).ravel()[0], "Fs"):
        fs = np.asarray(np.asarray(raw.hdr).ravel()[0].Fs)
    else:
        raise StudyError(f"{path}: FieldTrip struct {var!r} has neither 'fsample' nor 'hdr.Fs'")
    return trials, labels, float(fs.ravel()[0])


def channel_types(labels: tp.Sequence[str], montage_names: tp.Collection[str]) -> list[str]:
    """'eeg' for the labels of the montage (easycap-M10 numbers), 'eog' for ``*EOG*`` (``VEOG``), else 'misc'
    (the audio copy ``AUD`` / ``Aux5``, ``OPTO`` ...)."""
    return ["eeg" if lab in montage_names else "eog" if "EOG" in lab.upper() else "misc" for lab in labels]


@dataclass
class Proc:
    """The parts of a ``proc/S??.mat`` file the loader uses."""

    path: Path
    trl: pd.DataFrame  # one row per word; columns begsample, endsample, offset + the variables (varnames)
    bads: list[str]    # impedence.bads then rejections.badchans, without repeats


def _trl_columns(n_cols: int, varnames: list[str], path: Path) -> list[str]:
    if varnames and len(varnames) == n_cols:
        names = list(varnames)
        if not set(TRL_COLUMNS) <= set(names):
            raise StudyError(f"{path}: proc.varnames {varnames} names all {n_cols} trl columns but not "
                             f"{list(TRL_COLUMNS)}")
        return names
    if n_cols == len(TRL_COLUMNS) + len(varnames):
        return [*TRL_COLUMNS, *varnames]
    if not varnames and n_cols >= len(TRL_COLUMNS):
        return [*TRL_COLUMNS, *(f"column{i + 1}" for i in range(len(TRL_COLUMNS), n_cols))]
    raise StudyError(f"{path}: proc.trl has {n_cols} columns, which matches neither proc.varnames {varnames} "
                     f"nor {list(TRL_COLUMNS)} + varnames ({len(TRL_COLUMNS) + len(varnames)} columns)")


def read_proc(path: Path) -> Proc:
    """The per-word trial definition and bad channels of a ``proc/S??.mat`` file (MATLAB v5)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except NotImplementedError as exc:  # MATLAB v7.3
        raise StudyError(f"{path}: MATLAB v7.3 (HDF5) proc files are not supported; the archive's are v5 "
                         f"(re-save it in MATLAB with save(..., '-v7')) ({exc})") from exc
    except (ValueError, OSError) as exc:
        raise StudyError(f"{path}: not a readable MATLAB file ({exc})") from exc
    proc = mat.get("proc")
    if proc is None or not hasattr(proc, "_fieldnames"):
        names = [k for k in mat if not k.startswith("__")]
        raise StudyError(f"{path}: expected a struct 'proc' (variables: {names})")
    if getattr(proc, "trl", None) is None:
        raise StudyError(f"{path}: the struct 'proc' has no field 'trl' (fields: {proc._fieldnames}); it "
                         "should hold the FieldTrip trial definition, one row per word")
    try:
        trl = np.atleast_2d(np.asarray(proc.trl, dtype=float))
    except (TypeError, ValueError) as exc:
        raise StudyError(f"{path}: proc.trl is not a numeric matrix ({exc})") from exc
    if trl.ndim != 2 or trl.size == 0:
        raise StudyError(f"{path}: proc.trl must be a non-empty rows x columns matrix, got shape {trl.shape}")
    varnames = _strings(getattr(proc, "varnames", None))
    table = pd.DataFrame(trl, columns=_trl_columns(trl.shape[1], varnames, path))
    bads: list[str] = []
    for group, field in (("impedence", "bads"), ("rejections", "badchans")):
        for label in _strings(getattr(getattr(proc, group, None), field, None)):
            if label not in bads:
                bads.append(label)
    return Proc(path, table, bads)


def _column(table: pd.DataFrame, *names: str) -> str | None:
    """The first column of ``table`` named like one of ``names`` (case-insensitive)."""
    lower = {str(c).lower(): c for c in table.columns}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


class Brennan2019Recording(Recording):
    """One subject's session."""

    events_in_uid = True

    def __init__(self, study: Brennan2019, subject: str) -> None:
        path = study.root / f"{subject}.mat"
        proc = study.root / "proc" / f"{subject}.mat"
        super().__init__(Brennan2019.name, subject,
                         identity={"format": FORMAT, "options": {"block_pad": study.block_pad}})
        self.path = path
        self.proc_path = proc
        self.root = study.root
        self.pad = study.block_pad
        self._proc: Proc | None = None

    def input_files(self) -> dict[str, Path]:
        """The subject's signal and its proc file (bad channels)."""
        return {self.path.name: self.path, f"proc/{self.proc_path.name}": self.proc_path}

    def proc(self) -> Proc:
        """The subject's ``proc/S??.mat`` (read once)."""
        if self._proc is None:
            path = require_file(self.proc_path, Brennan2019.name,
                                "the per-subject trial definitions (proc/S??.mat, from proc.zip of the archive) give "
                                "the word onsets and bad channels")
            self._proc = read_proc(path)
        return self._proc

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        trials, labels, sfreq = read_fieldtrip_raw(self.path)
        if len(trials) != 1:
            raise StudyError(f"{self.path}: expected one continuous trial, found {len(trials)}")
        data = trials[0] * 1e-6  # µV -> V
        if data.shape[0] != len(labels):
            raise StudyError(f"{self.path}: {data.shape[0]} channels in trial{{1}} but {len(labels)} labels")
        montage = mne.channels.make_standard_montage("easycap-M10")
        types = channel_types(labels, set(montage.ch_names))
        if types.count("eeg") < 32:
            raise StudyError(f"{self.path}: only {types.count('eeg')} labels match the easycap-M10 montage")
        raw = mne.io.RawArray(data, mne.create_info(labels, sfreq, types), verbose="error")
        with quiet():
            raw.set_montage(montage, on_missing="ignore")
        if self.proc_path.exists():
            raw.info["bads"] = [b for b in self.proc().bads if b in raw.ch_names]
        else:
            logger.warning("%s: no %s; no bad channels marked", self.subject, self.proc_path)
        return raw

    def word_onsets(self) -> tuple[pd.DataFrame, dict[int, float]]:
        """The CSV table with the EEG onset of each word (column ``eeg_onset``, s; NaN for the words of
        segments without any trial row) and the onset of each segment in the EEG (s)."""
        table = self.root_table()
        proc = self.proc()
        trl = proc.trl
        sfreq = float(self.raw().info["sfreq"])
        # FieldTrip: begsample is 1-based, offset = samples from begsample to time zero (the word onset)
        eeg = ((trl["begsample"] - trl["offset"] - 1) / sfreq).to_numpy()
        trl_order, csv_order = _column(trl, "Order"), _column(table, "Order")
        if trl_order is not None and csv_order is not None:
            index = pd.Index(table[csv_order].round().astype(int))
            if not index.is_unique:
                raise StudyError(f"{self.root / CSV}: column {csv_order!r} has repeated values")
            rows = index.get_indexer(trl[trl_order].round().astype(int))
            if (rows < 0).any():
                unknown = sorted(set(trl[trl_order][rows < 0].astype(int)))
                raise StudyError(f"{proc.path}: trl column {trl_order!r} has values missing from the "
                                 f"{csv_order!r} column of {CSV}: {unknown[:5]}")
        elif len(trl) == len(table):
            rows = np.arange(len(table))
        else:
            raise StudyError(f"{proc.path}: {len(trl)} trl rows but {len(table)} words in {CSV}, and no 'Order' "
                             f"column in both (trl columns {list(trl.columns)}) to join them")
        joined = pd.DataFrame({"segment": table["Segment"].to_numpy()[rows],
                               "lag": eeg - table["onset"].to_numpy(dtype=float)[rows]})
        onsets = {int(s): float(v) for s, v in joined.groupby("segment")["lag"].median().items()}
        spread = (joined["lag"] - joined["segment"].map(onsets)).abs()
        if len(spread) and spread.max() > SPREAD_WARNING:
            logger.warning("%s: word onsets of one segment disagree by up to %.3f s on its onset in the EEG; "
                           "check the join of %s to %s", self.subject, spread.max(), proc.path, CSV)
        missing = sorted(set(table["Segment"].astype(int)) - set(onsets))
        if missing:
            logger.warning("%s: no trial row in %s for audio segment(s) %s; their words are left out",
                           self.subject, proc.path, missing)
        out = table.assign(eeg_onset=table["Segment"].map(onsets) + table["onset"])
        return out, onsets

    def _load_events(self) -> pd.DataFrame:
        import soundfile

        table, onsets = self.word_onsets()
        end = float(self.raw().times[-1])
        table = table[table["eeg_onset"].notna()]
        outside = (table["eeg_onset"] < 0) | (table["eeg_onset"] > end)
        if outside.any():
            logger.warning("%s: %d word(s) fall outside the recording and are left out", self.subject,
                           int(outside.sum()))
            table = table[~outside]
        words = pd.DataFrame({"kind": "word", "onset": table["eeg_onset"],
                              "duration": (table["offset"] - table["onset"]).clip(lower=0),
                              "text": table["Word"].astype(str)})
        sent = table["Sentence"]
        texts = words.groupby(sent, sort=False)["text"].apply(lambda s: " ".join(s))
        words["sentence_id"] = sent.map(texts).map(sentence_id)
        words["word_index"] = words.groupby(sent, sort=False).cumcount()
        sounds = []
        for seg, onset in sorted(onsets.items()):
            path = self.root / AUDIO.format(seg)
            if path.exists():
                duration = soundfile.info(str(path)).duration
            else:  # the audio is optional for text features; span the segment's words
                duration = float(table.loc[table["Segment"] == seg, "offset"].max()) + 0.5
            skip = max(0.0, -onset)  # a segment started before the recording: its sound starts later in the file
            if duration > skip:
                sounds.append(dict(kind="sound", onset=onset + skip, duration=duration - skip, filepath=str(path),
                                   offset=skip))
        blocks = sentence_blocks(words.assign(sentence_id=sent.astype(str)), pad=self.pad, end=end)
        return pd.concat([words, pd.DataFrame(sounds), blocks], ignore_index=True)

    def root_table(self) -> pd.DataFrame:
        """``AliceChapterOne-EEG.csv``: one row per word."""
        path = require_file(self.root / CSV, Brennan2019.name, "download it from the Deep Blue archive")
        table = pd.read_csv(io.StringIO(read_text(path)))  # UTF-8, else Latin-1 with a warning
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
    device = "actiCHamp, 60 EEG channels (easycap-M10 layout) + VEOG + audio channel, 500 Hz"
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
