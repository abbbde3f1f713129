"""The events table: what happened when during a recording.

Every study turns its annotations into one :class:`pandas.DataFrame` with the schema below,
and :func:`validate_events` checks it in a vectorised way before anything else uses it.

Columns shared by every row
---------------------------
``kind``      one of ``sound``, ``word``, ``phoneme``, ``block``.
``onset``     seconds from the start of the recording (finite, >= 0).
``duration``  seconds (finite, >= 0; > 0 for ``sound`` and ``block``).

Columns by kind (other kinds leave them empty)
----------------------------------------------
``sound``    ``filepath`` (audio file, str) and ``offset`` (seconds into the file at ``onset``).
``word``     ``text`` (the word), ``sentence_id`` (str), ``word_index`` (position in the sentence, int >= 0).
``phoneme``  ``text`` (ARPABET label, one of :data:`ARPABET`; stress digits are stripped).
``block``    ``uid`` (the content that decides the split, e.g. the sentence text). A block's
             ``[onset, onset + duration)`` is the span that windows must not leave.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import pandas as pd

KINDS = ("sound", "word", "phoneme", "block")
COLUMNS = ("kind", "onset", "duration", "filepath", "offset", "text", "sentence_id", "word_index", "uid")
REQUIRED_BY_KIND: dict[str, tuple[str, ...]] = {
    "sound": ("filepath", "offset"),
    "word": ("text", "sentence_id", "word_index"),
    "phoneme": ("text",),
    "block": ("uid",),
}
# The 39 ARPABET phoneme classes (CMUdict without stress), used by the phoneme features.
ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()


class EventsValidationError(ValueError):
    """An events table breaks the schema; the message names the column and the offending rows."""


def _rows(mask: np.ndarray, index: pd.Index, limit: int = 5) -> str:
    bad = list(index[mask])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return ", ".join(str(b) for b in bad[:limit]) + more


def validate_events(events: pd.DataFrame, source: str = "events") -> pd.DataFrame:
    """Check ``events`` against the schema and return a normalised copy sorted by onset.

    Missing optional columns are added empty, phoneme labels are upper-cased with stress
    digits stripped, and ``word_index`` becomes an integer column.

    Raises
    ------
    EventsValidationError
        naming ``source``, the column and up to five offending row labels.
    """
    if not isinstance(events, pd.DataFrame):
        raise EventsValidationError(f"{source}: expected a pandas DataFrame, got {type(events).__name__}")
    missing = [c for c in ("kind", "onset", "duration") if c not in events.columns]
    if missing:
        raise EventsValidationError(f"{source}: missing required column(s) {missing}; see bm2.events for the schema")
    ev = events.copy()
    for col in COLUMNS:
        if col not in ev.columns:
            ev[col] = None
    kind = ev["kind"].astype("object")
    bad = ~kind.isin(KINDS).to_numpy()
    if bad.any():
        raise EventsValidationError(
            f"{source}: column 'kind' has unknown values {sorted(set(map(str, kind[bad])))} "
            f"at rows {_rows(bad, ev.index)}; valid kinds are {list(KINDS)}")
    for col in ("onset", "duration"):
        values = pd.to_numeric(ev[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            raise EventsValidationError(
                f"{source}: column '{col}' must be finite and >= 0; offending rows {_rows(bad, ev.index)}")
        ev[col] = values
    positive = kind.isin(["sound", "block"]).to_numpy() & (ev["duration"].to_numpy() <= 0)
    if positive.any():
        raise EventsValidationError(
            f"{source}: column 'duration' must be > 0 for sound and block events; "
            f"offending rows {_rows(positive, ev.index)}")
    for k, cols in REQUIRED_BY_KIND.items():
        is_k = (kind == k).to_numpy()
        if not is_k.any():
            continue
        for col in cols:
            col_values = ev[col]
            empty = col_values.isna().to_numpy()
            if col in ("filepath", "text", "uid", "sentence_id"):
                empty = empty | col_values.astype(str).str.strip().eq("").to_numpy()
            bad = is_k & empty
            if bad.any():
                raise EventsValidationError(
                    f"{source}: column '{col}' is required for '{k}' events but empty at rows "
                    f"{_rows(bad, ev.index)}")
    is_sound = (kind == "sound").to_numpy()
    offsets = pd.to_numeric(ev["offset"], errors="coerce").to_numpy(dtype=float)
    bad = is_sound & (~np.isfinite(offsets) | (offsets < 0))
    if bad.any():
        raise EventsValidationError(
            f"{source}: column 'offset' must be finite and >= 0 for sound events; rows {_rows(bad, ev.index)}")
    is_word = (kind == "word").to_numpy()
    idx = pd.to_numeric(ev["word_index"], errors="coerce").to_numpy(dtype=float)
    bad = is_word & (~np.isfinite(idx) | (idx < 0) | (np.round(idx) != idx))
    if bad.any():
        raise EventsValidationError(
            f"{source}: column 'word_index' must be an integer >= 0 for word events; rows {_rows(bad, ev.index)}")
    ev["word_index"] = pd.array(np.where(is_word, idx, np.nan), dtype="Float64").astype("Int64")
    is_phone = (kind == "phoneme").to_numpy()
    if is_phone.any():
        labels = ev.loc[is_phone, "text"].astype(str).str.upper().str.replace(r"\d", "", regex=True)
        ev["text"] = ev["text"].astype("object")
        ev.loc[is_phone, "text"] = labels
        bad = is_phone.copy()
        bad[is_phone] = ~labels.isin(ARPABET).to_numpy()
        if bad.any():
            raise EventsValidationError(
                f"{source}: column 'text' holds labels outside the 39 ARPABET classes for phoneme events "
                f"({sorted(set(ev.loc[bad, 'text']))[:5]}) at rows {_rows(bad, ev.index)}")
    ev["kind"] = kind
    ev = ev.sort_values(["onset", "kind"], kind="stable").reset_index(drop=True)
    return ev[list(COLUMNS) + [c for c in ev.columns if c not in COLUMNS]]


def make_events(rows: tp.Iterable[dict]) -> pd.DataFrame:
    """Build a validated events table from an iterable of row dictionaries."""
    return validate_events(pd.DataFrame(list(rows)))
