"""A generic BIDS study: any MEG / EEG / iEEG dataset whose ``*_events.tsv`` carries the stimulus annotations.

Configured entirely by options (``studies.bids.*``): which recordings (``subject`` / ``session`` / ``task``
filters, ``datatype``), which tsv columns hold the event kind, word, sound file, phoneme, sentence id and
word index (``columns``), how kinds are named (``kinds``), and how blocks are defined (``blocks``):

* ``sentence``: one block per run of words sharing the sentence column, uid = the words joined by spaces;
* ``sound``: one block per sound event, uid = the sound file path;
* ``column:NAME``: one block per run of rows sharing the value of column NAME, uid = that value.

Sound paths are taken relative to the BIDS root (then to ``root/stimuli``). Raw files are read with mne-bids.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import pandas as pd

from .base import Recording, Study, StudyError
from ._common import quiet, sentence_blocks, sentence_id, to_arpabet

if tp.TYPE_CHECKING:
    import mne

DATATYPES = {"meg": "meg", "eeg": "eeg", "ieeg": "ecog"}  # BIDS datatype -> bm2 modality
DEFAULT_COLUMNS = {"kind": "trial_type", "word": "word", "sound": "sound", "phoneme": "phoneme",
                   "sentence_id": "sentence_id", "word_index": "word_index", "sound_offset": None}
DEFAULT_KINDS = {"word": "word", "phoneme": "phoneme", "sound": "sound"}


def _as_list(value: tp.Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


class BidsRecording(Recording):
    """One raw file of the BIDS dataset and its events.tsv."""

    def __init__(self, study: BidsStudy, bids_path: tp.Any) -> None:
        ent = bids_path.entities
        super().__init__(study.name, ent["subject"], ent.get("session") or "0", ent.get("task") or "0",
                         identity={"root": study.root.name, "file": str(bids_path.fpath.relative_to(study.root)),
                                   "run": ent.get("run"), "acq": ent.get("acquisition")})
        self.bids_path = bids_path
        self.study_ = study

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne_bids

        with quiet():
            return mne_bids.read_raw_bids(self.bids_path, extra_params={"preload": False}, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        st = self.study_
        tsv = self.bids_path.copy().update(suffix="events", extension=".tsv").fpath
        if not tsv.exists():
            raise StudyError(f"study 'bids': missing {tsv}; every recording needs an events.tsv with the "
                             "stimulus annotations (see studies.bids.columns)")
        table = pd.read_csv(tsv, sep="\t", na_values=["n/a"], keep_default_na=False)
        col = st.columns
        needed = [c for c in ("onset", "duration", col["kind"]) if c not in table.columns]
        if needed:
            raise StudyError(f"{tsv}: missing column(s) {needed}; set studies.bids.columns.kind to the column "
                             f"holding the event kind (columns are {list(table.columns)})")

        def get(name: str) -> pd.Series:
            c = col.get(name)
            if c is None or c not in table.columns:
                return pd.Series([None] * len(table), index=table.index, dtype=object)
            return table[c]

        raw_kind = table[col["kind"]].astype(str)
        kind = pd.Series(None, index=table.index, dtype=object)
        for bm2_kind, value in st.kinds.items():
            kind[raw_kind.eq(str(value))] = bm2_kind
        out = pd.DataFrame({"kind": kind, "onset": table["onset"].astype(float),
                            "duration": table["duration"].astype(float).fillna(0.0)})
        is_word, is_phone, is_sound = kind.eq("word"), kind.eq("phoneme"), kind.eq("sound")
        if is_word.any() and col.get("word") not in table.columns:
            raise StudyError(f"{tsv}: no word column {col.get('word')!r}; set studies.bids.columns.word")
        out["text"] = get("word").astype(object).where(is_word)
        phones = get("phoneme").map(to_arpabet)
        out.loc[is_phone, "text"] = phones[is_phone]
        out = out[~(is_phone & phones.isna())]  # silences and unknown labels are not phoneme classes
        out["filepath"] = get("sound").where(is_sound).map(self._sound_path, na_action="ignore")
        offsets = pd.to_numeric(get("sound_offset"), errors="coerce").fillna(0.0)
        out["offset"] = offsets.where(is_sound)
        words = out[out.kind.eq("word")].copy()
        sent = get("sentence_id").astype(object)
        words["group"] = sent[words.index].astype(str) if col.get("sentence_id") in table.columns else "all"
        texts = words.groupby("group", sort=False)["text"].apply(lambda s: " ".join(map(str, s)))
        words["sentence_id"] = words["group"].map(texts).map(sentence_id)
        index = pd.to_numeric(get("word_index"), errors="coerce")
        if col.get("word_index") in table.columns and index[words.index].notna().all():
            words["word_index"] = index[words.index].astype(int)
        else:
            words["word_index"] = words.groupby("group", sort=False).cumcount()
        out = pd.concat([out[~out.kind.eq("word")], words.drop(columns="group")])
        out = out[out.kind.notna()]
        return pd.concat([out, self._blocks(out, words, table, tsv)], ignore_index=True)

    def _blocks(self, out: pd.DataFrame, words: pd.DataFrame, table: pd.DataFrame, tsv: Path) -> pd.DataFrame:
        mode = self.study_.blocks
        if mode == "sentence":
            if words.empty:
                raise StudyError(f"{tsv}: blocks='sentence' needs word events")
            return sentence_blocks(words.drop(columns="sentence_id").rename(columns={"group": "sentence_id"}),
                                   pad=self.study_.block_pad)
        if mode == "sound":
            sounds = out[out.kind.eq("sound")]
            if sounds.empty:
                raise StudyError(f"{tsv}: blocks='sound' needs sound events")
            return pd.DataFrame({"kind": "block", "onset": sounds.onset, "duration": sounds.duration,
                                 "uid": sounds.filepath.map(lambda p: Path(p).name)})
        name = mode.split(":", 1)[1]
        if name not in table.columns:
            raise StudyError(f"{tsv}: block column {name!r} not found (columns are {list(table.columns)})")
        rows = table.assign(_end=table.onset + table.duration.fillna(0.0)).dropna(subset=[name])
        runs = (rows[name] != rows[name].shift()).cumsum()
        spans = rows.groupby(runs).agg(onset=("onset", "min"), end=("_end", "max"), uid=(name, "first"))
        return pd.DataFrame({"kind": "block", "onset": spans.onset, "duration": spans.end - spans.onset,
                             "uid": spans.uid.astype(str)})

    def _sound_path(self, sound: tp.Any) -> str:
        path = Path(str(sound))
        for candidate in (path, self.study_.root / path, self.study_.root / "stimuli" / path):
            if candidate.is_absolute() and candidate.exists():
                return str(candidate)
        return str(self.study_.root / path)


class BidsStudy(Study):
    """Any BIDS MEG / EEG / iEEG dataset, usable by configuration alone (see the module docstring).

    Parameters
    ----------
    root : the BIDS root.
    subject, session, task : an id or a list of ids to keep (None = all).
    datatype : ``meg``, ``eeg`` or ``ieeg`` (None = whichever is found).
    columns : tsv column names, by role: kind, word, sound, phoneme, sentence_id, word_index, sound_offset.
    kinds : value of the kind column for each bm2 kind (word, phoneme, sound).
    blocks : ``sentence``, ``sound`` or ``column:NAME`` (see above).
    block_pad : s before the first / after the last sentence (``blocks=sentence``).
    """

    name = "bids"
    modality = "eeg"  # the class default; an instance takes the modality of its ``datatype``
    device = "any (read from the BIDS sidecars)"
    language = "any"
    paradigm = "listening (any paradigm whose events.tsv annotates sounds / words)"
    licence = "that of the dataset"
    url = "https://bids.neuroimaging.io"
    doi = "10.1038/sdata.2016.44"
    description = "Generic reader of BIDS MEG / EEG / iEEG datasets with stimulus annotations in events.tsv."

    def __init__(self, root: str | Path, subject: tp.Any = None, session: tp.Any = None, task: tp.Any = None,
                 datatype: str | None = None, columns: dict[str, str | None] | None = None,
                 kinds: dict[str, str] | None = None, blocks: str = "sentence", block_pad: float = 1.0) -> None:
        super().__init__(Path(root).expanduser().resolve())
        if datatype is not None and datatype not in DATATYPES:
            raise ValueError(f"studies.bids.datatype must be one of {list(DATATYPES)} or null, got {datatype!r}")
        if blocks not in ("sentence", "sound") and not str(blocks).startswith("column:"):
            raise ValueError(f"studies.bids.blocks must be 'sentence', 'sound' or 'column:NAME', got {blocks!r}")
        self.subjects, self.sessions, self.tasks = _as_list(subject), _as_list(session), _as_list(task)
        self.datatype = datatype
        if datatype:
            self.modality = DATATYPES[datatype]  # type: ignore[misc]  # per-instance: the data decides
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        self.kinds = {**DEFAULT_KINDS, **(kinds or {})}
        unknown = set(self.kinds) - {"word", "phoneme", "sound"}
        if unknown:
            raise ValueError(f"studies.bids.kinds: unknown bm2 kinds {sorted(unknown)}")
        self.blocks = str(blocks)
        self.block_pad = float(block_pad)

    def iter_recordings(self) -> tp.Iterator[BidsRecording]:
        """Raw files matching the filters, sorted by path."""
        import mne_bids
        from mne_bids.config import ALLOWED_DATATYPE_EXTENSIONS

        self.prepare()
        datatypes = [self.datatype] if self.datatype else list(DATATYPES)
        found = []
        for dt in datatypes:
            paths = mne_bids.find_matching_paths(self.root, subjects=self.subjects, sessions=self.sessions,
                                                 tasks=self.tasks, datatypes=dt, suffixes=dt,
                                                 extensions=ALLOWED_DATATYPE_EXTENSIONS[dt])
            found += [p for p in paths if p.entities.get("split") in (None, "01")]
        if not found:
            raise StudyError(f"study 'bids': no {'/'.join(datatypes)} recording under {self.root} matching "
                             f"subject={self.subjects} session={self.sessions} task={self.tasks}; check "
                             "paths.studies.bids and the studies.bids filters")
        for path in sorted(found, key=lambda p: str(p.fpath)):
            yield BidsRecording(self, path)
