"""Windows: where windows are anchored in each split, and which block each window belongs to.

* Blocks (sentences, sound units, trials) are spans that no window leaves; each block is assigned to a split by
  the split strategy (:mod:`bm2.data.splits`).
* Anchors per split (``dset.window.anchor``): by default (brainmagick) train / valid windows every ``stride``
  seconds inside blocks and test windows at word onsets; with ``anchor=<event kind>`` (word, phoneme, sound)
  every split is anchored at that kind's onsets; with ``anchor=stride`` every split is strided (detection);
  ``train_anchor`` overrides the train split alone (e.g. strided training, event-locked evaluation).
* A **brain lead** (``lead_ms``, 0 by default) starts the brain window that much before the feature window (Neural
  Speech Decoding: the ECoG slice starts 16 frames, 128 ms, before the speech frames). The lead counts as part of
  the window: it never leaves the block either, and windows whose lead would start before the recording are
  **dropped** (never clamped or zero-filled), so every brain window holds real samples.
* A window ``[anchor + tmin, anchor + tmax]`` never leaves its block, so the content of a word-locked test window
  is a function of (sentence, word position) only, which makes deduplication across subjects meaningful.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..utils.hashing import content_hash
from .splits import POOL, SPLITS, SplitParams, assign_split, block_splits

STRIDE = "stride"
COLUMNS = ["split", "kind", "start", "anchor", "block_uid", "block_index", "event", "word", "sentence_id",
           "word_index", "segment_uid"]


@dataclasses.dataclass(frozen=True)
class WindowParams:
    """Window ``[tmin, tmax]`` around an anchor (s), the anchor stride (s), the brain offset (ms) and the anchors.

    ``anchor``: None (train / valid strided, test at words), ``"stride"`` or an event kind for every split;
    ``train_anchor``: the same choices for the train split alone (None: as ``anchor``).
    ``lead_ms``: the brain window starts this much before the feature window (0: the same start), so that items
    hold ``brain`` ``[C, T + lead]`` and ``features`` / ``speech`` ``[D, T]`` (``T`` after the offset): brain item
    sample ``lead + t`` is recording sample ``start + k + t``, paired with feature sample ``t`` (recording sample
    ``start + t``; ``k`` the offset in samples, 0 for the Neural Speech Decoding recipes).
    """

    tmin: float = -0.5
    tmax: float = 2.5
    stride: float = 0.5
    offset_ms: float = 0.0
    anchor: str | None = None
    train_anchor: str | None = None
    lead_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.tmax <= self.tmin or self.stride <= 0 or self.offset_ms < 0 or self.lead_ms < 0:
            raise ValueError(f"invalid window {self}: need tmax > tmin, stride > 0, offset_ms >= 0, lead_ms >= 0")

    def n_samples(self, sample_rate: float) -> int:
        """Window length in samples before the offset is applied."""
        return int(round((self.tmax - self.tmin) * sample_rate))

    def offset_samples(self, sample_rate: float) -> int:
        """The brain / feature offset in samples."""
        return int(round(self.offset_ms / 1000 * sample_rate))

    def lead_samples(self, sample_rate: float) -> int:
        """The brain lead in samples (``round(lead_ms / 1000 * sample_rate)``)."""
        return int(round(self.lead_ms / 1000 * sample_rate))

    def key(self) -> dict:
        """The parameters as a dict for cache keys; ``lead_ms`` only when set, so that keys made before it
        existed stay valid."""
        out = dataclasses.asdict(self)
        if not self.lead_ms:
            out.pop("lead_ms")
        return out

    def anchor_of(self, split: str) -> str:
        """``"stride"`` or the event kind anchoring windows of ``split`` (``pool``: as test)."""
        if split == "train" and self.train_anchor is not None:
            return self.train_anchor
        if self.anchor is not None:
            return self.anchor
        return "word" if split in ("test", POOL) else STRIDE


def segment_uid(block_uid: str, word_index: int) -> str:
    """Stable identifier of a word-locked test segment: its sentence and position, not its subject."""
    return content_hash({"block": block_uid, "word_index": int(word_index)})


def _event_uid(block_uid: str, kind: str, position: int) -> str:
    return content_hash({"block": block_uid, "kind": kind, "position": int(position)})


def make_segments(events: pd.DataFrame, n_times: int, sample_rate: float, window: WindowParams,
                  split: SplitParams, recording_split: str | None = None) -> pd.DataFrame:
    """Windows of one recording, one row each.

    Columns: ``split`` (``train`` / ``valid`` / ``test``, or ``pool`` for window-level strategies), ``kind``
    (``stride`` or the anchor event kind), ``start`` (first sample), ``anchor`` (s), ``block_uid``,
    ``block_index`` (position of the block in the recording), ``event`` (row of ``events`` anchoring the window,
    -1 for strided windows), ``word``, ``sentence_id``, ``word_index`` and ``segment_uid`` (the identity of an
    event-locked window's content: block and position of the event in it).

    The brain lead (``window.lead_ms``) belongs to the window: ``[start - lead, start + length)`` stays inside the
    block, and windows whose lead would start before the recording are dropped.

    Raises ``ValueError`` when the events hold no block.
    """
    blocks = events[events.kind == "block"].sort_values("onset", kind="stable")
    if blocks.empty:
        raise ValueError("the events hold no 'block' rows: the study must define blocks (sentences, sound units or "
                         "trials) so that splits can be assigned")
    length = window.n_samples(sample_rate)
    lead = window.lead_samples(sample_rate)
    lead_s = lead / sample_rate
    groups = None
    if split.strategy == "last_n" and split.last_n_per is not None:
        if split.last_n_per not in blocks.columns:
            raise ValueError(f"dset.split.last_n_per={split.last_n_per!r}: the block rows have no such column "
                             f"(columns: {sorted(blocks.columns)}); the study must give each block its "
                             f"{split.last_n_per}, or set dset.split.last_n_per=null")
        groups = blocks[split.last_n_per].tolist()
        if all(g is None or g != g or g == "" for g in groups):  # None / NaN / empty: the file gives no such value
            raise ValueError(f"dset.split.last_n_per={split.last_n_per!r}: no block of this recording has a "
                             f"{split.last_n_per} (e.g. nsd2024 files without task_alldataset): the last "
                             f"{split.last_n} blocks per {split.last_n_per} cannot be chosen; set "
                             "dset.split.last_n_per=null (and dset.split.last_n to the whole test size)")
    splits = block_splits(len(blocks), [str(u) for u in blocks.uid], split, recording_split, groups)
    by_kind = {kind: events[events.kind == kind] for kind in set(events.kind)}
    rows: list[dict] = []
    eps = 1e-9
    for b, (block, which) in enumerate(zip(blocks.itertuples(), splits)):
        b_start, b_stop = block.onset, block.onset + block.duration
        kind = window.anchor_of(which)
        if kind == STRIDE:
            for a in np.arange(b_start - window.tmin + lead_s, b_stop - window.tmax + eps, window.stride):
                rows.append(dict(split=which, kind=STRIDE, anchor=float(a), block_uid=str(block.uid), block_index=b,
                                 event=-1, word="", sentence_id="", word_index=-1, segment_uid=""))
            continue
        table = by_kind.get(kind, events.iloc[:0])
        inside = table[(table.onset >= b_start) & (table.onset < b_stop)]
        for position, ev in enumerate(inside.itertuples()):
            if ev.onset + window.tmin - lead_s < b_start - eps or ev.onset + window.tmax > b_stop + eps:
                continue
            is_word = kind == "word"
            word_index = int(ev.word_index) if is_word else -1
            uid = segment_uid(str(block.uid), word_index) if is_word else _event_uid(str(block.uid), kind, position)
            rows.append(dict(split=which, kind=kind, anchor=float(ev.onset), block_uid=str(block.uid), block_index=b,
                             event=int(ev.Index), word=str(ev.text) if is_word else "",
                             sentence_id=str(ev.sentence_id) if is_word else "", word_index=word_index,
                             segment_uid=uid))
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    seg = pd.DataFrame(rows)
    seg["start"] = np.round((seg.anchor + window.tmin) * sample_rate).astype(int)
    seg = seg[(seg.start - lead >= 0) & (seg.start + length <= n_times)]
    return seg[COLUMNS].reset_index(drop=True)


__all__ = ["COLUMNS", "SPLITS", "STRIDE", "SplitParams", "WindowParams", "assign_split", "make_segments",
           "segment_uid"]
