"""broderick2019 (Natural Speech) on a fixture in the Dryad layout (Subject*/..._Run*.mat, Stimuli/Text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.broderick2019 import Broderick2019

from .fixtures import write_broderick


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("broderick2019")
    write_broderick(path, audio=path / "audiobook")
    return path


def test_metadata_and_recordings(root):
    assert get_study_class("broderick2019") is Broderick2019
    recs = list(Broderick2019(root).iter_recordings())
    assert [(r.subject, r.task) for r in recs] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert [r.task for r in Broderick2019(root, subjects=[2], runs=[2]).iter_recordings()] == ["2"]
    with pytest.raises(StudyError, match="Subject"):
        list(Broderick2019(root / "Stimuli").iter_recordings())


def test_raw_biosemi_positions_and_preprocess(root, tmp_path):
    rec = next(iter(Broderick2019(root).iter_recordings()))
    raw = rec.raw()
    assert raw.info["sfreq"] == 128 and len(raw.ch_names) == 130
    assert raw.get_channel_types().count("eeg") == 128 and raw.ch_names[:2] == ["A1", "A2"]
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("eeg",)))
    pos = entry["positions"]
    assert entry["brain"].shape[0] == 128 and pos.min() >= 0 and pos.max() <= 1
    assert len(np.unique(pos.round(4), axis=0)) == 128


def test_events_without_and_with_audio(root):
    rec = next(iter(Broderick2019(root).iter_recordings()))
    ev = rec.events()
    counts = ev.kind.value_counts()
    assert counts["block"] == 6 and counts["word"] == 42 and counts["sound"] == 1
    assert Path(ev[ev.kind == "sound"].filepath.iloc[0]) == root / "audio" / "audio1.wav"  # not public
    words = ev[ev.kind == "word"]
    for block in ev[ev.kind == "block"].itertuples():
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))
    with_audio = next(iter(Broderick2019(root, audio=root / "audiobook").iter_recordings())).events()
    sound = with_audio[with_audio.kind == "sound"].iloc[0]
    assert Path(sound.filepath) == root / "audiobook" / "audio1.wav" and Path(sound.filepath).exists()


def test_missing_stimulus_file_is_named(root, tmp_path):
    import shutil

    copy = tmp_path / "ns"
    shutil.copytree(root, copy)
    (copy / "Stimuli" / "Text" / "Run1.mat").unlink()
    rec = next(iter(Broderick2019(copy).iter_recordings()))
    with pytest.raises(StudyError, match=r"Run1\.mat"):
        rec.events()
