"""The libribrain2025 study on fixtures written in the exact serialised layout (h5 + events TSV)."""

from __future__ import annotations

import logging
import re

import h5py
import numpy as np
import pytest

from bm2.data.splits import SplitParams, check_named, named_split
from bm2.events import ARPABET
from bm2.studies import StudyError, get_study_class
from bm2.studies.libribrain2025 import (SPLIT_2025, LibriBrain2025, neuromag_channels, run_key, selectors)
from bm2.targets import SpeechParams, speech_timeline

from .fixtures_libribrain import write_events, write_run

RUNS = [("0", "1", "Sherlock1", "1"), ("0", "11", "Sherlock1", "2"), ("0", "12", "Sherlock1", "2")]


@pytest.fixture()
def root(tmp_path):
    for i, key in enumerate(RUNS):
        write_run(tmp_path, *key, seed=i)
    return tmp_path


def test_pinned_split_is_data_with_provenance():
    runs = SPLIT_2025["runs"]
    assert len(runs) == 90 and len(set(runs)) == 90
    assert "constants.json" in SPLIT_2025["provenance"]
    assert ("0", "11", "Sherlock1", "2") in runs and ("0", "12", "Sherlock1", "2") in runs
    assert ("0", "8", "Sherlock4", "1") not in runs and ("0", "11", "Sherlock1", "1") not in runs
    train = [k for k in runs if k not in SPLIT_2025["valid"] + SPLIT_2025["test"]]
    assert len(train) == 88
    assert selectors()["test_recordings"] == [{"subject": "0", "session": "12", "task": "Sherlock1", "run": "2"}]
    assert get_study_class("libribrain2025") is LibriBrain2025


def test_missing_listed_runs_are_reported_never_silently_dropped(root, caplog):
    study = LibriBrain2025(root, books=["Sherlock1"])
    assert len(study.missing_runs()) == 9  # Sherlock1 lists 12 runs, 3 are on disk
    with caplog.at_level(logging.WARNING):
        recs = list(study.iter_recordings())
    assert [(r.subject, r.session, r.task, r.run) for r in recs] == RUNS
    assert "9 of the 12 runs" in caplog.text and run_key("0", "5", "Sherlock1", "1") in caplog.text
    with pytest.raises(StudyError, match="absent.*sub-0_ses-10_task-Sherlock1_run-1"):
        list(LibriBrain2025(root, books=["Sherlock1"], on_missing="error").iter_recordings())
    # split null: every run on disk, nothing reported missing
    assert len(list(LibriBrain2025(root, split=None).iter_recordings())) == 3


def test_named_split_selects_the_2025_runs(root):
    recs = list(LibriBrain2025(root, split=None).iter_recordings())
    params = SplitParams(strategy="named", **selectors())
    check_named(recs, params)
    assert [named_split(r, params) for r in recs] == ["train", "valid", "test"]


def test_events_map_phonemes_words_and_speech(root):
    rec = list(LibriBrain2025(root, split=None).iter_recordings())[0]
    ev = rec.events()
    phones = ev[ev.kind == "phoneme"]
    assert list(phones.text) == ["DH", "AH", "HH", "OW", "Z", "S", "EH", "D"]
    assert set(phones.text) <= set(ARPABET)
    assert rec.dropped == {"oov_S": 1, "sil": 1}
    words = ev[ev.kind == "word"]
    assert list(words.text) == ["the", "holmes", "said"] and list(words.word_index) == [0, 1, 0]
    assert words.sentence_id.iloc[0] == words.sentence_id.iloc[1] != words.sentence_id.iloc[2]
    blocks = ev[ev.kind == "block"]
    assert len(blocks) == 1 and blocks.onset.iloc[0] == 0 and blocks.duration.iloc[0] == pytest.approx(4.0)
    # pnpl's rule: silence before the first annotation (0.2 s) and inside silence rows, speech elsewhere
    speech = speech_timeline(ev, 1000, 250.0, SpeechParams(kinds=("sound",)))
    expected = np.ones(1000, dtype=np.uint8)
    expected[:250] = 0          # [0, 0.2) before the first annotation, [0.2, 1.0) a silence row
    expected[425:575] = 0       # [1.7, 2.3)
    assert np.array_equal(speech, expected)


def test_run_without_silence_rows_marks_word_spans(tmp_path):
    write_run(tmp_path, "0", "1", "Sherlock1", "1",
              events=[("word", "a", 1.0, 0.5, 0), ("phoneme", "ah_S", 1.0, 0.5, 0)])
    ev = list(LibriBrain2025(tmp_path, split=None).iter_recordings())[0].events()
    sound = ev[ev.kind == "sound"]
    assert list(zip(sound.onset, sound.duration)) == [(1.0, 0.5)]


def test_raw_is_lazy_neuromag_and_reads_h5_slices(root):
    rec = list(LibriBrain2025(root, split=None).iter_recordings())[0]
    raw = rec.raw()
    assert not raw.preload and raw.info["sfreq"] == 250.0 and raw.n_times == 1000
    assert raw.get_channel_types().count("mag") == 102 and raw.get_channel_types().count("grad") == 204
    with h5py.File(rec.h5, "r") as f:
        expected = f["data"][:, 100:200][[5, 2, 300]]
    names = [raw.ch_names[i] for i in (5, 2, 300)]
    np.testing.assert_array_equal(raw.get_data(picks=names, start=100, stop=200).astype(np.float32), expected)
    pos = rec.sensor_positions(raw.ch_names)
    assert pos.shape == (306, 2) and len(np.unique(np.round(pos, 5), axis=0)) == 306
    assert neuromag_channels()[0][:3] == ["MEG 0113", "MEG 0112", "MEG 0111"]


def test_channel_names_attribute_is_used_when_complete(tmp_path):
    h5, _ = write_run(tmp_path, "0", "1", "Sherlock1", "1")
    names = [n.replace(" ", "") for n in neuromag_channels()[0]]
    with h5py.File(h5, "a") as f:
        f.attrs["channel_names"] = ",".join(names)
    raw = list(LibriBrain2025(tmp_path, split=None).iter_recordings())[0].raw()
    assert raw.ch_names == names and raw.get_channel_types().count("mag") == 102


def test_truncated_h5_names_the_file(root):
    rec = list(LibriBrain2025(root, split=None).iter_recordings())[1]
    size = rec.h5.stat().st_size
    with open(rec.h5, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StudyError, match=f"{re.escape(rec.h5.name)}.*truncated or damaged"):
        rec.raw()


def test_bad_layouts_are_explicit(tmp_path):
    h5, tsv = write_run(tmp_path, "0", "1", "Sherlock1", "1")
    write_events(tsv, [("phoneme", "ah_B", "x", 0.1, 0)])
    rec = list(LibriBrain2025(tmp_path, split=None).iter_recordings())[0]
    with pytest.raises(StudyError, match="timemeg"):
        rec.events()
    with h5py.File(h5, "w") as f:
        f.create_dataset("data", data=np.zeros((300, 10), np.float32))
        f.attrs["sample_frequency"] = 250.0
    with pytest.raises(StudyError, match=r"shape \(300, 10\)"):
        list(LibriBrain2025(tmp_path, split=None).iter_recordings())[0].raw()
    with pytest.raises(StudyError, match="paths.studies.libribrain2025"):
        list(LibriBrain2025(tmp_path / "nowhere").iter_recordings())


def test_files_are_opened_read_only(root):
    rec = list(LibriBrain2025(root, split=None).iter_recordings())[0]
    before = rec.h5.read_bytes()
    rec.raw().get_data()
    rec.events()
    assert rec.h5.read_bytes() == before
