"""Grouping: average K same-label windows into one item to raise the SNR (LibriBrain's "signal averaging").

:func:`group_indices` draws the groups: per label (in sorted order), a permutation of that label's windows from a
seeded generator, cut into consecutive groups of ``k``; the last, smaller group is kept unless ``drop_remaining``
(pnpl keeps it, so some "K-averages" average fewer trials). The same ``(labels, k, seed)`` always gives the same
groups (pnpl's ``GroupedDataset`` shuffles with torch's global RNG, unseeded). :class:`GroupedDataset` wraps a
window dataset; with ``dynamic=True`` the groups are redrawn at every :meth:`~GroupedDataset.set_epoch`
("dynamic grouping", seeded by ``(seed, epoch)``, so a resumed run redraws the same groups). The spine applies it
through ``dset.grouping`` (:class:`GroupingParams`, :func:`group_datasets`): training, validation and test splits
each with their own ``k``; the solver calls ``set_epoch`` before every training epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp

import numpy as np
import pandas as pd
import torch

from ..targets import UNKNOWN

logger = logging.getLogger(__name__)


def group_indices(labels: np.ndarray, k: int, seed: int | tp.Sequence[int] = 0,
                  drop_remaining: bool = False) -> list[np.ndarray]:
    """Groups of up to ``k`` indices of windows sharing a label (windows labelled :data:`UNKNOWN` are left out),
    seeded; ordered by label, then draw."""
    if k < 1:
        raise ValueError(f"grouping needs k >= 1, got {k}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups: list[np.ndarray] = []
    for label in sorted(set(labels.tolist()) - {UNKNOWN}):
        members = rng.permutation(np.flatnonzero(labels == label))
        for start in range(0, len(members), k):
            group = members[start:start + k]
            if len(group) == k or not drop_remaining:
                groups.append(np.sort(group))
    return groups


@dataclasses.dataclass(frozen=True)
class GroupingParams:
    """``dset.grouping``: average ``k`` same-label training windows per item (1 = no grouping, today's behaviour);
    ``valid_k`` / ``test_k`` (null: as ``k``) group the evaluation splits (LibriBrain's competition: test by 100);
    ``dynamic`` redraws the training groups every epoch, seeded by ``(seed, epoch)``."""

    k: int = 1
    dynamic: bool = False
    valid_k: int | None = None
    test_k: int | None = None
    drop_remaining: bool = False

    def __post_init__(self) -> None:
        for name in ("k", "valid_k", "test_k"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"dset.grouping.{name} must be >= 1 (or null), got {value}")

    def k_of(self, split: str) -> int:
        """The group size of ``split`` (train / valid / test)."""
        value = {"valid": self.valid_k, "test": self.test_k}.get(split)
        return int(self.k if value is None else value)

    @property
    def active(self) -> bool:
        return any(self.k_of(s) > 1 for s in ("train", "valid", "test"))


class GroupedDataset(torch.utils.data.Dataset):
    """Items that average ``k`` same-label items of ``base`` (whose ``labels`` are given, or read from
    ``base._label``): ``brain`` is the mean, ``label`` the group's label, ``index`` the group's row in
    :attr:`segments`, the other keys are those of the group's first member; ``group_size`` says how many windows
    were averaged. Windows of unknown label (-1) belong to no group. Other attributes (``vocabulary``,
    ``recordings``, ``window`` ...) are those of ``base``. Averaging assumes one montage within a group."""

    def __init__(self, base: tp.Any, k: int, seed: int = 0, drop_remaining: bool = False, dynamic: bool = False,
                 labels: np.ndarray | None = None) -> None:
        self.base = base
        self.k = int(k)
        self.seed = int(seed)
        self.drop_remaining = drop_remaining
        self.dynamic = dynamic
        self.labels = np.asarray(base._label if labels is None else labels)
        self.epoch = 0
        self.groups = group_indices(self.labels, self.k, [self.seed, 0], drop_remaining)

    def __getattr__(self, name: str) -> tp.Any:
        if name.startswith("__") or name == "base":  # pickling / copying look these up before __init__ ran
            raise AttributeError(name)
        return getattr(self.base, name)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the groups for ``epoch`` when ``dynamic`` (else keep those of epoch 0)."""
        self.epoch = int(epoch)
        if hasattr(self.base, "set_epoch"):  # the members' augmentation draws follow the epoch too
            self.base.set_epoch(epoch)
        if self.dynamic:
            self.groups = group_indices(self.labels, self.k, [self.seed, self.epoch], self.drop_remaining)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def _label(self) -> np.ndarray:
        """The label of each group."""
        return np.array([self.labels[g[0]] for g in self.groups], dtype=np.int64)

    @property
    def n_unseen(self) -> int:
        return 0  # windows of unseen labels are in no group

    @property
    def segments(self) -> pd.DataFrame:
        """One row per group: the ``base.segments`` row of its first member (label, label_name, subject,
        recording_uid ...), plus ``members`` (the base rows averaged, space-separated) and ``group_size``."""
        first = np.array([g[0] for g in self.groups], dtype=np.int64)
        table = self.base.segments.iloc[first].reset_index(drop=True).copy()
        table["members"] = [" ".join(str(int(i)) for i in g) for g in self.groups]
        table["group_size"] = [len(g) for g in self.groups]
        return table

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        members = [int(i) for i in self.groups[index]]
        if hasattr(self.base, "__getitems__"):
            batch = self.base.__getitems__(members)
            item = {key: value[0] for key, value in batch.items()}
            item["brain"] = batch["brain"].mean(dim=0)
        else:
            items = [self.base[i] for i in members]
            item = dict(items[0])
            item["brain"] = torch.stack([m["brain"] for m in items]).mean(dim=0)
        item.pop("mask", None)
        item["index"] = int(index)
        item["label"] = int(self.labels[members[0]])
        item["group_size"] = len(members)
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        from .dataset import collate

        return collate([self[int(i)] for i in indices])


def group_datasets(datasets: tp.Any, params: GroupingParams, seed: int = 0) -> tp.Any:
    """``datasets`` (:class:`~bm2.data.dataset.Datasets`) with each split wrapped in a :class:`GroupedDataset` of
    its own ``k`` (splits of ``k`` 1 unchanged; all unchanged when no ``k`` exceeds 1). Only the training split is
    ``dynamic``. Class labels are required."""
    if not params.active:
        return datasets
    if "label" not in datasets.targets:
        raise ValueError("dset.grouping averages windows of the same class: it needs a task with class labels "
                         f"(test.task=classification), but the targets are {list(datasets.targets)}")
    changes = {}
    for split in ("train", "valid", "test"):
        k = params.k_of(split)
        if k > 1:
            changes[split] = GroupedDataset(datasets[split], k, seed=seed, drop_remaining=params.drop_remaining,
                                            dynamic=params.dynamic and split == "train")
            logger.info("dset.grouping: %s split averages %d same-label windows per item (%d windows -> %d "
                        "items%s)", split, k, len(datasets[split]), len(changes[split]),
                        ", redrawn every epoch" if changes[split].dynamic else "")
    return dataclasses.replace(datasets, **changes)
