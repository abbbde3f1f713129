"""Split strategies: which block, recording or window goes to train / valid / test.

Chosen by ``dset.split.strategy``:

``hash`` (default, brainmagick)
    a block (sentence, sound unit, trial) goes to a split by a sha1 of its ``uid`` and the seed, so one sentence
    lands in the same split for every subject.
``named``
    whole recordings listed in ``valid_recordings`` / ``test_recordings`` (selectors such as
    ``{subject: "0", session: "11", task: Sherlock1, run: "2"}``) form the valid / test splits, the others
    train (LibriBrain's fixed runs). A selector that matches no recording is an error, never silently dropped.
``last_n``
    in each recording, the last ``last_n`` blocks in file order are the test set and the ``valid`` fraction of the
    remaining blocks just before them the valid set (Neural Speech Decoding: the last 50 trials). With ``last_n_per``
    (a column of the events' block rows, e.g. ``task``), the same holds within each value of that column: the last
    ``last_n`` blocks of each task are test, the ``valid`` fraction of each task's other blocks just before them
    valid (the original's ``TestNum``, 10 per task); blocks without a value form one group of their own.
``stratified``
    windows are split per class with the ``test`` / ``valid`` fractions, seeded (Du-IN: 80 / 10 / 10).
``kfold``
    stratified k-fold over windows (``n_folds``, seeded): fold ``fold`` is the test set, and the ``valid`` fraction
    of the rest, stratified, the valid set (the superlet / codebook decoder: 10 folds).

The first three decide per block before windows are cut; ``stratified`` and ``kfold`` decide per window after
labels are known, and are meant for data cut into trials (one window per trial): on continuous recordings,
overlapping windows of one sentence would land in different splits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing as tp

import numpy as np

SPLITS = ("train", "valid", "test")
STRATEGIES = ("hash", "named", "last_n", "stratified", "kfold")
WINDOW_LEVEL = ("stratified", "kfold")
POOL = "pool"  # windows whose split is decided after labels are known


@dataclasses.dataclass(frozen=True)
class SplitParams:
    """How windows are split (see the module docstring for each strategy).

    ``test`` / ``valid`` are fractions (of blocks for ``hash``, of windows per class for ``stratified``, of the
    remaining blocks / windows for ``last_n`` / ``kfold``'s validation set).
    """

    test: float = 0.2
    valid: float = 0.1
    seed: int = 0
    strategy: str = "hash"
    valid_recordings: tuple = ()
    test_recordings: tuple = ()
    last_n: int = 50
    n_folds: int = 10
    fold: int = 0
    last_n_per: str | None = None

    def key(self) -> dict:
        """The parameters as a dict for cache keys; ``last_n_per`` only when set, so that keys made before it
        existed stay valid."""
        out = dataclasses.asdict(self)
        if self.last_n_per is None:
            out.pop("last_n_per")
        return out

    def __post_init__(self) -> None:
        if not (0 <= self.test and 0 <= self.valid and self.test + self.valid < 1):
            raise ValueError(f"split fractions test={self.test}, valid={self.valid} must be >= 0 and sum to < 1")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown dset.split.strategy {self.strategy!r}; valid strategies: {list(STRATEGIES)}")
        if self.strategy == "kfold" and not (2 <= self.n_folds and 0 <= self.fold < self.n_folds):
            raise ValueError(f"dset.split.fold={self.fold} must be in [0, n_folds={self.n_folds}) with n_folds >= 2")
        if self.strategy == "last_n" and self.last_n < 1:
            raise ValueError(f"dset.split.last_n must be >= 1, got {self.last_n}")
        if self.strategy == "named" and not (self.valid_recordings or self.test_recordings):
            raise ValueError("dset.split.strategy=named needs dset.split.valid_recordings and / or "
                             "dset.split.test_recordings (e.g. [{subject: '0', session: '12', run: '2'}])")

    @property
    def window_level(self) -> bool:
        """Whether the split is decided per window, after labels are known."""
        return self.strategy in WINDOW_LEVEL


def assign_split(uid: str, params: SplitParams) -> str:
    """``train``, ``valid`` or ``test`` for a block, from a sha1 of its uid and the seed (``hash`` strategy)."""
    digest = hashlib.sha1(f"{params.seed}:{uid}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < params.test:
        return "test"
    if u < params.test + params.valid:
        return "valid"
    return "train"


def recording_attributes(recording: tp.Any) -> dict[str, str]:
    """What a ``named`` selector can match: study, subject, session, task, uid, and identity keys (e.g. run)."""
    attrs = {k: str(v) for k, v in getattr(recording, "identity", {}).items() if not isinstance(v, (dict, list))}
    for key in ("study", "subject", "session", "task", "uid", "run"):
        if hasattr(recording, key):
            attrs[key] = str(getattr(recording, key))
    return attrs


def _matches(selector: tp.Any, attrs: dict[str, str]) -> bool:
    if isinstance(selector, str):  # a uid, or "study/subject/session/task"
        return selector in (attrs.get("uid"), "/".join(attrs.get(k, "") for k in ("study", "subject", "session",
                                                                                     "task")))
    return all(attrs.get(str(k)) == str(v) for k, v in dict(selector).items())


def named_split(recording: tp.Any, params: SplitParams) -> str:
    """The split of a whole recording under the ``named`` strategy (``train`` when it is not listed)."""
    attrs = recording_attributes(recording)
    if any(_matches(s, attrs) for s in params.test_recordings):
        return "test"
    if any(_matches(s, attrs) for s in params.valid_recordings):
        return "valid"
    return "train"


def check_named(recordings: tp.Sequence[tp.Any], params: SplitParams) -> None:
    """Raise ``ValueError`` listing the ``named`` selectors that match none of ``recordings``."""
    attrs = [recording_attributes(r) for r in recordings]
    missing = [s for s in (*params.valid_recordings, *params.test_recordings)
               if not any(_matches(s, a) for a in attrs)]
    if missing:
        known = [{k: a[k] for k in ("subject", "session", "task", "run") if k in a} for a in attrs[:10]]
        raise ValueError(f"dset.split: recordings {missing} are listed but absent from the selected data; "
                         f"selected recordings include {known}. Fix the selectors or add the data")


def _last_n(n_blocks: int, params: SplitParams) -> list[str]:
    n_test = min(params.last_n, n_blocks)
    rest = n_blocks - n_test
    n_valid = int(round(params.valid * rest))
    return ["train"] * (rest - n_valid) + ["valid"] * n_valid + ["test"] * n_test


def block_splits(n_blocks: int, uids: tp.Sequence[str], params: SplitParams,
                 recording_split: str | None = None, groups: tp.Sequence[tp.Any] | None = None) -> list[str]:
    """The split of each block of one recording (blocks in file order) for the block-level strategies; window-level
    strategies give :data:`POOL` (decided later by :func:`window_splits`).

    ``groups`` (``last_n`` with ``last_n_per``): one value per block (e.g. its task); ``last_n`` then applies within
    each group, keeping the blocks' order.
    """
    if params.window_level:
        return [POOL] * n_blocks
    if params.strategy == "named":
        assert recording_split is not None, "named splits need the recording's split"
        return [recording_split] * n_blocks
    if params.strategy == "last_n":
        if groups is None:
            return _last_n(n_blocks, params)
        if len(groups) != n_blocks:
            raise ValueError(f"{len(groups)} group values for {n_blocks} blocks")
        out = [""] * n_blocks
        keys = ["" if g is None or g != g else str(g) for g in groups]  # NaN / None: one group of their own
        for key in dict.fromkeys(keys):
            rows = [i for i, k in enumerate(keys) if k == key]
            for i, which in zip(rows, _last_n(len(rows), params)):
                out[i] = which
        return out
    return [assign_split(str(u), params) for u in uids]


def window_splits(labels: np.ndarray, params: SplitParams) -> np.ndarray:
    """The split of each pooled window from its class label (``stratified`` or ``kfold``), seeded.

    ``stratified``: per class, a seeded shuffle, then ``round(test * n)`` windows to test and ``round(valid * n)``
    to valid. ``kfold``: scikit-learn's ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``; fold
    ``fold`` is the test set and the valid set is a stratified ``valid`` fraction of the remaining windows.
    """
    labels = np.asarray(labels)
    out = np.full(len(labels), "train", dtype=object)
    rng = np.random.default_rng(params.seed)
    if params.strategy == "stratified":
        for cls in sorted(set(labels.tolist()), key=str):
            rows = rng.permutation(np.flatnonzero(labels == cls))
            n_test, n_valid = int(round(params.test * len(rows))), int(round(params.valid * len(rows)))
            out[rows[:n_test]] = "test"
            out[rows[n_test:n_test + n_valid]] = "valid"
        return out
    if params.strategy == "kfold":
        from sklearn.model_selection import StratifiedKFold

        counts = {c: int((labels == c).sum()) for c in set(labels.tolist())}
        if min(counts.values()) < params.n_folds:
            rare = sorted((c for c, n in counts.items() if n < params.n_folds), key=str)[:5]
            raise ValueError(f"dset.split.n_folds={params.n_folds} but classes {rare} have fewer windows than "
                             "folds; lower n_folds or drop rare classes (dset.label.min_count)")
        folds = StratifiedKFold(params.n_folds, shuffle=True, random_state=params.seed)
        _, test_rows = list(folds.split(np.zeros(len(labels)), labels))[params.fold]
        out[test_rows] = "test"
        rest = np.flatnonzero(out == "train")
        for cls in sorted(set(labels[rest].tolist()), key=str):
            rows = rng.permutation(rest[labels[rest] == cls])
            out[rows[:int(round(params.valid * len(rows)))]] = "valid"
        return out
    raise ValueError(f"window_splits is for {WINDOW_LEVEL}, not {params.strategy!r}")
