"""Features derived from word and phoneme events (no audio needed)."""

from __future__ import annotations

import typing as tp

import numpy as np
import pandas as pd

from ..events import ARPABET
from .base import EventFeature


def _span(onset: np.ndarray, duration: np.ndarray, sample_rate: float, n_times: int
          ) -> tuple[np.ndarray, np.ndarray]:
    start = np.clip(np.round(onset * sample_rate).astype(int), 0, n_times)
    stop = np.clip(np.round((onset + duration) * sample_rate).astype(int), 0, n_times)
    return start, np.maximum(stop, np.minimum(start + 1, n_times))


class WordOnset(EventFeature):
    """1 during the first ``width`` seconds of every word, 0 elsewhere (one channel)."""

    name = "word_onset"

    def __init__(self, width: float = 0.05) -> None:
        self.width = width

    @property
    def dimension(self) -> int:
        return 1

    def params(self) -> dict[str, tp.Any]:
        return {"width": self.width}

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        out = np.zeros((1, n_times), dtype=np.float32)
        words = events[events.kind == "word"]
        start, stop = _span(words.onset.to_numpy(), np.full(len(words), self.width), sample_rate, n_times)
        for a, b in zip(start, stop):
            out[0, a:b] = 1.0
        return out


class Phoneme(EventFeature):
    """One-hot of the 39 ARPABET classes over each phoneme's duration."""

    name = "phoneme"

    @property
    def dimension(self) -> int:
        return len(ARPABET)

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        out = np.zeros((len(ARPABET), n_times), dtype=np.float32)
        phones = events[events.kind == "phoneme"]
        index = {p: i for i, p in enumerate(ARPABET)}
        start, stop = _span(phones.onset.to_numpy(), phones.duration.to_numpy(), sample_rate, n_times)
        for label, a, b in zip(phones.text, start, stop):
            out[index[label], a:b] = 1.0
        return out
