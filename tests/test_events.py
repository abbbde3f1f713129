import numpy as np
import pandas as pd
import pytest

from bm2.events import ARPABET, EventsValidationError, make_events, validate_events


def _valid_rows():
    return [
        dict(kind="sound", onset=1.0, duration=2.0, filepath="a.wav", offset=0.0),
        dict(kind="word", onset=1.1, duration=0.3, text="hello", sentence_id="s1", word_index=0),
        dict(kind="phoneme", onset=1.1, duration=0.1, text="hh"),
        dict(kind="phoneme", onset=1.2, duration=0.1, text="AH0"),
        dict(kind="block", onset=0.5, duration=3.0, uid="hello world"),
    ]


def test_valid_events_are_normalised():
    ev = make_events(_valid_rows())
    assert list(ev.kind) == ["block", "sound", "phoneme", "word", "phoneme"]
    phones = ev[ev.kind == "phoneme"].text.tolist()
    assert phones == ["HH", "AH"]  # upper-cased, stress stripped
    assert ev.loc[ev.kind == "word", "word_index"].tolist() == [0]
    assert len(ARPABET) == 39


@pytest.mark.parametrize("change, column, row", [
    ({"kind": "noise"}, "kind", 1),
    ({"onset": -1.0}, "onset", 1),
    ({"onset": np.nan}, "onset", 1),
    ({"duration": np.inf}, "duration", 1),
    ({"text": ""}, "text", 1),
    ({"sentence_id": None}, "sentence_id", 1),
    ({"word_index": 1.5}, "word_index", 1),
    ({"word_index": -2}, "word_index", 1),
])
def test_errors_name_column_and_row(change, column, row):
    rows = _valid_rows()
    rows[row].update(change)
    with pytest.raises(EventsValidationError) as info:
        validate_events(pd.DataFrame(rows), source="my.tsv")
    msg = str(info.value)
    assert f"'{column}'" in msg and "my.tsv" in msg and str(row) in msg


def test_phoneme_label_outside_arpabet():
    rows = _valid_rows()
    rows[2]["text"] = "XX"
    with pytest.raises(EventsValidationError, match="ARPABET.*rows 2"):
        validate_events(pd.DataFrame(rows))


def test_sound_and_block_need_positive_duration_and_fields():
    rows = _valid_rows()
    rows[0]["duration"] = 0.0
    with pytest.raises(EventsValidationError, match="'duration'.*> 0"):
        validate_events(pd.DataFrame(rows))
    rows = _valid_rows()
    del rows[0]["filepath"]
    with pytest.raises(EventsValidationError, match="'filepath'.*'sound'"):
        validate_events(pd.DataFrame(rows))
    rows = _valid_rows()
    rows[0]["offset"] = -1
    with pytest.raises(EventsValidationError, match="'offset'"):
        validate_events(pd.DataFrame(rows))


def test_missing_required_columns_and_type():
    with pytest.raises(EventsValidationError, match="missing required column"):
        validate_events(pd.DataFrame({"kind": ["word"]}))
    with pytest.raises(EventsValidationError, match="DataFrame"):
        validate_events([1, 2])  # type: ignore[arg-type]


def test_many_offending_rows_are_summarised():
    rows = [dict(kind="block", onset=-float(i + 1), duration=1.0, uid="x") for i in range(8)]
    with pytest.raises(EventsValidationError, match=r"and 3 more"):
        validate_events(pd.DataFrame(rows))
