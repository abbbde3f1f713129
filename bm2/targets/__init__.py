"""Targets from events: class labels per window and speech / silence per sample.

Dense speech targets (mel, wav2vec 2.0 ...) live in :mod:`bm2.features`; this package derives the other two
kinds from the events table:

* **class labels** (:class:`LabelParams`, :func:`build_vocabulary`, :func:`encode_labels`): the value of an
  events column (``text`` by default: the word or the phoneme) at the event anchoring each window. The vocabulary
  is built from the **training** windows only, sorted, so class ids are stable; a label absent from it is
  encoded ``-1`` (:data:`UNKNOWN`), counted and reported, never mapped to another class.
* **speech / silence per sample** (:class:`SpeechParams`, :func:`speech_timeline`): 1 inside the spans of the
  chosen event kinds (sounds, words or phonemes), 0 elsewhere, on the preprocessed signal's sample grid.
"""

from __future__ import annotations

import collections
import dataclasses
import typing as tp

import numpy as np
import pandas as pd

UNKNOWN = -1


@dataclasses.dataclass(frozen=True)
class LabelParams:
    """Which events column gives a window's class, and which classes are kept.

    ``top_n``: keep the ``top_n`` most frequent training labels (ties broken alphabetically) and drop windows of
    the others from every split (the task is then "which of these N words"); ``min_count``: drop labels seen
    fewer times in training.
    """

    column: str = "text"
    top_n: int | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.top_n is not None and self.top_n < 2:
            raise ValueError(f"dset.label.top_n must be >= 2 (or null), got {self.top_n}")
        if self.min_count < 1:
            raise ValueError(f"dset.label.min_count must be >= 1, got {self.min_count}")


@dataclasses.dataclass(frozen=True)
class SpeechParams:
    """Event kinds whose spans count as speech for the per-sample speech / silence target."""

    kinds: tuple[str, ...] = ("sound",)


def build_vocabulary(train_labels: tp.Iterable[str], params: LabelParams) -> list[str]:
    """Sorted class names from the training labels (``top_n`` / ``min_count`` applied); id = position.

    Raises ``ValueError`` when fewer than two classes remain.
    """
    counts = collections.Counter(str(x) for x in train_labels if str(x) != "")
    kept = [(label, n) for label, n in counts.items() if n >= params.min_count]
    if params.top_n is not None:
        kept = sorted(kept, key=lambda item: (-item[1], item[0]))[:params.top_n]
    vocabulary = sorted(label for label, _ in kept)
    if len(vocabulary) < 2:
        raise ValueError(f"the training windows hold {len(vocabulary)} class(es) of column {params.column!r} "
                         f"(min_count={params.min_count}): a classifier needs at least two. Check "
                         "dset.window.anchor (windows must be anchored at events) and dset.label")
    return vocabulary


def encode_labels(names: tp.Iterable[str], vocabulary: tp.Sequence[str]) -> np.ndarray:
    """Class ids of ``names`` (int64), :data:`UNKNOWN` for names outside ``vocabulary``."""
    index = {name: i for i, name in enumerate(vocabulary)}
    return np.array([index.get(str(n), UNKNOWN) for n in names], dtype=np.int64)


def label_names(events: pd.DataFrame, rows: np.ndarray, column: str, source: str = "events") -> np.ndarray:
    """The ``column`` value of ``events`` at each row of ``rows`` (``""`` where the row is -1: strided windows).

    Raises ``KeyError`` naming the columns available when ``column`` is absent.
    """
    if column not in events.columns:
        raise KeyError(f"{source}: dset.label.column={column!r} is not an events column; available: "
                       f"{sorted(events.columns)}")
    values = events[column].astype(object).to_numpy()
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), "", dtype=object)
    valid = rows >= 0
    out[valid] = [("" if pd.isna(v) else str(v)) for v in values[rows[valid]]]
    return out


def speech_timeline(events: pd.DataFrame, n_times: int, sample_rate: float, params: SpeechParams) -> np.ndarray:
    """``uint8 [n_times]``: 1 on samples inside a span ``[onset, onset + duration)`` of ``params.kinds``.

    Raises ``ValueError`` when the events hold none of those kinds (the target would be all silence).
    """
    spans = events[events.kind.isin(params.kinds)]
    if spans.empty:
        raise ValueError(f"no events of kinds {list(params.kinds)} to mark speech; set dset.speech.kinds to kinds "
                         f"present in the events ({sorted(set(events.kind))})")
    out = np.zeros(n_times, dtype=np.uint8)
    starts = np.clip(np.round(spans.onset.to_numpy() * sample_rate).astype(np.int64), 0, n_times)
    stops = np.clip(np.round((spans.onset + spans.duration).to_numpy() * sample_rate).astype(np.int64), 0, n_times)
    # Difference array: one pass whatever the number of spans, overlapping spans handled.
    delta = np.zeros(n_times + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, stops, -1)
    out[np.cumsum(delta[:-1]) > 0] = 1
    return out


__all__ = ["LabelParams", "SpeechParams", "UNKNOWN", "build_vocabulary", "encode_labels", "label_names",
           "speech_timeline"]
