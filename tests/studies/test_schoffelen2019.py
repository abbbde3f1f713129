"""schoffelen2019 (MOUS) on a fixture with real CTF ``.ds`` folders written byte by byte (fixtures_mous.py).

The fixture covers: the CTF res4 / meg4 binary format as mne parses it (multi-trial meg4, gradiometer coils,
reference magnetometers / gradiometers, G3BR compensation coefficients, trigger and ADC channels, .hc file), the
folder layout, Presentation logs (two tables, 1e-4 s units, clock offset), stimuli.txt, audio files and
TextGrids. It does not cover: real channel counts by default (32 of the 273 gradiometers), MarkerFile.mrk,
BadChannels / bad.segments, the system clock channel, real trigger codes or Presentation codes beyond
``Sound`` with a stimulus number, nor real TextGrid tier names (assumed ``words`` / ``phones``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.events import ARPABET
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.schoffelen2019 import (EXCLUDED_SUBJECTS, Schoffelen2019, align_log_to_triggers, phoneme_class,
                                        read_presentation_log, sound_events)

from .fixtures_mous import (LOG_OFFSETS, MOUS_SUBJECTS, SENTENCE_STIMULI, WORDLIST_STIMULI, stimulus_texts,
                            write_ctf_ds, write_mous)


@pytest.fixture(scope="module")
def mous(tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("schoffelen2019")
    return path, write_mous(path)


def test_metadata_and_registry():
    assert get_study_class("schoffelen2019") is Schoffelen2019
    meta = Schoffelen2019.metadata()
    assert meta["modality"] == "meg" and "CTF" in meta["device"] and "273" in meta["device"]
    assert meta["language"] == "nl" and meta["doi"] and meta["url"].startswith("https://")
    assert "agreement" in meta["licence"]


def test_recordings_skip_excluded(mous):
    root, meta = mous
    assert "A2011" in EXCLUDED_SUBJECTS and "A2011" in MOUS_SUBJECTS
    recs = list(Schoffelen2019(root).iter_recordings())
    assert [r.subject for r in recs] == ["A2002", "A2003"] and len(recs) == meta["n_recordings"]
    assert len({r.uid for r in recs}) == 2
    assert [r.subject for r in Schoffelen2019(root, subjects=["sub-A2003"]).iter_recordings()] == ["A2003"]
    with pytest.raises(StudyError, match="sub-A2"):
        list(Schoffelen2019(root / "stimuli").iter_recordings())


def test_ctf_reading_and_reference_channels_dropped_by_type(mous):
    root, meta = mous
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    full = rec.full_raw()
    types = dict(zip(full.ch_names, full.get_channel_types()))
    assert full.info["sfreq"] == 1200.0 and types["UPPT001"] == "stim"
    assert types["MLT99-4304"] == "ref_meg"  # looks like a gradiometer name, but is a reference
    raw = rec.raw()
    assert len(raw.ch_names) == meta["n_grad"] and set(raw.get_channel_types()) == {"mag"}
    assert "MLT99-4304" not in raw.ch_names and "BG1-4304" not in raw.ch_names and "UPPT001" not in raw.ch_names
    data = raw.get_data(start=1190, stop=1210)  # across the boundary of two 1200-sample trials
    assert data.shape == (meta["n_grad"], 20) and 1e-14 < np.abs(data).mean() < 1e-11


def test_ctf_writer_roundtrip(tmp_path):
    import mne

    chans = [dict(name="MLC11-1", kind="meg", pos=(0, 3, 10.0), norm=(0.1, 0.3, 0.95), gain=1e15),
             dict(name="MRC11-1", kind="meg", pos=(0, -3, 10.0), norm=(0.1, -0.3, 0.95), gain=1e15),
             dict(name="UPPT001", kind="stim"),  # mne needs compensation data, hence a reference channel
             dict(name="BP1-1", kind="ref_mag", pos=(0, 0, 20.0), norm=(0.1, 0.2, 0.97), gain=1e15)]
    data = np.zeros((4, 2500))
    data[0] = np.arange(2500) * 1e-15
    data[1] = -np.arange(2500) * 1e-15
    data[2, 1234:1240] = 7
    ds = write_ctf_ds(tmp_path / "x_meg.ds", chans, data, 600.0, trial_len=1000, grade=0)
    raw = mne.io.read_raw_ctf(ds, verbose="error")
    assert raw.n_times == 3000 and raw.info["sfreq"] == 600.0
    got = raw.get_data()
    np.testing.assert_allclose(got[:2, :2500], data[:2], atol=1e-18)
    assert mne.find_events(raw, "UPPT001", verbose="error")[0, 0] == 1234


def test_log_parsing_and_alignment(mous):
    root, meta = mous
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    log = read_presentation_log(rec.log_path())
    assert {"Picture", "Sound"} <= set(log["Event Type"])
    sounds = sound_events(log)
    assert len(sounds) == 12 and set(sounds.stimulus) == set(SENTENCE_STIMULI) | set(WORDLIST_STIMULI)
    aligned, offset = rec.alignment()
    assert offset == pytest.approx(LOG_OFFSETS["A2002"], abs=1e-3)  # the known clock offset is recovered
    expected = dict(meta["sounds"]["A2002"])
    for row in aligned.itertuples():
        assert row.onset == pytest.approx(expected[row.stimulus], abs=1e-3)


def test_alignment_with_missing_and_extra_triggers():
    rng = np.random.default_rng(0)
    log = np.cumsum(rng.uniform(3, 6, 20))
    trig = np.sort(np.concatenate([np.delete(log, [3, 11]) + 42.125, rng.uniform(0, 150, 15)]))
    offset, idx = align_log_to_triggers(log, trig)
    assert offset == pytest.approx(42.125, abs=1e-6)
    assert (idx >= 0).sum() == 18 and idx[3] == -1 and idx[11] == -1


def test_events_blocks_sentences_and_word_lists(mous):
    root, _ = mous
    texts = stimulus_texts()
    for rec in Schoffelen2019(root).iter_recordings():
        ev = rec.events()
        counts = ev.kind.value_counts()
        assert counts["sound"] == 12 and counts["block"] == 12 and counts["word"] == 84
        assert 0 < counts["phoneme"] < 252  # Dutch-only labels are dropped
        assert set(ev.loc[ev.kind == "phoneme", "text"]) <= set(ARPABET)
        blocks, words = ev[ev.kind == "block"], ev[ev.kind == "word"]
        assert set(blocks.uid) == set(texts.values())
        assert set(blocks.condition) == {"sentence", "word_list"}
        assert (blocks.onset.to_numpy()[1:] >= (blocks.onset + blocks.duration).to_numpy()[:-1] - 1e-9).all()
        for block in blocks.itertuples():  # each block holds one whole stimulus
            inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
            assert list(inside.word_index) == list(range(7)) and inside.sentence_id.nunique() == 1
            assert " ".join(inside.text) == " ".join(w.strip(".").lower() for w in block.uid.split())
            sound = ev[(ev.kind == "sound") & (ev.onset >= block.onset) & (ev.onset < block.onset + block.duration)]
            assert len(sound) == 1 and Path(sound.iloc[0].filepath).name.startswith("EQ_Ramp_Int2_Int1LPF")
            assert sound.iloc[0].onset + sound.iloc[0].duration <= block.onset + block.duration + 1e-9


def test_same_sentence_same_uid_across_subjects(mous):
    root, _ = mous
    a, b = list(Schoffelen2019(root).iter_recordings())
    ua, ub = a.events(), b.events()
    assert set(ua.loc[ua.kind == "block", "uid"]) == set(ub.loc[ub.kind == "block", "uid"])
    assert list(ua.loc[ua.kind == "block", "uid"]) != list(ub.loc[ub.kind == "block", "uid"])  # other orders


def test_phoneme_mapping():
    assert phoneme_class("@") == "AH" and phoneme_class("N") == "NG" and phoneme_class("AH0") == "AH"
    for dutch in ("y", "2:", "Ei", "x", "G", "9y"):
        assert phoneme_class(dutch) is None


def test_missing_files_named(tmp_path):
    root = tmp_path / "mous"
    write_mous(root, n_grad=8, subjects=("A2002",), missing_textgrid=SENTENCE_STIMULI[0])
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    with pytest.raises(StudyError, match="TextGrid for stimulus"):
        rec.events()
    (root / "sourcedata" / "meg_task" / "A2002-MEG-MOUS-Aud.log").unlink()
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    with pytest.raises(StudyError, match="Presentation log"):
        rec.events()


def test_positions_and_preprocess(mous, tmp_path):
    root, meta = mous
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("meg",)))
    n = meta["n_grad"]
    assert entry["brain"].shape[0] == n and entry["positions"].shape == (n, 2)
    pos = entry["positions"]
    assert pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos.round(4), axis=0)) == n
