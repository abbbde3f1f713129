"""Targets from events: label vocabulary from training, unseen labels, speech / silence per sample."""

import numpy as np
import pandas as pd
import pytest

from bm2.events import make_events
from bm2.targets import (UNKNOWN, LabelParams, SpeechParams, build_vocabulary, encode_labels, label_names,
                         speech_timeline)


def test_vocabulary_is_sorted_and_top_n_breaks_ties_alphabetically():
    train = ["the"] * 5 + ["cat"] * 3 + ["dog"] * 3 + ["a"] * 1
    assert build_vocabulary(train, LabelParams()) == ["a", "cat", "dog", "the"]
    # top 2: "the" (5), then "cat" before "dog" (3 each, alphabetical); ids follow sorted names
    assert build_vocabulary(train, LabelParams(top_n=2)) == ["cat", "the"]
    assert build_vocabulary(train, LabelParams(min_count=3)) == ["cat", "dog", "the"]
    with pytest.raises(ValueError, match="at least two"):
        build_vocabulary(["x", "x"], LabelParams())


def test_unseen_labels_are_encoded_unknown_not_mapped():
    ids = encode_labels(["dog", "cow", "the"], ["cat", "dog", "the"])
    assert ids.tolist() == [1, UNKNOWN, 2]


def test_label_names_read_the_anchor_rows_and_name_missing_columns():
    events = pd.DataFrame({"text": ["a", None, "c"], "kind": ["word"] * 3})
    assert label_names(events, np.array([2, -1, 0, 1]), "text").tolist() == ["c", "", "a", ""]
    with pytest.raises(KeyError, match="not an events column.*available"):
        label_names(events, np.array([0]), "lemma")


def test_speech_timeline_marks_spans_on_the_sample_grid():
    events = make_events([dict(kind="sound", onset=1.0, duration=0.5, filepath="a.wav", offset=0.0),
                          dict(kind="sound", onset=1.25, duration=1.0, filepath="b.wav", offset=0.0),
                          dict(kind="block", onset=0.0, duration=4.0, uid="x")])
    speech = speech_timeline(events, n_times=40, sample_rate=10.0, params=SpeechParams(("sound",)))
    assert speech.dtype == np.uint8
    expected = np.zeros(40, dtype=np.uint8)
    expected[10:23] = 1  # [1.0, 2.25) s at 10 Hz, overlapping spans merged (2.25 s rounds to 22 or 23)
    expected[round(2.25 * 10):] = 0
    assert (speech == expected).all()
    with pytest.raises(ValueError, match="dset.speech.kinds"):
        speech_timeline(events, 40, 10.0, SpeechParams(("word",)))
