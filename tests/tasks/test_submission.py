"""LibriBrain 2025 submission tables: columns, order and values from fake model outputs."""

from __future__ import annotations

import numpy as np
import pytest

from bm2.events import ARPABET
from bm2.tasks.submission import (PHONEME_COLUMNS, SPEECH_COLUMNS, SubmissionError, phoneme_submission,
                                  speech_submission)


def test_phoneme_table_has_the_competition_columns_in_arpabet_order():
    assert PHONEME_COLUMNS[:4] == ["segment_idx", "phoneme_1", "phoneme_2", "phoneme_3"]
    assert len(PHONEME_COLUMNS) == 40 and PHONEME_COLUMNS[-1] == "phoneme_39"
    vocabulary = ["ZH", "aa", "ah_B"]  # the model's classes, in its own order; any case, position tags stripped
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    table = phoneme_submission(probs, vocabulary)
    assert list(table.columns) == PHONEME_COLUMNS and table.shape == (2, 40)
    assert table.segment_idx.tolist() == [0, 1]
    # aa is ARPABET class 1, ah class 3, zh class 39; the 36 classes never learnt get 0
    assert ARPABET[0] == "AA" and ARPABET[2] == "AH" and ARPABET[38] == "ZH"
    assert table.phoneme_1.tolist() == [0.5, 0.1] and table.phoneme_3.tolist() == [0.3, 0.8]
    assert table.phoneme_39.tolist() == [0.2, 0.1] and table.phoneme_2.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(table.iloc[:, 1:].sum(axis=1), 1.0)
    with pytest.raises(SubmissionError, match="not one of the 39"):
        phoneme_submission(probs, ["cat", "aa", "ah"])
    with pytest.raises(SubmissionError, match="do not match"):
        phoneme_submission(probs, ["aa", "ah"])


def test_speech_table_has_one_row_per_sample_and_fills_uncovered_samples():
    table = speech_submission(np.array([np.nan, 0.2, 0.4, np.nan, 0.9, np.nan]))
    assert list(table.columns) == SPEECH_COLUMNS == ["idx", "speech_prob"]
    assert table.idx.tolist() == list(range(6))
    assert table.speech_prob.tolist() == [0.2, 0.2, 0.4, 0.4, 0.9, 0.9]
    assert speech_submission(np.full(3, np.nan)).speech_prob.tolist() == [0.5] * 3
