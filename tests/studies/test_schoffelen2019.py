"""schoffelen2019 (MOUS) on a fixture with real CTF ``.ds`` folders written byte by byte (fixtures_mous.py).

The fixture covers: the CTF res4 / meg4 binary format as mne parses it (multi-trial meg4, gradiometer coils,
reference magnetometers / gradiometers, G3BR compensation coefficients, trigger and ADC channels, .hc file), the
full CTF-275 channel set of MOUS (273 gradiometers, references, UPPT / UADC / SCLK / HLC channels) in one test,
the folder layout, Presentation logs in the release's format (two tables, 1e-4 s units, ZINNEN / WOORDEN / FIX /
Start File / Audio onset codes, a broken row, a duplicated scenario section, clock offset and drift), triggers
10 / 20, stimuli.txt, audio files and MAUS TextGrids (ORT-MAU / KAN-MAU / MAU). It does not cover:
MarkerFile.mrk, BadChannels / bad.segments, nor the exact port codes of the release beyond 10 and 20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.events import ARPABET
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.schoffelen2019 import (ABSENT_SUBJECTS, AUDITORY_SUBJECTS, EXCLUDED_SUBJECTS, Schoffelen2019,
                                        StimulusIndex, fit_log_clock, log_roles, normalize_text, phoneme_class,
                                        read_presentation_log, sound_table)

from .fixtures_mous import (LOG_CLOCKS, MOUS_SUBJECTS, SENTENCE_STIMULI, TRUNCATED_STIMULUS, WORDLIST_STIMULI,
                            stimuli_numbers, stimulus_stem, stimulus_texts, write_ctf_ds, write_mous)


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
    kept = set(AUDITORY_SUBJECTS) - set(EXCLUDED_SUBJECTS) - set(ABSENT_SUBJECTS)
    assert len(AUDITORY_SUBJECTS) == 124 and len(kept) == 96  # the paper's 96 auditory subjects
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


def test_log_parsing(mous):
    root, meta = mous
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    (table,) = read_presentation_log(rec.log_path())
    assert {"Picture", "Sound", "Nothing", "Response", "Quit"} <= set(table["event"])
    roles = log_roles(table)
    counts = roles.role.value_counts()
    assert counts["context"] == 4 and counts["sound"] == 12 and counts["audio_onset"] == 12 and counts["fix"] == 12
    question = roles[roles.code.str.startswith("QUESTION")]
    assert len(question) and question.iloc[0].code == "QUESTION Zat de kat op de mat."  # broken row joined
    assert question.time.notna().all() and table.time.notna().all()
    sounds = sound_table(table)
    expected = {num: cond for num, _, cond in meta["sounds"]["A2002"]}
    assert dict(zip(sounds.stimulus, sounds.condition)) == expected
    assert set(sounds.stimulus) == set(SENTENCE_STIMULI) | set(WORDLIST_STIMULI)
    assert all(f.endswith(".wav") and "Start" not in f for f in sounds.file)


@pytest.mark.parametrize("subject", ["A2002", "A2003"])
def test_alignment_recovers_the_clock(mous, subject):
    """Offset and drift between the log and MEG clocks are recovered from the block / fixation triggers, with
    a lost and two spurious triggers (A2002) or an aborted first scenario section in the log (A2003)."""
    root, meta = mous
    rec = next(iter(Schoffelen2019(root, subjects=[subject]).iter_recordings()))
    assert len(read_presentation_log(rec.log_path())) == (2 if subject == "A2003" else 1)
    aligned, fit = rec.alignment()
    slope, offset = LOG_CLOCKS[subject]
    # triggers are on a 1/1200 s grid, hence the slope tolerance
    assert fit.slope == pytest.approx(slope, abs=1e-5) and fit.intercept == pytest.approx(offset, abs=2e-3)
    assert fit.matched == fit.anchors - (1 if subject == "A2002" else 0)
    expected = {num: onset for num, onset, _ in meta["sounds"][subject]}
    assert len(aligned) == len(expected)
    for row in aligned.itertuples():  # the 'Audio onset' rows, placed on the MEG clock
        assert row.onset == pytest.approx(expected[row.stimulus], abs=1.5e-3)


def test_clock_fit_with_drift_missing_and_spurious_triggers():
    rng = np.random.default_rng(0)
    fix = np.cumsum(rng.uniform(8, 12, 360))           # one hour of fixations (log clock, s)
    ctx = fix[::30] - 1.0                                # block starts
    log_t = np.concatenate([fix, ctx])
    kinds = np.array(["fix"] * len(fix) + ["context"] * len(ctx))
    meg = 1.00003 * log_t + 42.125 + rng.normal(0, 3e-4, len(log_t))  # drift: 0.1 s over the hour
    keep = np.ones(len(log_t), bool)
    keep[[3, 11, 200]] = False                           # lost triggers
    trig_t = np.concatenate([meg[keep], rng.uniform(0, 3700, 20)])
    trig_k = np.concatenate([kinds[keep], np.array(["fix"] * 20)])
    fit, idx = fit_log_clock(log_t, trig_t, kinds, trig_k)
    assert fit.slope == pytest.approx(1.00003, abs=1e-6) and fit.intercept == pytest.approx(42.125, abs=2e-3)
    assert fit.matched == keep.sum() and (idx[~keep] == -1).all()
    ok = idx >= 0
    assert np.allclose(trig_t[idx[ok]], meg[ok])
    # a constant offset alone would miss most anchors at this tolerance
    assert (np.abs(meg - (log_t + np.median(meg[:10] - log_t[:10]))) > 0.02).mean() > 0.5
    with pytest.raises(StudyError, match="no trigger"):
        fit_log_clock(log_t, trig_t, kinds, np.array(["other"] * len(trig_t)))
    with pytest.raises(StudyError, match="no logged anchors or no triggers"):
        fit_log_clock(log_t, [], kinds, [])


def test_events_blocks_sentences_and_word_lists(mous):
    root, meta = mous
    texts = stimulus_texts()
    numbers = stimuli_numbers()
    for rec in Schoffelen2019(root).iter_recordings():
        ev = rec.events()
        counts = ev.kind.value_counts()
        assert counts["sound"] == 12 and counts["block"] == 12 and counts["word"] == 84 - 1  # one alignment is short
        assert 0 < counts["phoneme"] < 252  # Dutch-only labels are dropped
        assert set(ev.loc[ev.kind == "phoneme", "text"]) <= set(ARPABET)
        blocks, words = ev[ev.kind == "block"], ev[ev.kind == "word"]
        assert set(blocks.uid) == set(texts.values())
        conditions = {num: cond for num, _, cond in meta["sounds"][rec.subject]}
        assert dict(zip(blocks.stimulus, blocks.condition)) == conditions  # from the log's ZINNEN / WOORDEN
        assert dict(zip(blocks.stimulus, blocks.sequence_uid)) == {n: numbers[n] for n in conditions}
        assert (blocks.onset.to_numpy()[1:] >= (blocks.onset + blocks.duration).to_numpy()[:-1] - 1e-9).all()
        for block in blocks.itertuples():  # each block holds one whole stimulus
            inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
            n_words = 6 if block.stimulus == TRUNCATED_STIMULUS else 7
            assert list(inside.word_index) == list(range(n_words)) and inside.sentence_id.nunique() == 1
            expected = [w.strip(".") for w in block.uid.split()][:n_words]
            assert list(inside.text) == expected
            sound = ev[(ev.kind == "sound") & (ev.onset >= block.onset) & (ev.onset < block.onset + block.duration)]
            assert len(sound) == 1 and Path(sound.iloc[0].filepath).name == f"{stimulus_stem(int(block.stimulus))}.wav"
            assert sound.iloc[0].onset + sound.iloc[0].duration <= block.onset + block.duration + 1e-9


def test_same_sentence_same_uid_across_subjects(mous):
    root, _ = mous
    a, b = list(Schoffelen2019(root).iter_recordings())
    ua, ub = a.events(), b.events()
    assert set(ua.loc[ua.kind == "block", "uid"]) == set(ub.loc[ub.kind == "block", "uid"])
    assert list(ua.loc[ua.kind == "block", "uid"]) != list(ub.loc[ub.kind == "block", "uid"])  # other orders
    sid = {(r.stimulus, r.sentence_id) for r in ua[ua.kind == "word"].itertuples()}
    assert sid == {(r.stimulus, r.sentence_id) for r in ub[ub.kind == "word"].itertuples()}


def test_stimulus_index():
    long_text = "Een heel lange zin met veel woorden die langer is dan vijfenveertig tekens, "
    index = StimulusIndex({1: "De kat zat op de mat.", 2: "mat de op zat kat de", 7: long_text + "echt waar.",
                           8: long_text + "maar anders."})
    assert normalize_text("De kat, zat.") == "de kat zat"
    assert index.find(["De", "kat", "zat", "op", "de", "mat"]) == 1
    assert index.find(["De", "kat", "zat", "op", "de"]) == 1           # last word missing
    assert index.find(["mat", "de", "op", "zat", "kat", "de"]) == 2
    long = "Een heel lange zin met veel woorden die langer is dan vijfenveertig tekens echt waar".split()
    assert index.find(long) == 7                                       # exact text beats the shared prefix
    assert index.find(long[:-1]) is None                               # ambiguous prefix: not guessed
    assert index.find(["onbekend"]) is None and index.find([]) is None


def test_unknown_sequence_named_after_its_words(tmp_path, caplog):
    root = tmp_path / "mous"
    write_mous(root, n_grad=8, subjects=("A2002",))
    lines = (root / "stimuli" / "stimuli.txt").read_text().splitlines()
    (root / "stimuli" / "stimuli.txt").write_text("\n".join(lines[1:]) + "\n")  # one stimulus unlisted
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    with caplog.at_level("WARNING", logger="bm2.studies.schoffelen2019"):
        ev = rec.events()
    assert "match no line of stimuli.txt" in caplog.text
    blocks = ev[ev.kind == "block"]
    assert len(blocks) == 12 and (blocks.sequence_uid == -1).sum() >= 1


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


def test_full_ctf275_channel_set(tmp_path):
    """The channel set of a MOUS recording: 273 gradiometers kept, 26 references and the other channels dropped."""
    from .fixtures_mous import full_ctf275_channels

    chans = full_ctf275_channels()
    data = np.random.default_rng(0).standard_normal((len(chans), 2400)) * 2e-13
    names = [c["name"] for c in chans]
    data[names.index("UPPT001")] = 0
    data[names.index("SCLK01-177")] = np.arange(1, 2401)  # mne counts the valid samples on the system clock
    ds = tmp_path / "mous" / "sub-A2002" / "meg" / "sub-A2002_task-auditory_meg.ds"
    write_ctf_ds(ds, chans, data, 1200.0)
    rec = next(iter(Schoffelen2019(tmp_path / "mous").iter_recordings()))
    types = dict(zip(rec.full_raw().ch_names, rec.full_raw().get_channel_types()))
    assert sum(t == "ref_meg" for t in types.values()) == 26 and types["UPPT002"] == "stim"
    raw = rec.raw()
    assert len(raw.ch_names) == 273 and all(n.startswith("M") for n in raw.ch_names)
    pos = rec.sensor_positions(raw.ch_names)  # every name found on the CTF-275 layout
    assert pos.shape == (273, 2) and len(np.unique(pos.round(4), axis=0)) == 273


def test_alignment_without_block_codes_uses_audio_onsets(mous, monkeypatch):
    """A trigger channel without the 10 / 20 codes: the audio onsets are matched against every trigger."""
    root, meta = mous
    rec = next(iter(Schoffelen2019(root, subjects=["A2002"]).iter_recordings()))
    expected = {num: onset for num, onset, _ in meta["sounds"]["A2002"]}
    onsets = np.array(sorted(expected.values()))
    monkeypatch.setattr(rec, "triggers", lambda: (np.append(onsets[1:], 0.5), np.ones(len(onsets))))  # one lost
    aligned, fit = rec.alignment()
    assert fit.matched == len(onsets) - 1 and fit.anchors == len(onsets)
    for row in aligned.itertuples():
        assert row.onset == pytest.approx(expected[row.stimulus], abs=1.5e-3)


def test_unreadable_logs_are_named(tmp_path):
    root = tmp_path / "mous"
    write_mous(root, n_grad=8, subjects=("A2002",))
    log = root / "sourcedata" / "meg_task" / "A2002-MEG-MOUS-Aud.log"
    rec = next(iter(Schoffelen2019(root).iter_recordings()))
    log.write_text("this is not a log\n")
    with pytest.raises(StudyError, match="not a Presentation log"):
        rec.events()
    text = "Scenario - x\n\nSubject\tTrial\tEvent Type\tCode\tTime\n\nA2002\t1\tPicture\tblank\t100\n"
    log.write_text(text)  # a log without any block, fixation or sound row
    with pytest.raises(StudyError, match="cannot align"):
        Schoffelen2019(root).iter_recordings().__next__().events()


def test_uid_follows_textgrids_and_logs(mous, tmp_path):
    import os
    import shutil

    root, _ = mous
    copy = tmp_path / "mous"
    shutil.copytree(root, copy)

    def uids() -> list[str]:
        return [r.uid for r in Schoffelen2019(copy).iter_recordings()]

    before = uids()
    for path in copy.rglob("*"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert uids() == before
    grid = sorted((copy / "derivatives" / "phonemes").glob("*.TextGrid"))[0]
    text = grid.read_text()
    grid.write_bytes(text.replace("xmin = 0.250000", "xmin = 0.260000").encode("latin-1"))  # a word 10 ms later
    after = uids()
    assert after != before and all(a != b for a, b in zip(after, before))  # every subject heard it
