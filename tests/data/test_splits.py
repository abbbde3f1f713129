"""Split strategies: hash, named recordings, last-N in file order, stratified and k-fold over windows."""

import numpy as np
import pytest

from bm2.data.splits import (POOL, SplitParams, block_splits, check_named, named_split, recording_attributes,
                             window_splits)


class _Rec:
    def __init__(self, subject, session, task, run):
        self.study, self.subject, self.session, self.task = "libri", subject, session, task
        self.identity = {"run": run}
        self.uid = f"uid-{subject}-{session}-{run}"


def test_named_split_matches_selectors_and_reports_absent_ones():
    params = SplitParams(strategy="named", valid_recordings=({"session": "11", "task": "Sherlock1", "run": "2"},),
                         test_recordings=({"session": "12", "run": "2"},))
    recs = [_Rec("0", s, "Sherlock1", r) for s, r in (("1", "1"), ("11", "2"), ("12", "2"))]
    assert [named_split(r, params) for r in recs] == ["train", "valid", "test"]
    assert recording_attributes(recs[1])["run"] == "2"
    check_named(recs, params)
    with pytest.raises(ValueError, match="'session': '13'.*listed but absent"):
        check_named(recs, SplitParams(strategy="named", test_recordings=({"session": "13"},)))
    with pytest.raises(ValueError, match="valid_recordings"):
        SplitParams(strategy="named")


def test_last_n_takes_the_last_blocks_in_file_order_and_valid_just_before():
    params = SplitParams(strategy="last_n", last_n=3, valid=0.25)
    splits = block_splits(11, [f"b{i}" for i in range(11)], params)
    assert splits == ["train"] * 6 + ["valid"] * 2 + ["test"] * 3
    assert block_splits(2, ["a", "b"], params) == ["test", "test"]


def test_window_level_strategies_pool_blocks():
    assert block_splits(3, ["a", "b", "c"], SplitParams(strategy="stratified")) == [POOL] * 3


def test_stratified_fractions_per_class_are_exact_and_seeded():
    labels = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    params = SplitParams(strategy="stratified", test=0.1, valid=0.1, seed=3)
    out = window_splits(labels, params)
    for cls, n in (("a", 50), ("b", 30), ("c", 20)):
        rows = labels == cls
        assert (out[rows] == "test").sum() == round(0.1 * n) and (out[rows] == "valid").sum() == round(0.1 * n)
    assert (out == window_splits(labels, params)).all()
    assert not (out == window_splits(labels, SplitParams(strategy="stratified", test=0.1, valid=0.1, seed=4))).all()


def test_kfold_folds_partition_the_windows_and_are_stratified():
    labels = np.repeat(np.arange(4), 25)
    tests = [window_splits(labels, SplitParams(strategy="kfold", n_folds=5, fold=f, valid=0.1)) == "test"
             for f in range(5)]
    assert (np.sum(tests, axis=0) == 1).all()  # every window is in exactly one test fold
    for t in tests:
        assert all(t[labels == c].sum() == 5 for c in range(4))  # 25 per class / 5 folds
    with pytest.raises(ValueError, match="fewer windows than folds"):
        window_splits(np.array([0] * 20 + [1] * 3), SplitParams(strategy="kfold", n_folds=5))
    with pytest.raises(ValueError, match="fold=5"):
        SplitParams(strategy="kfold", n_folds=5, fold=5)
