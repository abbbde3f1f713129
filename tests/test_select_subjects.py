"""``dset.subjects``: the windows of some subjects, kept after the split of all subjects' trials (builders)."""

from __future__ import annotations

import types

import pandas as pd
import pytest

from bm2.builders import select_subjects
from bm2.data import Datasets
from bm2.data.dataset import NormParams, SegmentDataset
from bm2.data.segments import WindowParams


def _datasets() -> Datasets:
    recordings = [types.SimpleNamespace(study="synthetic_seeg", subject=s, uid=f"u{s}") for s in ("001", "002")]
    splits = {}
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        segments = pd.DataFrame({"recording": [i % 2 for i in range(n)], "subject": [("001", "002")[i % 2]
                                 for i in range(n)], "start": range(n), "label": [i % 3 for i in range(n)]})
        splits[split] = SegmentDataset(recordings, segments, WindowParams(), NormParams(), None, ("label",),
                                       ["a", "b", "c"])
    return Datasets(n_subjects=2, feature_dim=0, recordings=recordings, vocabulary=["a", "b", "c"],
                    targets=("label",), **splits)


def test_keeps_the_windows_of_the_subjects_and_everything_else():
    full = _datasets()
    one = select_subjects(full, [1])  # a number matches the zero-padded id
    for split in ("train", "valid", "test"):
        assert set(one[split].segments.subject) == {"001"}
        assert len(one[split]) == len(full[split]) // 2
        # the rows kept are exactly the subject's, with their split, start and label unchanged
        expected = full[split].segments[full[split].segments.subject == "001"].reset_index(drop=True)
        pd.testing.assert_frame_equal(one[split].segments, expected)
    assert one.n_subjects == 2 and one.recordings is full.recordings and one.vocabulary == full.vocabulary
    assert select_subjects(full, None) is full and len(select_subjects(full, ["001", "002"]).train) == 6


def test_an_unknown_subject_is_an_error_listing_the_available_ones():
    with pytest.raises(ValueError, match=r"\['007'\] match no subject.*available: \['001', '002'\]"):
        select_subjects(_datasets(), ["001", "007"])
