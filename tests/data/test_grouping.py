"""Grouping: seeded, reproducible averages of K same-label windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bm2.data.grouping import GroupedDataset, group_indices

LABELS = np.array([0, 1, 0, 2, 1, 0, 0, 1, -1, 0, 2, 0, 0])


class Windows:
    def __init__(self, labels):
        self._label = labels
        self.brain = torch.randn(len(labels), 3, 5, generator=torch.Generator().manual_seed(0))

    def __getitem__(self, i):
        return {"brain": self.brain[i], "label": int(self._label[i]), "index": i}


def test_groups_share_a_label_and_are_seeded():
    groups = group_indices(LABELS, 3, seed=4)
    assert all(len(set(LABELS[g])) == 1 for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == sorted(np.flatnonzero(LABELS >= 0).tolist())  # -1 left out
    assert [len(g) for g in groups] == [3, 3, 1, 3, 2]  # label 0: 7 windows -> 3 + 3 + 1; label 1: 3; label 2: 2
    assert all(np.array_equal(a, b) for a, b in zip(groups, group_indices(LABELS, 3, seed=4)))
    other = group_indices(LABELS, 3, seed=5)
    assert any(not np.array_equal(a, b) for a, b in zip(groups, other))
    assert [len(g) for g in group_indices(LABELS, 3, seed=4, drop_remaining=True)] == [3, 3, 3]
    with pytest.raises(ValueError):
        group_indices(LABELS, 0)


def test_grouped_items_average_their_members_and_dynamic_groups_change():
    base = Windows(LABELS)
    ds = GroupedDataset(base, k=2, seed=1)
    for i in range(len(ds)):
        item, members = ds[i], ds.groups[i]
        torch.testing.assert_close(item["brain"], base.brain[members].mean(0))
        assert item["label"] == LABELS[members[0]] and item["group_size"] == len(members)
    static = [g.tolist() for g in ds.groups]
    ds.set_epoch(3)
    assert [g.tolist() for g in ds.groups] == static  # not dynamic: fixed groups
    dynamic = GroupedDataset(base, k=2, seed=1, dynamic=True)
    assert [g.tolist() for g in dynamic.groups] == static
    dynamic.set_epoch(1)
    assert [g.tolist() for g in dynamic.groups] != static
    again = GroupedDataset(base, k=2, seed=1, dynamic=True)
    again.set_epoch(1)
    assert [g.tolist() for g in again.groups] == [g.tolist() for g in dynamic.groups]
