"""Class-structured training batches (Lee et al. 2024's ``BatchSamplerClass``, rebuilt from its description).

Each batch has an anchor class: ``positives`` windows of that class, plus ``negatives`` windows of **every** class
outside the anchor's group (its word triplet for lee2024: a word, its synonym and its phonological neighbour are
never negatives of each other). The anchors cycle through a seeded permutation of the training classes; windows are
drawn without replacement within a class when it has enough, with replacement otherwise. An epoch has about as
many windows as the training split (at least one batch). Everything is seeded by ``seed`` and the epoch, so a
resumed run draws the same batches. Under DDP (``rank`` / ``world_size``) every process draws the same seeded
sequence of batches and keeps every ``world_size``-th one from its rank on: the ranks share the epoch's batches
without overlap, each running the same number of steps. Deviation: the original hard-codes its class list to the
36 triplet words; here every training class takes part, with ``groups`` saying which classes share a group.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch

from ..targets import UNKNOWN


def class_groups_for(name: str | None, vocabulary: tp.Sequence[str]) -> list[int]:
    """Group id of each class of ``vocabulary`` under the named grouping: ``null`` / ``none`` (each class alone) or
    ``lee2024_triplets`` (:func:`bm2.studies.lee2024.class_groups`); the error lists the valid names."""
    if name in (None, "none"):
        return list(range(len(vocabulary)))
    if name == "lee2024_triplets":
        from ..studies.lee2024 import class_groups

        return class_groups(vocabulary)
    raise KeyError(f"unknown dset.batches.groups {name!r}; valid names: [none, lee2024_triplets]")


class ClassStructuredBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of ``positives`` windows of an anchor class and ``negatives`` windows of each class outside its group.

    Parameters
    ----------
    labels : class id of each window of the training split (-1 = unknown, never drawn).
    groups : group id of each class (index = class id); classes of one group are never each other's negatives.
    positives, negatives : windows of the anchor class, and of each other-group class, per batch.
    seed : seed of the draw (combined with the epoch set by :meth:`set_epoch`).
    n_batches : batches per epoch over all processes (None: the training windows divided by the batch size, at
        least 1).
    rank, world_size : this process's share under DDP (:mod:`bm2.distrib`): the batches ``rank``, ``rank +
        world_size`` ... of the epoch's sequence, ``max(1, n_batches // world_size)`` of them (the same on every rank).

    Raises ``ValueError`` when no class has a window, ``groups`` is shorter than the largest label, or ``rank`` is
    outside ``[0, world_size)``.
    """

    def __init__(self, labels: np.ndarray, groups: tp.Sequence[int], positives: int = 2, negatives: int = 2,
                 seed: int = 0, n_batches: int | None = None, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"class-structured batches: rank {rank} outside [0, world_size={world_size})")
        self.rank, self.world_size = int(rank), int(world_size)
        labels = np.asarray(labels, dtype=np.int64)
        known = labels[labels != UNKNOWN]
        if not len(known):
            raise ValueError("class-structured batches need training windows with known labels")
        if int(known.max()) >= len(groups):
            raise ValueError(f"{len(groups)} class groups for labels up to {int(known.max())}")
        if positives < 1 or negatives < 0:
            raise ValueError(f"dset.batches needs positives >= 1 and negatives >= 0, got {positives}, {negatives}")
        self.members = {int(c): np.flatnonzero(labels == c) for c in np.unique(known)}
        self.groups = np.asarray(groups)
        self.positives, self.negatives, self.seed = int(positives), int(negatives), int(seed)
        self.epoch = 0
        classes = list(self.members)
        sizes = [self.positives + self.negatives * sum(self.groups[o] != self.groups[c] for o in classes)
                 for c in classes]
        self.batch_size = int(round(float(np.mean(sizes))))
        self.n_batches = int(n_batches) if n_batches is not None else max(1, len(known) // max(1, self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches of this rank per epoch."""
        return max(1, self.n_batches // self.world_size)

    def _take(self, rng: np.random.Generator, c: int, n: int) -> list[int]:
        pool = self.members[c]
        return rng.choice(pool, n, replace=len(pool) < n).tolist()

    def __iter__(self) -> tp.Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.array(list(self.members))
        total = len(self) * self.world_size  # every rank draws them all (same rng), keeps its own
        anchors = np.concatenate([rng.permutation(classes) for _ in range(-(-total // len(classes)))])
        for i, anchor in enumerate(anchors[:total].tolist()):
            batch = self._take(rng, anchor, self.positives)
            for other in classes.tolist():
                if self.groups[other] != self.groups[anchor]:
                    batch += self._take(rng, other, self.negatives)
            if i % self.world_size == self.rank:
                yield batch


__all__ = ["ClassStructuredBatchSampler", "class_groups_for"]
