"""brennan2019 (Alice) on a fixture in its archive layout (FieldTrip .mat, proc/, csv, audio/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.brennan2019 import Brennan2019, read_fieldtrip_raw

from .fixtures import BRENNAN_LABELS, N_SENTENCES, write_brennan


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("brennan2019")
    write_brennan(path, hdf5_subject="S03")
    return path


def test_metadata_and_exclusions(root):
    assert get_study_class("brennan2019") is Brennan2019
    assert Brennan2019.metadata()["modality"] == "eeg"
    assert [r.subject for r in Brennan2019(root).iter_recordings()] == ["S01", "S03"]  # S02 excluded
    assert [r.subject for r in Brennan2019(root, subjects=["S03"]).iter_recordings()] == ["S03"]
    with pytest.raises(StudyError, match="no subject file"):
        list(Brennan2019(root / "audio").iter_recordings())


def test_v5_and_v73_files_read_the_same(root):
    t1, l1, f1 = read_fieldtrip_raw(root / "S01.mat")
    t3, l3, f3 = read_fieldtrip_raw(root / "S03.mat")
    assert l1 == l3 == BRENNAN_LABELS and f1 == f3 == 500.0
    assert t1[0].shape == t3[0].shape == (61, t1[0].shape[1])


def test_raw_channels_and_positions(root, tmp_path):
    for rec in Brennan2019(root).iter_recordings():
        raw = rec.raw()
        types = raw.get_channel_types()
        assert len(raw.ch_names) == 61 and raw.info["sfreq"] == 500.0
        assert types.count("eeg") == 59 and types[-2:] == ["eog", "misc"]
        entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("eeg",)))
        pos = entry["positions"]
        assert entry["brain"].shape[0] == 59 and pos.min() >= 0 and pos.max() <= 1
        assert len(np.unique(pos.round(4), axis=0)) == 59
        assert abs(float(np.std(raw.get_data(picks="eeg"))) - 10e-6) < 1e-6  # µV converted to V


def test_events_align_segments(root):
    rec = next(iter(Brennan2019(root).iter_recordings()))
    ev = rec.events()
    counts = ev.kind.value_counts()
    assert counts["block"] == N_SENTENCES and counts["word"] == 7 * N_SENTENCES and counts["sound"] == 12
    sounds = ev[ev.kind == "sound"]
    assert Path(sounds.filepath.iloc[0]).name == "DownTheRabbitHoleFinal_SoundFile1.wav"
    words = ev[ev.kind == "word"]
    assert abs(words.onset.iloc[0] - 2.0) < 2e-3  # segment onset from proc.trl + csv onset
    for block in ev[ev.kind == "block"].itertuples():
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))


def test_missing_proc_file_is_named(root, tmp_path):
    import shutil

    copy = tmp_path / "alice"
    shutil.copytree(root, copy)
    (copy / "proc" / "S01.mat").unlink()
    rec = next(iter(Brennan2019(copy).iter_recordings()))
    with pytest.raises(StudyError, match=r"proc/S01\.mat"):
        rec.events()
