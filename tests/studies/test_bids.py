"""The generic BIDS study on an EEG dataset written with mne-bids and a custom events.tsv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.bids import BidsStudy

from .fixtures import N_SENTENCES, write_bids

OPTIONS = dict(datatype="eeg", task="listen", columns={"sentence_id": "sentence"})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bids") / "bids"
    write_bids(path)
    return path


def test_registered_and_modality_follows_datatype(root):
    assert get_study_class("bids") is BidsStudy
    assert BidsStudy(root, datatype="meg").modality == "meg" and BidsStudy(root, datatype="ieeg").modality == "ecog"
    with pytest.raises(ValueError, match="datatype"):
        BidsStudy(root, datatype="fmri")
    with pytest.raises(ValueError, match="blocks"):
        BidsStudy(root, blocks="nope")


def test_recordings_and_filters(root):
    recs = list(BidsStudy(root, **OPTIONS).iter_recordings())
    assert [(r.subject, r.task) for r in recs] == [("01", "listen"), ("02", "listen")]
    assert [r.subject for r in BidsStudy(root, subject="02", **{k: v for k, v in OPTIONS.items()
                                                                 if k != "subject"}).iter_recordings()] == ["02"]
    with pytest.raises(StudyError, match="no meg recording"):
        list(BidsStudy(root, datatype="meg").iter_recordings())


def test_events_with_column_mapping(root):
    rec = next(iter(BidsStudy(root, **OPTIONS).iter_recordings()))
    ev = rec.events()
    counts = ev.kind.value_counts()
    assert counts["block"] == N_SENTENCES and counts["word"] == 7 * N_SENTENCES and counts["sound"] == 1
    assert Path(ev[ev.kind == "sound"].filepath.iloc[0]) == root / "stimuli" / "story.wav"
    words, blocks = ev[ev.kind == "word"], ev[ev.kind == "block"]
    for block in blocks.itertuples():
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))
    # one block per sound, or per value of a column
    by_sound = next(iter(BidsStudy(root, blocks="sound", **OPTIONS).iter_recordings())).events()
    assert list(by_sound[by_sound.kind == "block"].uid) == ["story.wav"]
    by_col = next(iter(BidsStudy(root, blocks="column:sentence", **OPTIONS).iter_recordings())).events()
    assert (by_col.kind == "block").sum() == N_SENTENCES
    # renamed kinds: nothing maps -> no words, and the sentence blocks say why
    renamed = next(iter(BidsStudy(root, kinds={"word": "WORD"}, **OPTIONS).iter_recordings()))
    with pytest.raises(StudyError, match="needs word events"):
        renamed.events()


def test_missing_events_file_is_named(root, tmp_path):
    import shutil

    copy = tmp_path / "bids"
    shutil.copytree(root, copy)
    (copy / "sub-01/eeg/sub-01_task-listen_events.tsv").unlink()
    rec = next(iter(BidsStudy(copy, **OPTIONS).iter_recordings()))
    with pytest.raises(StudyError, match="sub-01_task-listen_events.tsv"):
        rec.events()


def test_montage_positions_and_preprocess(root, tmp_path):
    rec = next(iter(BidsStudy(root, **OPTIONS).iter_recordings()))
    assert len(rec.raw().ch_names) == 32
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("eeg",)))
    pos = entry["positions"]
    assert entry["brain"].shape[0] == 32 and pos.shape == (32, 2)
    assert pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos.round(4), axis=0)) == 32
    assert np.isfinite(np.asarray(entry["brain"])).all()
    assert isinstance(pd.DataFrame(), pd.DataFrame)
