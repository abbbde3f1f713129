"""Splits and windows: which block goes to which split, and where windows are anchored.

* A block (sentence, sound unit) goes to train / valid / test by a content hash of its ``uid`` (e.g. the
  sentence text) and a seed, so that one sentence lands in the same split for every subject.
* Train / valid windows are anchored every ``stride`` seconds inside blocks; test windows at word onsets.
* A window ``[anchor + tmin, anchor + tmax]`` never leaves its block, so the content of a test window is a
  function of (sentence, word position) only — which makes deduplication across subjects meaningful.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pandas as pd

from ..utils.hashing import content_hash

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """Fractions of blocks in the test and valid splits, and the seed of the assignment."""

    test: float = 0.2
    valid: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.test and 0 <= self.valid and self.test + self.valid < 1):
            raise ValueError(f"split fractions test={self.test}, valid={self.valid} must be >= 0 and sum to < 1")


@dataclasses.dataclass(frozen=True)
class WindowParams:
    """Window ``[tmin, tmax]`` around an anchor (s), the train anchor stride (s) and the brain offset (ms)."""

    tmin: float = -0.5
    tmax: float = 2.5
    stride: float = 0.5
    offset_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.tmax <= self.tmin or self.stride <= 0 or self.offset_ms < 0:
            raise ValueError(f"invalid window {self}: need tmax > tmin, stride > 0, offset_ms >= 0")

    def n_samples(self, sample_rate: float) -> int:
        """Window length in samples before the offset is applied."""
        return int(round((self.tmax - self.tmin) * sample_rate))

    def offset_samples(self, sample_rate: float) -> int:
        """The brain / feature offset in samples."""
        return int(round(self.offset_ms / 1000 * sample_rate))


def assign_split(uid: str, params: SplitParams) -> str:
    """``train``, ``valid`` or ``test`` for a block, from a sha1 of its uid and the seed."""
    digest = hashlib.sha1(f"{params.seed}:{uid}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < params.test:
        return "test"
    if u < params.test + params.valid:
        return "valid"
    return "train"


def segment_uid(block_uid: str, word_index: int) -> str:
    """Stable identifier of a word-locked test segment: its sentence and position, not its subject."""
    return content_hash({"block": block_uid, "word_index": int(word_index)})


def make_segments(events: pd.DataFrame, n_times: int, sample_rate: float, window: WindowParams,
                  split: SplitParams) -> pd.DataFrame:
    """Windows of one recording, one row each.

    Columns: ``split``, ``kind`` (``stride`` for train / valid, ``word`` for test), ``start`` (first sample),
    ``anchor`` (s), ``block_uid``, ``word``, ``sentence_id``, ``word_index``, ``segment_uid``.
    """
    blocks = events[events.kind == "block"]
    if blocks.empty:
        raise ValueError("the events hold no 'block' rows: the study must define blocks (sentences or sound "
                         "units) so that splits can be assigned")
    words = events[events.kind == "word"]
    length = window.n_samples(sample_rate)
    rows: list[dict] = []
    eps = 1e-9
    for block in blocks.itertuples():
        b_start, b_stop = block.onset, block.onset + block.duration
        which = assign_split(str(block.uid), split)
        if which == "test":
            inside = words[(words.onset >= b_start) & (words.onset < b_stop)]
            for w in inside.itertuples():
                if w.onset + window.tmin < b_start - eps or w.onset + window.tmax > b_stop + eps:
                    continue
                rows.append(dict(split=which, kind="word", anchor=w.onset, block_uid=str(block.uid),
                                 word=str(w.text), sentence_id=str(w.sentence_id), word_index=int(w.word_index),
                                 segment_uid=segment_uid(str(block.uid), int(w.word_index))))
        else:
            anchors = np.arange(b_start - window.tmin, b_stop - window.tmax + eps, window.stride)
            for a in anchors:
                rows.append(dict(split=which, kind="stride", anchor=float(a), block_uid=str(block.uid),
                                 word="", sentence_id="", word_index=-1, segment_uid=""))
    columns = ["split", "kind", "start", "anchor", "block_uid", "word", "sentence_id", "word_index", "segment_uid"]
    if not rows:
        return pd.DataFrame(columns=columns)
    seg = pd.DataFrame(rows)
    seg["start"] = np.round((seg.anchor + window.tmin) * sample_rate).astype(int)
    seg = seg[(seg.start >= 0) & (seg.start + length <= n_times)]
    return seg[columns].reset_index(drop=True)
