"""A generic BIDS study: any MEG / EEG / iEEG dataset whose ``*_events.tsv`` carries the stimulus annotations.

Configured entirely by options (``studies.bids.*``, see :class:`BidsStudy`):

* which recordings: ``subject`` / ``session`` / ``task`` filters and ``datatype``;
* ``name``: the dataset's name (default: the root folder's name); it enters every recording's uid;
* ``columns``: which tsv column holds the event kind, the word, the sound file, the phoneme, the sentence id,
  the word index and the offset into the sound file;
* ``kinds``: for each bm2 kind (``word``, ``phoneme``, ``sound``), the value(s) of the kind column that mean it:
  one value, a list of values, ``'*'`` (every row with a value in that kind's own column, e.g. every row
  naming a sound file) or null (no such events). Trigger codes compare as numbers (``1`` == ``"1.0"``). A row
  matching several kinds yields one event of each (a row naming a sound file and a word is a sound event and
  a word event);
* ``blocks`` (the units that go to one split): ``sentence`` (one block per run of words sharing the sentence
  column, uid = the words joined by spaces), ``sound`` (one block per sound event, uid = the file name) or
  ``column:NAME`` (one block per run of rows sharing the value of column NAME, uid = that value); every mode
  pads the first block by ``block_pad`` s before and the last one after, and neighbouring blocks meet halfway
  between their spans;
* ``montage``: a montage for electrodes without positions (a name of ``mne.channels.get_builtin_montages()``
  or a montage file).

Reading ``events.tsv``. The file is read as UTF-8 (with or without BOM), else Latin-1 with a warning. Rows
whose kind is not configured are ignored, whatever they hold (e.g. EEGLAB ``boundary`` rows with an ``n/a``
onset). A used row with an empty / ``n/a`` / non-numeric onset, a non-numeric or negative duration, no word, no
sound file ... is an error naming the file, the line (the header is line 1), the value found and the key to
set. Missing durations are 0 for words and phonemes; a sound whose duration is 0 or missing (what mne-bids
writes) lasts as long as its audio file (after ``sound_offset``), and a word of duration 0 on the same row as
a sound spans that sound. Events outside the data (onset < 0 or after the recording's end) are left out with a
warning saying how many and where the data end; a file with no event inside the data is an error.

Sound paths are taken relative to the BIDS root (then to ``root/stimuli``). Raw files are read with mne-bids.

iEEG (``datatype: ieeg``). The modality is what the channels say: ``seeg`` when most iEEG channels of
``channels.tsv`` are of type SEEG (or DBS), ``ecog`` when they are ECOG (:func:`~bm2.studies._seeg.ieeg_modality`;
each recording's :attr:`BidsRecording.modality`, and the study's when it reads iEEG). Contacts take their
positions from ``electrodes.tsv`` when the dataset has one; sEEG contacts without any position get a layout from
their names instead (one column per shaft, one row per contact, as ``duin2024``), logged. ``bipolar: true``
re-references the good sEEG contacts to bipolar channels of direct neighbours on a shaft (``A1-A2``, ``A2-A3``
...: :func:`~bm2.studies._seeg.bipolar_pairs` gives the pairing rule and what happens to contacts without a
neighbour) with :func:`mne.set_bipolar_reference`, located at the midpoint of their two contacts; ECoG and other
channels are left as they are. The option enters the recordings' identity, hence every cache key.
"""

from __future__ import annotations

import collections
import logging
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._seeg import ieeg_modality, set_bipolar
from .base import MissingPositionsError, Recording, Study, StudyError
from ._common import (bids_inputs, canonical_code, is_missing, quiet, read_raw_bids, read_tsv, sentence_blocks,
                      sentence_id, span_blocks, to_arpabet)

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

# BIDS datatype -> bm2 modality; for ieeg the channel types of channels.tsv decide (seeg / ecog), ecog without them
DATATYPES = {"meg": "meg", "eeg": "eeg", "ieeg": "ecog"}
DEFAULT_COLUMNS = {"kind": "trial_type", "word": "word", "sound": "sound", "phoneme": "phoneme",
                   "sentence_id": "sentence_id", "word_index": "word_index", "sound_offset": None}
DEFAULT_KINDS = {"word": "word", "phoneme": "phoneme", "sound": "sound"}
ANY = "*"  # a kinds entry meaning: every row with a value in the kind's own column
KIND_ORDER = ("sound", "word", "phoneme")
EVENTS_VERSION = 2  # bump when the events derived from the same files change (enters the recording uid)
SHOWN = 5  # lines named in an error


def _as_list(value: tp.Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def kind_values(kind: str, value: tp.Any) -> tuple[str, ...] | str | None:
    """A ``kinds`` entry normalised: None (no such events), :data:`ANY`, or the canonical codes it lists."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if any(isinstance(v, (list, tuple, dict)) for v in values):
        raise ValueError(f"studies.bids.kinds.{kind}: expected a value or a list of values, got {value!r}")
    if any(str(v).strip() == ANY for v in values):
        return ANY
    codes = tuple(dict.fromkeys(canonical_code(v) for v in values))
    return codes or None


def _lines(index: tp.Iterable[int], limit: int = SHOWN) -> str:
    lines = [int(i) for i in index]
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return ", ".join(str(i) for i in lines[:limit]) + more


class BidsRecording(Recording):
    """One raw file of the BIDS dataset and its events.tsv."""

    events_in_uid = True

    def __init__(self, study: BidsStudy, bids_path: tp.Any) -> None:
        ent = bids_path.entities
        super().__init__(study.name, ent["subject"], ent.get("session") or "0", ent.get("task") or "0",
                         identity={"dataset": study.dataset_name,
                                   "file": bids_path.fpath.relative_to(study.root).as_posix(),
                                   "run": ent.get("run"), "acq": ent.get("acquisition"),
                                   "options": study.options(), "events_version": EVENTS_VERSION})
        self.bids_path = bids_path
        self.study_ = study

    @property
    def dataset_name(self) -> str:
        return self.study_.dataset_name

    def input_files(self) -> dict[str, Path]:
        """The raw file(s), the sidecars they inherit (channels.tsv, *_meg.json, electrodes.tsv ...) and the
        montage file, if any (the events enter the uid through their content)."""
        files = bids_inputs(self.study_.root, self.bids_path.fpath)
        montage = self.study_.montage_file()
        if montage is not None:
            files["montage:" + montage.name] = montage
        return files

    @property
    def events_path(self) -> Path:
        """The recording's ``*_events.tsv``."""
        return Path(self.bids_path.copy().update(suffix="events", extension=".tsv").fpath)

    @property
    def channels_path(self) -> Path:
        """The recording's ``*_channels.tsv``."""
        return Path(self.bids_path.copy().update(suffix="channels", extension=".tsv").fpath)

    @property
    def modality(self) -> str:
        """``meg``, ``eeg``, or for iEEG ``seeg`` / ``ecog`` as the channel types of ``channels.tsv`` say (ECoG
        when the file is missing or names neither)."""
        datatype = self.bids_path.datatype
        if datatype != "ieeg":
            return DATATYPES.get(datatype, "eeg")
        path = self.channels_path
        types = read_tsv(path).get("type", pd.Series(dtype=str)) if path.is_file() else []
        return ieeg_modality(types) or DATATYPES["ieeg"]

    def _load_raw(self) -> mne.io.BaseRaw:
        raw = read_raw_bids(self.bids_path, extra_params={"preload": False})
        montage = self.study_.make_montage()
        if montage is not None:
            with quiet():
                raw.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
        if self.study_.bipolar:
            try:
                raw = set_bipolar(raw, source=str(self.bids_path.fpath))
            except ValueError as exc:
                raise StudyError(str(exc)) from exc
        return raw

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """The dataset's positions (electrodes.tsv, montage); sEEG contacts without any get the layout of
        their names (shaft, contact number) instead, logged."""
        try:
            return super().sensor_positions(ch_names)
        except MissingPositionsError:
            import mne

            raw = self.raw()
            types = {mne.channel_type(raw.info, raw.ch_names.index(c)) for c in ch_names}
            if not types <= {"seeg", "dbs"}:
                raise
            from .duin2024 import channel_layout

            logger.info("%s: sEEG contacts without positions (no electrodes.tsv): laid out by name, one column "
                        "per shaft and one row per contact", self.bids_path.fpath.name)
            return channel_layout(ch_names)

    def data_end(self) -> float:
        """Seconds of data in the raw file (onsets are seconds from its first sample)."""
        raw = self.raw()
        return raw.n_times / float(raw.info["sfreq"])

    def _load_events(self) -> pd.DataFrame:
        tsv = self.events_path
        if not tsv.exists():
            raise StudyError(f"study 'bids': missing {tsv}; every recording needs an events.tsv with the "
                             "stimulus annotations (see studies.bids.columns and studies.bids.kinds)")
        return EventsTsv(self.study_, tsv, read_tsv(tsv)).events(self.data_end(), self.bids_path.fpath.name)


class EventsTsv:
    """The bm2 events of one ``events.tsv`` (a table of strings indexed by line, see
    :func:`~bm2.studies._common.read_tsv`), read with the options of a :class:`BidsStudy`."""

    def __init__(self, study: BidsStudy, path: Path, table: pd.DataFrame) -> None:
        self.study, self.path, self.table = study, path, table
        self.columns = study.columns

    # -- helpers -----------------------------------------------------------------------------------------

    def column(self, role: str) -> str | None:
        """The tsv column of ``role`` if configured and present."""
        name = self.columns.get(role)
        return name if name is not None and name in self.table.columns else None

    def missing_column(self, role: str, why: str) -> StudyError:
        return StudyError(f"{self.path}: {why}, but there is no column {self.columns.get(role)!r} "
                          f"(studies.bids.columns.{role}); set studies.bids.columns.{role} to one of "
                          f"{list(self.table.columns)}")

    def kind_of(self, line: int) -> str:
        col = self.column("kind")
        return f"{col}={self.table.at[line, col]!r}" if col else "its columns"

    def bad_lines(self, mask: pd.Series, what: str, column: str, fix: str) -> StudyError:
        lines = list(mask.index[mask.to_numpy()])
        found = self.table.loc[lines[0], column] if column in self.table.columns else None
        also = f" (lines {_lines(lines)})" if len(lines) > 1 else ""
        return StudyError(f"{self.path} line {lines[0]}: {what} (found {found!r} in column {column!r}, row "
                          f"{self.kind_of(lines[0])}){also}. {fix}")

    def numbers(self, column: str) -> tuple[pd.Series, pd.Series, pd.Series]:
        """(values with NaN where missing or invalid, missing mask, invalid mask) of a numeric column."""
        text = self.table[column] if column in self.table.columns else pd.Series("", index=self.table.index)
        missing = text.map(is_missing).astype(bool)
        values = pd.to_numeric(text.where(~missing), errors="coerce").astype(float)
        invalid = ~missing & ~np.isfinite(values)
        return values.where(~invalid), missing, invalid

    def found_values(self) -> str:
        col = self.column("kind")
        if col is None:
            return f"there is no kind column {self.columns.get('kind')!r} (columns: {list(self.table.columns)})"
        counts = sorted(self.table[col].value_counts().items(), key=lambda item: (-item[1], str(item[0])))
        shown = ", ".join(f"{v!r} ({n} rows)" for v, n in counts[:20])
        more = f" and {len(counts) - 20} more values" if len(counts) > 20 else ""
        return f"column {col!r} (studies.bids.columns.kind) holds {shown}{more}"

    def kinds_text(self) -> str:
        parts = []
        for kind, values in self.study.kinds.items():
            if values == ANY:
                parts.append(f"{kind}='*' (rows with a value in column {self.columns.get(kind)!r})")
            elif values is None:
                parts.append(f"{kind}=null")
            else:
                parts.append(f"{kind}={list(values)}")
        return "studies.bids.kinds is {" + ", ".join(parts) + "}"

    def nothing_matches(self, what: str) -> StudyError:
        return StudyError(
            f"{self.path}: {what}: {self.kinds_text()}, and {self.found_values()}. Set studies.bids.kinds.word / "
            ".sound / .phoneme to values of that column (a value or a list, e.g. kinds.word=[1,2]; numeric codes "
            "compare as numbers, 1 == 1.0), or to '*' for every row with a value in the kind's column "
            "(studies.bids.columns.word / .sound / .phoneme), or set studies.bids.columns.kind to another column")

    # -- events ------------------------------------------------------------------------------------------

    def masks(self) -> dict[str, pd.Series]:
        """Which rows give each bm2 kind."""
        table, kinds = self.table, self.study.kinds
        explicit = {k: v for k, v in kinds.items() if v not in (None, ANY)}
        codes = None
        if explicit:
            col = self.column("kind")
            if col is None:
                raise StudyError(
                    f"{self.path}: no kind column {self.columns.get('kind')!r} (studies.bids.columns.kind) but "
                    f"studies.bids.kinds {dict(explicit)} needs one; set studies.bids.columns.kind to the column "
                    f"holding the event kinds (columns are {list(table.columns)}), or set the kinds to '*'")
            codes = table[col].map(canonical_code)
        out = {}
        for kind in KIND_ORDER:
            values = kinds.get(kind)
            if values is None:
                continue
            if values == ANY:
                col = self.column(kind)
                out[kind] = (~table[col].map(is_missing).astype(bool)) if col else \
                    pd.Series(False, index=table.index)
            else:
                assert codes is not None
                out[kind] = codes.isin(list(values))
        return out

    def events(self, end: float, raw_name: str = "the recording") -> pd.DataFrame:
        """The bm2 events (with a ``line`` column) and their blocks; ``end``: seconds of data."""
        table = self.table
        for col in ("onset", "duration"):
            if col not in table.columns:
                raise StudyError(f"{self.path}: no {col!r} column (columns: {list(table.columns)}); every BIDS "
                                 "events.tsv starts with onset and duration")
        masks = self.masks()
        used = pd.Series(False, index=table.index)
        for mask in masks.values():
            used |= mask
        if not used.any():
            raise self.nothing_matches("no row gives a bm2 event")
        onset, missing, invalid = self.numbers("onset")
        if (used & missing).any():
            raise self.bad_lines(used & missing, "a row used as an event has no onset", "onset",
                                 "Give its onset in seconds, or leave its kind out of studies.bids.kinds (rows "
                                 "bm2 does not use may have no onset)")
        if (used & invalid).any():
            raise self.bad_lines(used & invalid, "the onset of a row used as an event is not a number", "onset",
                                 "BIDS onsets are seconds from the first sample of the recording")
        duration, _, invalid = self.numbers("duration")
        invalid |= duration < 0
        if (used & invalid).any():
            raise self.bad_lines(used & invalid, "the duration of a row used as an event is not a number >= 0",
                                 "duration", "Give durations in seconds (n/a when unknown)")
        parts = [self.sounds(masks, onset, duration), self.words(masks, onset, duration),
                 self.phonemes(masks, onset, duration)]
        events = pd.concat([p for p in parts if p is not None and len(p)], ignore_index=True) \
            if any(p is not None and len(p) for p in parts) else pd.DataFrame(columns=["kind", "onset", "line"])
        events = self.inside(events, end, raw_name)
        blocks = self.blocks(events, onset, duration, end)
        if self.column("sentence_id") is None and self.study.blocks != "sentence":
            events = self.words_by_block(events, blocks)
        events = pd.concat([events.drop(columns=["group", "word_index_given"], errors="ignore"), blocks],
                           ignore_index=True)
        events["line"] = events["line"].astype("Int64")
        return events

    def words_by_block(self, events: pd.DataFrame, blocks: pd.DataFrame) -> pd.DataFrame:
        """Without a sentence column, the words of one block form its sentence: ``sentence_id`` from their
        text and ``word_index`` their position in the block (unless a word index column gives it), so that a
        word-locked test window is named by (block, position) in every recording, whatever the order."""
        is_word = (events.kind == "word").to_numpy()
        if not is_word.any() or blocks.empty:
            return events
        words = events[is_word]
        order = blocks.sort_values("onset", kind="stable")
        which = np.searchsorted(order.onset.to_numpy(), words.onset.to_numpy(), side="right") - 1
        stops = (order.onset + order.duration).to_numpy()
        inside = (which >= 0) & (words.onset.to_numpy() < stops[np.clip(which, 0, None)])
        group = pd.Series(np.where(inside, which, -1), index=words.index)
        texts = words.groupby(group, sort=False)["text"].apply(lambda t: " ".join(map(str, t)))
        events = events.copy()
        events.loc[is_word, "sentence_id"] = group.map(texts).map(sentence_id).to_numpy()
        if not words["word_index_given"].fillna(False).astype(bool).all():
            events.loc[is_word, "word_index"] = words.groupby(group, sort=False).cumcount().to_numpy()
        return events

    def sounds(self, masks: dict[str, pd.Series], onset: pd.Series, duration: pd.Series) -> pd.DataFrame | None:
        if "sound" not in masks or not masks["sound"].any():
            return None
        mask = masks["sound"]
        col = self.column("sound")
        if col is None:
            raise self.missing_column("sound", "rows match studies.bids.kinds.sound")
        empty = mask & self.table[col].map(is_missing).astype(bool)
        if empty.any():
            raise self.bad_lines(empty, "a sound event names no audio file", col,
                                 "Set studies.bids.columns.sound to the column naming the audio files")
        offset = pd.Series(0.0, index=self.table.index)
        if self.columns.get("sound_offset") is not None:
            offset_col = self.column("sound_offset")
            if offset_col is None:
                raise self.missing_column("sound_offset", "studies.bids.columns.sound_offset is set")
            values, _, invalid = self.numbers(offset_col)
            invalid |= values < 0
            if (mask & invalid).any():
                raise self.bad_lines(mask & invalid, "the offset into the sound file is not a number >= 0",
                                     offset_col, "Give seconds into the audio file")
            offset = values.fillna(0.0)
        rows = self.table.index[mask.to_numpy()]
        paths = self.table.loc[rows, col].map(self.study.sound_path)
        durations = duration[rows].copy()
        lengths: dict[str, float | None] = {}
        for line in rows[~(durations > 0).to_numpy()]:  # 0 or missing: the audio file's length
            path = paths[line]
            if path not in lengths:
                lengths[path] = _audio_seconds(Path(path))
            length = lengths[path]
            if length is None:
                raise StudyError(
                    f"{self.path} line {line}: the sound event has duration {self.table.at[line, 'duration']!r}, "
                    f"so its duration is read from its audio file, but {path} cannot be read (column {col!r} = "
                    f"{self.table.at[line, col]!r}, looked for under {self.study.root} and "
                    f"{self.study.root / 'stimuli'}); put the audio there or give the durations in the events.tsv")
            if length - offset[line] <= 0:
                raise StudyError(f"{self.path} line {line}: sound offset {offset[line]} s is past the end of "
                                 f"{path} ({length:.3f} s)")
            durations[line] = length - offset[line]
        return pd.DataFrame({"kind": "sound", "onset": onset[rows], "duration": durations, "filepath": paths,
                             "offset": offset[rows], "line": rows})

    def words(self, masks: dict[str, pd.Series], onset: pd.Series, duration: pd.Series) -> pd.DataFrame | None:
        if "word" not in masks or not masks["word"].any():
            return None
        mask = masks["word"]
        col = self.column("word")
        if col is None:
            raise self.missing_column("word", "rows match studies.bids.kinds.word")
        empty = mask & self.table[col].map(is_missing).astype(bool)
        if empty.any():
            raise self.bad_lines(empty, "a word event has no word", col,
                                 "Set studies.bids.columns.word to the column holding the words")
        rows = self.table.index[mask.to_numpy()]
        words = pd.DataFrame({"kind": "word", "onset": onset[rows], "duration": duration[rows].fillna(0.0),
                              "text": self.table.loc[rows, col], "line": rows})
        sent_col = self.column("sentence_id")
        words["group"] = self.table.loc[rows, sent_col].map(lambda v: "n/a" if is_missing(v) else v) \
            if sent_col else "all"
        texts = words.groupby("group", sort=False)["text"].apply(lambda s: " ".join(map(str, s)))
        words["sentence_id"] = words["group"].map(texts).map(sentence_id)
        index_col = self.column("word_index")
        index = pd.to_numeric(self.table.loc[rows, index_col], errors="coerce") if index_col else None
        given = index is not None and bool(index.notna().all() and (index >= 0).all() and
                                           (index == index.round()).all())
        if given and index is not None:
            words["word_index"] = index.astype(int)
        else:
            words["word_index"] = words.groupby("group", sort=False).cumcount()
        words["word_index_given"] = given
        return words

    def phonemes(self, masks: dict[str, pd.Series], onset: pd.Series, duration: pd.Series) -> pd.DataFrame | None:
        if "phoneme" not in masks or not masks["phoneme"].any():
            return None
        col = self.column("phoneme")
        if col is None:
            raise self.missing_column("phoneme", "rows match studies.bids.kinds.phoneme")
        rows = self.table.index[masks["phoneme"].to_numpy()]
        labels = self.table.loc[rows, col].map(to_arpabet)
        keep = labels.notna()  # silences and unknown labels are not phoneme classes
        rows = rows[keep.to_numpy()]
        return pd.DataFrame({"kind": "phoneme", "onset": onset[rows], "duration": duration[rows].fillna(0.0),
                             "text": labels[keep], "line": rows})

    def inside(self, events: pd.DataFrame, end: float, raw_name: str) -> pd.DataFrame:
        """``events`` without those outside ``[0, end)``; a warning says how many, an error if none is left."""
        # a word of duration 0 on a sound's row spans that sound
        if {"sound", "word"} <= set(events.kind):
            sound_end = events[events.kind == "sound"].set_index("line")["duration"]
            sound_end = sound_end[~sound_end.index.duplicated()]
            is_word = (events.kind == "word") & (events.duration <= 0) & events.line.isin(sound_end.index)
            events.loc[is_word, "duration"] = events.loc[is_word, "line"].map(sound_end).to_numpy()
        outside = (events.onset < 0) | (events.onset >= end)
        if not outside.any():
            return events
        out = events[outside]
        count = f"all {len(out)}" if outside.all() else f"{len(out)} of {len(events)}"
        where = (f"{count} events (lines {_lines(sorted(set(out.line)))}) lie outside the data: their onsets go "
                 f"from {out.onset.min():.3f} to {out.onset.max():.3f} s, but the data of {raw_name} end at "
                 f"{end:.3f} s")
        if outside.all():
            hint = _unit_hint(events.onset, end)
            raise StudyError(f"{self.path}: {where}. BIDS onsets are seconds from the first sample of the "
                             f"recording{hint}; fix the onset column")
        logger.warning("%s: %s; they are left out", self.path, where)
        return events[~outside]

    def blocks(self, events: pd.DataFrame, onset: pd.Series, duration: pd.Series, end: float) -> pd.DataFrame:
        study = self.study
        mode, pad = study.blocks, study.block_pad
        if mode == "sentence":
            words = events[events.kind == "word"]
            if words.empty:
                raise self.nothing_matches("blocks='sentence' needs word events, and no row gives one")
            if self.column("sentence_id") is None:
                logger.warning(
                    "%s: no sentence column %r (studies.bids.columns.sentence_id), so blocks=sentence makes ONE "
                    "block of all %d words: the whole recording goes to a single split. Set "
                    "studies.bids.columns.sentence_id to the column naming each word's sentence, or use "
                    "studies.bids.blocks=sound or column:NAME", self.path, self.columns.get("sentence_id"),
                    len(words))
            return sentence_blocks(words.drop(columns="sentence_id").rename(columns={"group": "sentence_id"}),
                                   pad=pad, end=end)
        if mode == "sound":
            sounds = events[events.kind == "sound"]
            if sounds.empty:
                raise self.nothing_matches("blocks='sound' needs sound events, and no row gives one")
            spans = [(float(s.onset), float(s.onset + s.duration), {"uid": Path(str(s.filepath)).name})
                     for s in sounds.itertuples()]
            return span_blocks(spans, pad=pad, end=end)
        name = mode.split(":", 1)[1]
        if name not in self.table.columns:
            raise StudyError(f"{self.path}: block column {name!r} (studies.bids.blocks=column:{name}) not found; "
                             f"columns are {list(self.table.columns)}")
        value = self.table[name]
        stop = onset + duration.fillna(0.0)
        if len(events):  # a row's span covers the events it gave (e.g. a sound lasting as long as its file)
            ends = (events.onset + events.duration).groupby(events.line).max()
            stop = pd.concat([stop, ends.reindex(stop.index)], axis=1).max(axis=1)
        keep = onset.notna() & (onset >= 0) & (onset < end) & ~value.map(is_missing).astype(bool)
        rows = pd.DataFrame({"onset": onset, "stop": stop, "uid": value})[keep].sort_values("onset", kind="stable")
        if rows.empty:
            raise StudyError(f"{self.path}: no row inside the data has a value in the block column {name!r} "
                             f"(studies.bids.blocks=column:{name})")
        runs = (rows.uid != rows.uid.shift()).cumsum()
        spans = [(float(g.onset.min()), float(g.stop.max()), {"uid": str(g.uid.iloc[0])})
                 for _, g in rows.groupby(runs, sort=True)]
        return span_blocks(spans, pad=pad, end=end)


def _audio_seconds(path: Path) -> float | None:
    """Length of an audio file in seconds, None if it cannot be read."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError):  # soundfile's errors are RuntimeErrors
        return None
    return info.frames / info.samplerate


def _unit_hint(onsets: pd.Series, end: float) -> str:
    """A guess at the unit of onsets that all lie outside ``[0, end)``."""
    top = float(onsets.max())
    if top > 1e8:
        return " (these look like absolute time stamps: subtract the recording's start)"
    for unit, factor in (("milliseconds", 1e3), ("microseconds", 1e6)):
        if 0 <= float(onsets.min()) and top / factor < end:
            return f" (these may be {unit}: divide them by {factor:g})"
    return ""


class BidsStudy(Study):
    """Any BIDS MEG / EEG / iEEG dataset, usable by configuration alone (see the module docstring).

    Parameters
    ----------
    root : the BIDS root.
    subject, session, task : an id or a list of ids to keep (None = all).
    datatype : ``meg``, ``eeg`` or ``ieeg`` (None = whichever is found).
    columns : tsv column names, by role: kind, word, sound, phoneme, sentence_id, word_index, sound_offset.
    kinds : for each bm2 kind (word, phoneme, sound), the value(s) of the kind column meaning it, ``'*'`` or
        None (see the module docstring).
    blocks : ``sentence``, ``sound`` or ``column:NAME`` (see the module docstring).
    block_pad : s before the first / after the last block of a recording.
    montage : electrode positions for channels without any: a name of
        ``mne.channels.get_builtin_montages()`` or a montage file (absolute, or relative to the root or to the
        working directory); None = the positions of the dataset.
    name : the dataset's name (None = the root folder's name); enters every recording's uid.
    bipolar : re-reference sEEG contacts to bipolar channels of neighbours on a shaft (module docstring).
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
    downloadable = False

    def __init__(self, root: str | Path, subject: tp.Any = None, session: tp.Any = None, task: tp.Any = None,
                 datatype: str | None = None, columns: dict[str, str | None] | None = None,
                 kinds: dict[str, tp.Any] | None = None, blocks: str = "sentence", block_pad: float = 1.0,
                 montage: str | None = None, name: str | None = None, bipolar: bool = False) -> None:
        super().__init__(Path(root).expanduser().resolve())
        if datatype is not None and datatype not in DATATYPES:
            raise ValueError(f"studies.bids.datatype must be one of {list(DATATYPES)} or null, got {datatype!r}")
        if blocks not in ("sentence", "sound") and not (str(blocks).startswith("column:") and len(blocks) > 7):
            raise ValueError(f"studies.bids.blocks must be 'sentence', 'sound' or 'column:NAME', got {blocks!r}")
        self.subjects, self.sessions, self.tasks = _as_list(subject), _as_list(session), _as_list(task)
        self.datatype = datatype
        if datatype:
            self.modality = DATATYPES[datatype]  # type: ignore[misc]  # per-instance: the data decides
        unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
        if unknown:
            raise ValueError(f"studies.bids.columns: unknown roles {sorted(unknown)}; roles are "
                             f"{list(DEFAULT_COLUMNS)}")
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        unknown = set(kinds or {}) - set(DEFAULT_KINDS)
        if unknown:
            raise ValueError(f"studies.bids.kinds: unknown bm2 kinds {sorted(unknown)}; kinds are "
                             f"{list(DEFAULT_KINDS)}")
        merged = {**DEFAULT_KINDS, **(kinds or {})}
        self.kinds = {k: kind_values(k, v) for k, v in merged.items()}
        self.blocks = str(blocks)
        self.block_pad = float(block_pad)
        self.montage = None if montage is None else str(montage)
        if name is not None and not str(name).strip():
            raise ValueError("studies.bids.name must be a non-empty name or null (the root folder's name)")
        self.dataset_name = str(name).strip() if name is not None else self.root.name
        self.bipolar = bool(bipolar)

    def options(self) -> dict[str, tp.Any]:
        """The options that shape a recording's signal or events (they enter its identity)."""
        kinds = {k: v if v is None or v == ANY else list(v) for k, v in self.kinds.items()}
        options = {"columns": self.columns, "kinds": kinds, "blocks": self.blocks, "block_pad": self.block_pad,
                   "montage": self.montage}
        if self.bipolar:  # only when set: the uids (and caches) of monopolar recordings stay as they were
            options["bipolar"] = True
        return options

    def prepare(self) -> None:
        if not self.root.exists():
            raise StudyError(f"study 'bids': data root {self.root} does not exist. Point `paths.studies.bids` to "
                             "your BIDS dataset (the folder holding dataset_description.json and the sub-* "
                             "folders); nothing is downloaded for this study")

    def sound_path(self, sound: tp.Any) -> str:
        """The audio file of an events.tsv value: as written if absolute, else under the root, else under
        ``root/stimuli`` (the path under the root when none exists)."""
        path = Path(str(sound).strip())
        for candidate in (path, self.root / path, self.root / "stimuli" / path):
            if candidate.is_absolute() and candidate.exists():
                return str(candidate)
        return str(self.root / path)

    def montage_file(self) -> Path | None:
        """The montage file of the ``montage`` option, None when it is unset or a built-in montage name."""
        if self.montage is None:
            return None
        path = Path(self.montage).expanduser()
        for candidate in ((path,) if path.is_absolute() else (self.root / path, Path.cwd() / path)):
            if candidate.is_file():
                return candidate.resolve()
        return None

    def make_montage(self) -> tp.Any:
        """The :class:`mne.channels.DigMontage` of the ``montage`` option (None when unset)."""
        if self.montage is None:
            return None
        import mne

        path = self.montage_file()
        if path is not None:
            with quiet():
                if path.suffix.lower() == ".fif":
                    return mne.channels.read_dig_fif(path)
                return mne.channels.read_custom_montage(path)
        try:
            with quiet():
                return mne.channels.make_standard_montage(self.montage)
        except ValueError:
            raise StudyError(f"studies.bids.montage={self.montage!r} is neither a montage file (looked under "
                             f"{self.root} and {Path.cwd()}) nor a built-in montage; built-in montages are "
                             f"{mne.channels.get_builtin_montages()}") from None

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
        recordings = [BidsRecording(self, path) for path in sorted(found, key=lambda p: str(p.fpath))]
        ieeg = [r.modality for r in recordings if r.bids_path.datatype == "ieeg"]
        if ieeg and len(ieeg) == len(recordings):  # the channel types decide between sEEG and ECoG
            self.modality = max(sorted(set(ieeg)), key=ieeg.count)  # type: ignore[misc]  # per-instance
            if len(set(ieeg)) > 1:
                logger.info("study 'bids': iEEG recordings of both kinds (%s); modality %s",
                            dict(collections.Counter(ieeg)), self.modality)
        yield from recordings
