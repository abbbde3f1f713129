"""Grouping: average K same-label windows into one item to raise the SNR (LibriBrain's "signal averaging").

:func:`group_indices` draws the groups: per label (in sorted order), a permutation of that label's windows from a
seeded generator, cut into consecutive groups of ``k``; the last, smaller group is kept unless ``drop_remaining``
(pnpl keeps it, so some "K-averages" average fewer trials). The same ``(labels, k, seed)`` always gives the same
groups (pnpl's ``GroupedDataset`` shuffles with torch's global RNG, unseeded). :class:`GroupedDataset` wraps a
window dataset; with ``dynamic=True`` the groups are redrawn at every :meth:`~GroupedDataset.set_epoch`
("dynamic grouping", seeded by ``(seed, epoch)``). Not yet wired into the training loop (``dset`` keys): use it
from code.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch

from ..targets import UNKNOWN


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


class GroupedDataset(torch.utils.data.Dataset):
    """Items that average ``k`` same-label items of ``base`` (whose ``labels`` are given, or read from
    ``base._label``): ``brain`` is the mean, the other keys are those of the group's first item, and ``group_size``
    says how many windows were averaged."""

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

    def set_epoch(self, epoch: int) -> None:
        """Redraw the groups for ``epoch`` when ``dynamic`` (else keep those of epoch 0)."""
        self.epoch = int(epoch)
        if self.dynamic:
            self.groups = group_indices(self.labels, self.k, [self.seed, self.epoch], self.drop_remaining)

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        members = [self.base[int(i)] for i in self.groups[index]]
        item = dict(members[0])
        item["brain"] = torch.stack([m["brain"] for m in members]).mean(dim=0)
        item["group_size"] = len(members)
        return item
