"""The ``events.tsv`` of a BIDS recording turned into bm2's events table (:class:`EventsTsv`, used by
:mod:`bm2.studies.bids`): which rows are sounds, words and phonemes (the study's ``columns`` and ``kinds``), their
onsets, durations, sentences and sound files, with errors naming the file, the lines and what to set."""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import canonical_code, is_missing, sentence_blocks, sentence_id, span_blocks, to_arpabet
from .base import StudyError

if tp.TYPE_CHECKING:
    from .bids import BidsStudy

logger = logging.getLogger(__name__)

ANY = "*"  # a kinds entry meaning: every row with a value in the kind's own column
KIND_ORDER = ("sound", "word", "phoneme")
SHOWN = 5  # lines named in an error


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


class EventsTsv:
    """The bm2 events of one ``events.tsv`` (a table of strings indexed by line, see
    :func:`~bm2.studies._common.read_tsv`), read with the options of a :class:`~bm2.studies.bids.BidsStudy`."""

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
