"""Grouping: seeded, reproducible averages of K same-label windows."""

from __future__ import annotations

import dataclasses

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


# -- wired into the spine: dset.grouping on a real labelled dataset -------------------------------------------------

def _datasets(array_recording, tmp_path):
    from bm2.cache import Cache
    from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
    from bm2.features import FeatureStack, WordOnset
    from bm2.preprocessing import PreprocessParams

    from .test_dataset_targets import _events

    rec = array_recording(seconds=50.0, sfreq=100.0, events=_events())
    return build_datasets([rec], Cache(tmp_path), PreprocessParams(sample_rate=50.0), FeatureStack([WordOnset()]),
                          WindowParams(tmin=-0.2, tmax=0.8, anchor="word"), SplitParams(0.25, 0.25, seed=1),
                          NormParams(), targets=("label",))


def test_dset_grouping_averages_k_windows_keeps_the_batch_spec_and_one_segments_row_per_group(array_recording,
                                                                                              tmp_path):
    from bm2.data import collate
    from bm2.data.grouping import GroupingParams, group_datasets

    plain = _datasets(array_recording, tmp_path)
    assert group_datasets(plain, GroupingParams(), seed=0) is plain  # k=1 everywhere: today's datasets untouched
    grouped = group_datasets(plain, GroupingParams(k=5, test_k=2), seed=0)
    train, test = grouped.train, grouped.test
    assert train.k == 5 and test.k == 2 and grouped.valid.k == 5 and not train.dynamic
    labels = plain.train.segments.label.to_numpy()
    counts = np.bincount(labels)
    assert len(train) == sum(-(-c // 5) for c in counts)  # ceil(count / 5) groups per label
    # hand-check one group: five training windows of one label, averaged
    g = next(i for i, m in enumerate(train.groups) if len(m) == 5)
    members = train.groups[g]
    assert len(set(labels[members])) == 1
    expected = sum(plain.train[int(m)]["brain"] for m in members) / 5
    item = train[g]
    torch.testing.assert_close(item["brain"], expected)
    assert item["label"] == labels[members[0]] and item["index"] == g and item["group_size"] == 5
    # the batch spec of bm2/tasks/base.py
    batch = collate(train.__getitems__([g, 0, len(train) - 1]))
    assert set(batch) == {"brain", "mask", "positions", "subject_index", "index", "label"}
    assert batch["brain"].shape == (3, 12, 50) and batch["index"].tolist() == [g, 0, len(train) - 1]
    torch.testing.assert_close(batch["brain"][0], expected)
    # segments: one row per group, the first member's identity, the members listed
    seg = train.segments
    assert len(seg) == len(train) and list(seg.members[g].split()) == [str(m) for m in members]
    first = plain.train.segments.iloc[members[0]]
    for col in ("label", "label_name", "subject", "recording_uid"):
        assert seg[col][g] == first[col]
    assert seg.group_size.tolist() == [len(m) for m in train.groups]
    assert train._label.tolist() == seg.label.tolist() and train.vocabulary == plain.vocabulary
    # DataLoader workers get a pickled copy: same groups, same items
    import pickle

    copy = pickle.loads(pickle.dumps(train))
    torch.testing.assert_close(copy[g]["brain"], expected)
    assert [m.tolist() for m in copy.groups] == [m.tolist() for m in train.groups]
    # the split manifest still lists windows, not groups
    assert len(grouped.manifest()) == len(plain.manifest())


def test_classification_items_csv_has_one_row_per_group(array_recording, tmp_path):
    from bm2.data.grouping import GroupingParams, group_datasets
    from bm2.tasks.classification import ClassificationTask

    grouped = group_datasets(_datasets(array_recording, tmp_path), GroupingParams(k=3), seed=0)

    class Mean(torch.nn.Module):
        def forward(self, brain, **kwargs):
            return brain.mean(dim=(1, 2))[:, None] * torch.arange(3.0)

    result = ClassificationTask().evaluate(Mean(), grouped.test, n_boot=10, train=grouped.train)
    items = result.items
    assert len(items) == len(grouped.test) and items["index"].tolist() == list(range(len(grouped.test)))
    assert items["members"].tolist() == grouped.test.segments.members.tolist()
    assert items["label"].tolist() == grouped.test._label.tolist()


def test_grouping_is_seeded_and_dynamic_groups_change_with_the_epoch(array_recording, tmp_path):
    from bm2.data.grouping import GroupingParams, group_datasets

    plain = _datasets(array_recording, tmp_path)
    one = group_datasets(plain, GroupingParams(k=3, dynamic=True), seed=7)
    two = group_datasets(plain, GroupingParams(k=3, dynamic=True), seed=7)
    draws = []
    for ds in (one, two):
        per_epoch = []
        for epoch in (1, 2, 1):
            ds.train.set_epoch(epoch)
            per_epoch.append([g.tolist() for g in ds.train.groups])
        draws.append(per_epoch)
    assert draws[0] == draws[1]  # same seed: same groups (a resumed run redraws the same ones)
    assert draws[0][0] != draws[0][1] and draws[0][0] == draws[0][2]  # redrawn per epoch, seeded by it
    assert not one.valid.dynamic and not one.test.dynamic  # evaluation groups stay fixed
    other = group_datasets(plain, GroupingParams(k=3), seed=8)
    assert [g.tolist() for g in other.test.groups] != [g.tolist() for g in one.test.groups]
    with pytest.raises(ValueError, match="class labels"):
        group_datasets(dataclasses.replace(plain, targets=("speech",)), GroupingParams(k=2))
    with pytest.raises(ValueError, match="valid_k"):
        GroupingParams(valid_k=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_loader_reads_the_groups_not_the_windows_they_wrap(array_recording, tmp_path, workers):
    # GroupedDataset forwards unknown attributes to its base, whose batch() reads single windows: the training
    # loader must read the groups' averages (as torch's DataLoader does)
    from bm2.data import collate
    from bm2.data.grouping import GroupingParams, group_datasets
    from bm2.data.loader import BatchLoader

    train = group_datasets(_datasets(array_recording, tmp_path), GroupingParams(k=5), seed=0).train
    kwargs = dict(batch_size=3, shuffle=True, drop_last=True)
    ours = list(BatchLoader(train, num_workers=workers, generator=torch.Generator().manual_seed(2), **kwargs))
    theirs = list(torch.utils.data.DataLoader(train, collate_fn=collate, generator=torch.Generator().manual_seed(2),
                                              **kwargs))
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    g = int(ours[0]["index"][0])
    expected = sum(train.base[int(m)]["brain"] for m in train.groups[g]) / len(train.groups[g])
    torch.testing.assert_close(ours[0]["brain"][0], expected)
