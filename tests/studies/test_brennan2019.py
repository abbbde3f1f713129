"""brennan2019 (Alice) on a fixture in its archive layout (FieldTrip .mat, per-word proc/ trl, csv, audio/)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.brennan2019 import Brennan2019, read_fieldtrip_raw, read_proc

from .fixtures import (BRENNAN_BADS, BRENNAN_EEG, BRENNAN_LABELS, BRENNAN_MISSING, N_SENTENCES, brennan_labels,
                       brennan_proc, fieldtrip_raw, write_brennan)

SFREQ = 500.0


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("brennan2019")
    return path, write_brennan(path, hdf5_subject="S03")


@pytest.fixture(scope="module")
def root(written) -> Path:
    return written[0]


def recording(root: Path, subject: str):
    return next(iter(Brennan2019(root, subjects=[subject]).iter_recordings()))


def copy_of(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "alice"
    shutil.copytree(root, copy)
    return copy


def test_metadata_and_exclusions(root):
    assert get_study_class("brennan2019") is Brennan2019
    assert Brennan2019.metadata()["modality"] == "eeg"
    assert [r.subject for r in Brennan2019(root).iter_recordings()] == ["S01", "S03", "S04"]  # S02 excluded
    assert [r.subject for r in Brennan2019(root, subjects=["S03"]).iter_recordings()] == ["S03"]
    assert [r.subject for r in Brennan2019(root, subjects=["S01", "S02"]).iter_recordings()] == ["S01"]
    with pytest.raises(StudyError, match="no subject file"):
        list(Brennan2019(root / "audio").iter_recordings())


def test_fixture_is_in_the_archive_format(root):
    from scipy.io import loadmat

    mat = loadmat(root / "S01.mat", squeeze_me=True, struct_as_record=False)
    raw = mat["raw"]
    assert raw.hdr.Fs == 500 and raw.hdr.nChans == 62 and raw.hdr.nSamplesPre == 0 and raw.fsample == 500
    assert set(raw.hdr.chanunit) == {"uV"} and set(raw.hdr.chantype) == {"eeg"}
    assert list(raw.sampleinfo) == [1, raw.hdr.nSamples] and "29" not in list(raw.label)
    proc = loadmat(root / "proc" / "S01.mat", squeeze_me=True, struct_as_record=False)["proc"]
    assert list(proc.varnames) == ["segment", "tmin", "Order"] and proc.trl.shape == (7 * N_SENTENCES, 6)
    assert proc.tot_trials == 7 * N_SENTENCES and set(proc.trl[:, 2]) == {-150}  # trials start 0.3 s early
    csv = pd.read_csv(root / "AliceChapterOne-EEG.csv")
    assert list(csv.Order) == list(range(1, 7 * N_SENTENCES + 1))


def test_v5_and_v73_files_read_the_same(root):
    t1, l1, f1 = read_fieldtrip_raw(root / "S01.mat")
    t3, l3, f3 = read_fieldtrip_raw(root / "S03.mat")  # MATLAB v7.3 (HDF5)
    assert l1 == BRENNAN_LABELS and l3 == brennan_labels("S03") and l3[-1] == "Aux5" and f1 == f3 == 500.0
    assert t1[0].shape[0] == t3[0].shape[0] == 62


def test_sampling_rate_from_hdr_without_fsample(tmp_path):
    data = np.zeros((len(BRENNAN_LABELS), 100))
    raw = fieldtrip_raw(data, np.arange(100) / 250.0, BRENNAN_LABELS, 250.0)
    del raw["fsample"]
    savemat(tmp_path / "S01.mat", {"raw": raw})
    assert read_fieldtrip_raw(tmp_path / "S01.mat")[2] == 250.0
    savemat(tmp_path / "S02.mat", {"other": raw})
    with pytest.raises(StudyError, match="no FieldTrip struct 'raw'"):
        read_fieldtrip_raw(tmp_path / "S02.mat")


@pytest.mark.parametrize("subject, misc", [("S01", ["AUD"]), ("S03", ["Aux5"]), ("S04", [])])
def test_channel_types_and_bads(root, subject, misc, tmp_path):
    raw = recording(root, subject).raw()
    types = dict(zip(raw.ch_names, raw.get_channel_types()))
    assert raw.info["sfreq"] == SFREQ and raw.ch_names == brennan_labels(subject)
    assert [c for c, t in types.items() if t == "eeg"] == BRENNAN_EEG
    assert [c for c, t in types.items() if t == "eog"] == ["VEOG"]
    assert [c for c, t in types.items() if t == "misc"] == misc
    assert raw.info["bads"] == [BRENNAN_BADS["impedence"], BRENNAN_BADS["rejections"]]


def test_preprocess_leaves_bads_out(root, tmp_path):
    rec = recording(root, "S01")
    raw = rec.raw()
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("eeg",)))
    pos = entry["positions"]
    assert entry["brain"].shape[0] == 58 and pos.min() >= 0 and pos.max() <= 1  # 60 EEG - 2 bads
    assert not set(entry.meta["ch_names"]) & set(BRENNAN_BADS.values())
    assert len(np.unique(pos.round(4), axis=0)) == 58
    assert abs(float(np.std(raw.get_data(picks="eeg"))) - 10e-6) < 1e-6  # µV converted to V


def test_bads_not_in_the_recording_are_ignored(root, tmp_path):
    copy = copy_of(root, tmp_path)
    trl = read_proc(copy / "proc" / "S01.mat").trl.to_numpy()
    proc = brennan_proc("S01", trl)
    proc["impedence"]["bads"] = np.array([["99", "7"]], dtype=object)
    proc["rejections"]["badchans"] = np.zeros((0, 0))  # MATLAB [] when nothing was rejected
    savemat(copy / "proc" / "S01.mat", {"proc": proc})
    assert recording(copy, "S01").raw().info["bads"] == ["7"]


@pytest.mark.parametrize("subject", ["S01", "S03", "S04"])
def test_word_onsets_match_the_truth(written, subject):
    root, meta = written
    rec = recording(root, subject)
    ev = rec.events()
    words = ev[ev.kind == "word"]
    assert len(words) == 7 * N_SENTENCES  # also the words whose trl row is missing (S04)
    np.testing.assert_allclose(np.sort(words.onset.to_numpy()), meta["onsets"][subject], atol=1 / SFREQ)
    counts = ev.kind.value_counts()
    assert counts["block"] == N_SENTENCES and counts["sound"] == 12
    for block in ev[ev.kind == "block"].itertuples():
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))


def test_words_without_trl_row_are_placed(written):
    root, meta = written
    assert len(read_proc(root / "proc" / "S04.mat").trl) == 7 * N_SENTENCES - len(BRENNAN_MISSING["S04"])
    table, onsets = recording(root, "S04").word_onsets()
    missing = table.Order.isin(BRENNAN_MISSING["S04"]).to_numpy()
    np.testing.assert_allclose(table.eeg_onset.to_numpy()[missing], meta["onsets"]["S04"][missing],
                               atol=1 / SFREQ)
    assert sorted(onsets) == list(range(1, 13))


def test_sounds_at_segment_onsets(written):
    root, meta = written
    ev = recording(root, "S03").events()
    sounds = ev[ev.kind == "sound"].sort_values("onset")
    assert [Path(p).name for p in sounds.filepath] == [f"DownTheRabbitHoleFinal_SoundFile{i}.wav" for i in range(1, 13)]
    csv = pd.read_csv(root / "AliceChapterOne-EEG.csv")
    first = csv.groupby("Segment").head(1)  # first word of each segment: sound onset + csv onset = truth
    truth = meta["onsets"]["S03"][first.index.to_numpy()]
    np.testing.assert_allclose(sounds.onset.to_numpy() + first.onset.to_numpy(), truth, atol=1 / SFREQ)
    assert np.allclose(sounds.duration, 7 * 0.35 + 0.5, atol=1e-3) and (sounds.offset == 0).all()


def test_segment_without_rows_is_skipped(root, tmp_path, caplog):
    copy = copy_of(root, tmp_path)
    trl = read_proc(copy / "proc" / "S01.mat").trl.to_numpy()
    savemat(copy / "proc" / "S01.mat", {"proc": brennan_proc("S01", trl[trl[:, 3] != 12])})
    with caplog.at_level(logging.WARNING, logger="bm2.studies.brennan2019"):
        ev = recording(copy, "S01").events()
    assert "segment(s) [12]" in caplog.text
    counts = ev.kind.value_counts()
    assert counts["sound"] == 11 and counts["word"] == 7 * 11 and counts["block"] == 11


def test_join_by_position_without_order(written, tmp_path):
    root, meta = written
    copy = copy_of(root, tmp_path)
    trl = read_proc(copy / "proc" / "S01.mat").trl.to_numpy()
    savemat(copy / "proc" / "S01.mat", {"proc": brennan_proc("S01", trl[:, :5], varnames=("segment", "tmin"))})
    words = recording(copy, "S01").events().query("kind == 'word'")
    np.testing.assert_allclose(np.sort(words.onset.to_numpy()), meta["onsets"]["S01"], atol=1 / SFREQ)
    savemat(copy / "proc" / "S01.mat", {"proc": brennan_proc("S01", trl[1:, :5], varnames=("segment", "tmin"))})
    with pytest.raises(StudyError, match="83 trl rows but 84 words"):
        recording(copy, "S01").events()


def test_varnames_naming_every_column(written, tmp_path):
    root, meta = written
    copy = copy_of(root, tmp_path)
    trl = read_proc(copy / "proc" / "S04.mat").trl.to_numpy()
    names = ("begsample", "endsample", "offset", "segment", "tmin", "Order")
    savemat(copy / "proc" / "S04.mat", {"proc": brennan_proc("S04", trl, varnames=names)})
    words = recording(copy, "S04").events().query("kind == 'word'")
    np.testing.assert_allclose(np.sort(words.onset.to_numpy()), meta["onsets"]["S04"], atol=1 / SFREQ)


@pytest.mark.parametrize("proc, match", [
    ({"subject": "S01"}, "no field 'trl'"),
    ("not a struct", "expected a struct 'proc'"),
    ({"trl": np.ones((4, 5)), "varnames": np.array([["segment", "tmin", "Order"]], dtype=object)},
     "5 columns, which matches neither"),
    ({"trl": np.ones((4, 7)), "varnames": np.array([["segment", "tmin", "Order"]], dtype=object)},
     "7 columns, which matches neither"),
    ({"trl": np.ones((4, 3)), "varnames": np.array([["segment", "tmin", "Order"]], dtype=object)},
     "names all 3 trl columns"),
    ({"trl": np.ones((4, 3)), "varnames": np.array([["a", "b", "c"]], dtype=object)}, "names all 3 trl columns"),
    ({"trl": np.array([[1.0, 2, 0, 1, 0.1, 9999]]), "varnames": np.array([["segment", "tmin", "Order"]],
                                                                         dtype=object)}, r"missing .*\[9999\]"),
])
def test_malformed_proc_files(root, tmp_path, proc, match):
    copy = copy_of(root, tmp_path)
    savemat(copy / "proc" / "S01.mat", {"proc": proc})
    rec = recording(copy, "S01")
    with pytest.raises(StudyError, match=match):
        rec.events()


def test_missing_proc_file_is_named(root, tmp_path):
    copy = copy_of(root, tmp_path)
    (copy / "proc" / "S01.mat").unlink()
    rec = recording(copy, "S01")
    assert rec.raw().info["bads"] == []  # the signal alone loads
    with pytest.raises(StudyError, match=r"proc/S01\.mat"):
        rec.events()


def test_uid_follows_the_proc_file(root, tmp_path):
    copy = copy_of(root, tmp_path)
    before = recording(copy, "S01").uid
    assert before == recording(root, "S01").uid
    trl = read_proc(copy / "proc" / "S01.mat").trl.to_numpy()
    savemat(copy / "proc" / "S01.mat", {"proc": brennan_proc("S01", trl[:-5])})
    assert recording(copy, "S01").uid != before


def test_uid_follows_the_csv_and_audio_not_mtimes(root, tmp_path):
    import os

    copy = copy_of(root, tmp_path)
    before = recording(copy, "S01").uid
    for path in copy.rglob("*"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert recording(copy, "S01").uid == before
    csv = copy / "AliceChapterOne-EEG.csv"
    table = pd.read_csv(csv)
    table.loc[5, "Word"] = "Zoë"
    csv.write_bytes(table.to_csv(index=False).encode("latin-1"))  # a Latin-1 CSV is read (with a warning)
    changed = recording(copy, "S01")
    assert changed.uid != before and "Zoë" in set(changed.events().text)
    from .fixtures import write_wav

    middle = changed.uid
    write_wav(copy / "audio" / "DownTheRabbitHoleFinal_SoundFile1.wav", 1.0, seed=9)
    assert recording(copy, "S01").uid not in (before, middle)
