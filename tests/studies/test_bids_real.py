"""The generic bids study on datasets as they come: a Neuromag FIF written by mne-bids (MEG + EEG + stim, bad
channels, events of duration 0 with a stim_file and a word column on the same rows) and the events.tsv files
of real datasets (n/a onsets, Latin-1, trigger codes, lists of kinds, events beyond the end, blocks ...)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError
from bm2.studies.base import MissingPositionsError, layout_positions
from bm2.studies.bids import BidsStudy
from scripts import studies as studies_script

from .fixtures_bids_real import (BADS, FIRST, STUDY_OPTIONS, WORDS, neuromag_info, word_seconds,
                                 write_eeg_bids, write_neuromag_bids, write_tsv)

EEG = dict(datatype="eeg", task="listen")


@pytest.fixture(scope="module")
def neuromag(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("neuromag") / "words-meg"
    return root, write_neuromag_bids(root)


@pytest.fixture(scope="module")
def eeg_base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eeg") / "bids"
    write_eeg_bids(root)
    return root


@pytest.fixture
def eeg(eeg_base, tmp_path) -> tuple[Path, Path]:
    """A fresh copy of the EEG dataset and the path of its events.tsv."""
    root = tmp_path / "bids"
    shutil.copytree(eeg_base, root)
    return root, root / "sub-01" / "eeg" / "sub-01_task-listen_events.tsv"


def recording(root: Path, **options):
    return next(iter(BidsStudy(root, **{**EEG, **options}).iter_recordings()))


HEADER = ["onset", "duration", "trial_type", "word", "sentence_id", "sound"]


def story_rows() -> list[list]:
    """A sound (duration 0: from the file, 8 s) and two sentences of three words."""
    rows = [[1.0, 0, "sound", "n/a", "n/a", "stimuli/story.wav"]]
    for s, (start, words) in enumerate(((2.0, "the cat sat"), (5.0, "a dog ran"))):
        for k, word in enumerate(words.split()):
            rows.append([start + 0.4 * k, 0.3, "word", word, f"s{s}", "n/a"])
    return rows


# -- a Neuromag FIF written by mne-bids ------------------------------------------------------------------

def test_neuromag_recordings_events_and_bads(neuromag):
    root, meta = neuromag
    recs = list(BidsStudy(root, **STUDY_OPTIONS).iter_recordings())
    assert [(r.subject, r.task, r.bids_path.run) for r in recs] == [("01", "words", "1"), ("01", "words", "2")]
    for rec in recs:
        raw = rec.raw()
        assert raw.info["bads"] == BADS and raw.n_times == meta["n_times"]
        assert sorted(set(raw.get_channel_types())) == ["eeg", "grad", "mag", "stim"]
        ev = rec.events()
        run = meta["runs"][rec.bids_path.run]
        sounds, words, blocks = (ev[ev.kind == k].reset_index(drop=True) for k in ("sound", "word", "block"))
        assert len(sounds) == len(words) == len(blocks) == len(WORDS)  # response rows (code 9) give nothing
        np.testing.assert_allclose(sounds.onset, run["onsets"])
        np.testing.assert_allclose(words.onset, run["onsets"])  # same rows: a sound AND a word each
        assert list(words.text) == run["order"]
        assert [Path(p).name for p in sounds.filepath] == [f"{w}.wav" for w in run["order"]]
        expected = [word_seconds(WORDS.index(w)) for w in run["order"]]
        np.testing.assert_allclose(sounds.duration, expected, atol=1e-6)  # the tsv says 0: the files tell
        np.testing.assert_allclose(words.duration, expected, atol=1e-6)  # a word on a sound's row spans it
        assert list(blocks.uid) == [f"{w}.wav" for w in run["order"]]
        assert blocks.onset.iloc[0] == pytest.approx(FIRST - 1.0)  # block_pad before the first sound
        assert (words.word_index == 0).all()  # each word is the sentence of its block ...
        assert list(ev.loc[ev.kind == "word", "line"]) == list(range(2, 2 * len(WORDS) + 1, 2))  # tsv lines
    # ... so the same word gets the same sentence id whatever the order of the run
    by_text = [dict(zip(r.events().query("kind == 'word'").text, r.events().query("kind == 'word'").sentence_id))
               for r in recs]
    assert by_text[0] == by_text[1]


def test_neuromag_trigger_codes_compare_as_numbers(neuromag):
    root, _ = neuromag
    by_name = next(iter(BidsStudy(root, **STUDY_OPTIONS).iter_recordings())).events()
    codes = dict(STUDY_OPTIONS, columns={"kind": "value", "sound": "stim_file"},
                 kinds={"sound": 5.0, "word": ["5"], "phoneme": None})
    by_code = next(iter(BidsStudy(root, **codes).iter_recordings())).events()
    pd.testing.assert_frame_equal(by_name, by_code)
    with pytest.raises(StudyError, match=r"no row gives a bm2 event: .*column 'value' \(studies\.bids\.columns\.kind\) "
                                         r"holds '5' \(16 rows\), '9' \(16 rows\)") as info:
        next(iter(BidsStudy(root, **dict(codes, kinds={"sound": 7, "word": 7, "phoneme": None}))
                  .iter_recordings())).events()
    assert "studies.bids.kinds is {word=['7'], phoneme=null, sound=['7']}" in str(info.value)
    assert "events.tsv" in str(info.value)


def test_neuromag_positions_distinct_and_preprocess(neuromag, tmp_path):
    root, meta = neuromag
    rec = next(iter(BidsStudy(root, **STUDY_OPTIONS).iter_recordings()))
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=50.0, picks=("meg", "eeg")))
    names = entry.meta["ch_names"]
    assert len(names) == 24 + 8 - len(BADS) and not set(BADS) & set(names)
    pos = np.asarray(entry["positions"])
    assert pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos, axis=0)) == len(names)
    # one cell per channel type: magnetometers, gradiometers and EEG never mix
    types = rec.raw().copy().pick(names).get_channel_types()
    cells = {t: pos[[i for i, k in enumerate(types) if k == t]] for t in ("mag", "grad", "eeg")}
    assert cells["mag"][:, 0].max() < cells["grad"][:, 0].min()  # side by side
    assert cells["eeg"][:, 1].max() < min(cells["mag"][:, 1].min(), cells["grad"][:, 1].min())  # row below


def test_full_neuromag_mag_grad_eeg_positions_are_distinct():
    info = neuromag_info(n_eeg=60, full=True)
    names = [n for n, t in zip(info["ch_names"], info.get_channel_types()) if t != "stim"]
    assert len(names) == 366
    pos = layout_positions(info, names)
    assert pos.shape == (366, 2) and len(np.unique(pos, axis=0)) == 366  # was 161 unique for 364 channels
    # a magnetometer and its two gradiometers (one triplet, one location) get three positions
    triplet = [names.index(n) for n in ("MEG 0111", "MEG 0112", "MEG 0113")]
    assert len(np.unique(pos[triplet], axis=0)) == 3


def test_gradiometer_pairs_sharing_a_location_are_spread():
    """Sensors of one type at one location (a projection of planar gradiometer pairs without a known layout)
    get distinct positions."""
    import mne

    info = neuromag_info(n_triplets=6, n_eeg=0)
    grads = [n for n, t in zip(info["ch_names"], info.get_channel_types()) if t == "grad"]
    mne.rename_channels(info, {n: f"G{i}" for i, n in enumerate(grads)})  # no layout knows these names
    names = [f"G{i}" for i in range(len(grads))]
    pos = layout_positions(info, names)
    assert len(np.unique(pos, axis=0)) == len(names) == 12
    pairs = np.linalg.norm(pos[0::2] - pos[1::2], axis=1)
    others = np.linalg.norm(pos[0::2][:, None] - pos[0::2][None], axis=2)
    assert pairs.max() < 0.05 < np.sort(others, axis=1)[:, 1].min()  # pairs close, triplets far apart


def test_dataset_name_enters_the_uid(neuromag):
    root, _ = neuromag
    default = next(iter(BidsStudy(root, **STUDY_OPTIONS).iter_recordings()))
    named = next(iter(BidsStudy(root, name="meg-words-v2", **STUDY_OPTIONS).iter_recordings()))
    assert default.dataset_name == "words-meg" and named.dataset_name == "meg-words-v2"
    assert default.identity["dataset"] == "words-meg" and default.uid != named.uid
    with pytest.raises(ValueError, match="studies.bids.name"):
        BidsStudy(root, name=" ")


def test_stats_validates_events_and_lists_recordings(neuromag, tmp_path):
    root, _ = neuromag
    report, failed = studies_script.stats("bids", str(root), STUDY_OPTIONS, recordings=True)
    assert failed == 0
    lines = report.splitlines()
    assert "events: sound 32, word 32, phoneme 0, block 32" in lines and "recordings: 2" in lines
    runs = [line for line in lines if "task-words" in line]
    assert len(runs) == 2 and all("sounds=16 words=16 phonemes=0 blocks=16" in line and "bads=2" in line
                                  for line in runs)
    assert "sub-01_task-words_run-2_meg.fif" in runs[1]
    # a dataset that cannot train fails the check, naming the file
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    tsv = copy / "sub-01" / "meg" / "sub-01_task-words_run-2_events.tsv"
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    table["onset"] = (pd.to_numeric(table["onset"]) + 1.6e9).astype(str)  # Unix time stamps
    table.to_csv(tsv, sep="\t", index=False)
    report, failed = studies_script.stats("bids", str(copy), STUDY_OPTIONS, recordings=True)
    assert failed == 1 and "FAILED: 1 recording(s)" in report and "run-2_events.tsv: all 32 events" in report
    with pytest.raises(SystemExit) as exit_info:
        studies_script.main(["stats", "bids", "--root", str(copy), "--option", "datatype=meg",
                             "--option", "columns.sound=stim_file", "--option", "kinds.sound=auditory/word",
                             "--option", "kinds.word=auditory/word", "--option", "kinds.phoneme=None",
                             "--option", "blocks=sound", "--recordings"])
    assert exit_info.value.code == 1


def test_missing_root_does_not_suggest_a_download(tmp_path):
    with pytest.raises(StudyError) as info:
        BidsStudy(tmp_path / "nowhere").prepare()
    assert "paths.studies.bids" in str(info.value) and "scripts.download" not in str(info.value)


# -- events.tsv as real datasets write them ---------------------------------------------------------------

def test_na_onsets_skipped_on_unused_rows_and_named_on_used_ones(eeg):
    root, tsv = eeg
    rows = story_rows()
    boundary = [["n/a", "n/a", "boundary", "n/a", "n/a", "n/a"], ["", "", "boundary", "", "", ""],
                ["nan", "0", "boundary", "n/a", "n/a", "n/a"], ["12:00:01", "0", "comment", "n/a", "n/a", "n/a"]]
    write_tsv(tsv, HEADER, rows[:2] + boundary + rows[2:])
    rec = recording(root)  # mne-bids alone stops at line 7: could not convert string to float: '12:00:01'
    ev = rec.events()
    assert list(ev[ev.kind == "word"].text) == "the cat sat a dog ran".split()
    assert list(ev[ev.kind == "word"].line) == [3, 8, 9, 10, 11, 12]  # lines of the tsv, the header is line 1
    assert rec.raw().n_times == 4000
    rows[3][0] = "n/a"  # "sat", line 5
    write_tsv(tsv, HEADER, rows)
    with pytest.raises(StudyError, match=r"sub-01_task-listen_events\.tsv line 5: a row used as an event has no "
                                         r"onset \(found 'n/a' in column 'onset', row trial_type='word'\)\. Give"):
        recording(root).events()
    rows[3][0] = "2.8s"
    write_tsv(tsv, HEADER, rows)
    with pytest.raises(StudyError, match=r"events\.tsv line 5: the onset of a row used as an event is not a "
                                         r"number \(found '2\.8s'"):
        recording(root).events()
    rows[5][0], rows[6][0] = "", "nan"
    write_tsv(tsv, HEADER, rows)
    with pytest.raises(StudyError, match=r"events\.tsv line 7: a row used as an event has no onset \(found '' in "
                                         r"column 'onset', row trial_type='word'\) \(lines 7, 8\)\."):
        recording(root).events()
    rows[3][0], rows[5][0], rows[6][0], rows[4][1] = 2.8, 5.4, 5.8, "abc"
    write_tsv(tsv, HEADER, rows)
    with pytest.raises(StudyError, match=r"events\.tsv line 6: the duration .* \(found 'abc'"):
        recording(root).events()
    rows[4][1] = "n/a"  # unknown duration: a word lasts 0 s
    write_tsv(tsv, HEADER, rows)
    assert recording(root).events().query("kind == 'word'").duration.tolist() == [0.3, 0.3, 0.3, 0.0, 0.3, 0.3]


def test_latin1_and_bom_events_files(eeg, caplog):
    root, tsv = eeg
    rows = story_rows()
    rows[1][3] = "café"
    write_tsv(tsv, HEADER, rows, encoding="latin-1")
    with caplog.at_level(logging.WARNING):
        words = recording(root).events().query("kind == 'word'")
    assert words.text.iloc[0] == "café"
    assert any("sub-01_task-listen_events.tsv is not UTF-8" in r.getMessage() and "Latin-1" in r.getMessage()
               for r in caplog.records)
    tsv.write_bytes(b"\xef\xbb\xbf" + tsv.read_bytes().decode("latin-1").encode("utf-8"))  # UTF-8 with a BOM
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        words = recording(root).events().query("kind == 'word'")
    assert words.text.iloc[0] == "café" and not caplog.records


def test_kinds_accept_lists_and_codes_with_na(eeg):
    root, tsv = eeg
    header = ["onset", "duration", "value", "trial_type", "word", "sentence_id"]
    rows = [[2.0 + 0.4 * k, 0.3, f"{1 + k % 2}.0", f"auditory/{'left' if k % 2 else 'right'}", w, "s0"]
            for k, w in enumerate("one two three four".split())]
    rows.insert(2, [3.0, 0, "n/a", "n/a", "n/a", "n/a"])  # makes the value column float-like in pandas
    write_tsv(tsv, header, rows)
    by_code = recording(root, columns={"kind": "value"}, kinds={"word": [1, 2], "sound": None, "phoneme": None})
    assert list(by_code.events().query("kind == 'word'").text) == "one two three four".split()
    by_name = recording(root, kinds={"word": ["auditory/left", "auditory/right"], "sound": None, "phoneme": None})
    assert list(by_name.events().query("kind == 'word'").text) == "one two three four".split()
    only_left = recording(root, kinds={"word": "auditory/left", "sound": None, "phoneme": None})
    assert list(only_left.events().query("kind == 'word'").text) == ["two", "four"]
    with pytest.raises(StudyError) as info:
        recording(root, columns={"kind": "value"}, kinds={"word": 3, "sound": None, "phoneme": None}).events()
    message = str(info.value)
    assert "no row gives a bm2 event" in message and "word=['3']" in message
    assert "column 'value' (studies.bids.columns.kind) holds '1.0' (2 rows), '2.0' (2 rows), 'n/a' (1 rows)" \
        in message


def test_star_kinds_one_row_gives_a_sound_and_a_word(eeg):
    root, tsv = eeg
    header = ["onset", "duration", "trial_type", "stim_file", "word"]
    rows = [[2.0, 0, "stimulus", "stimuli/story.wav", "hello"], [12.0, 0, "stimulus", "story.wav", "world"],
            [20.0, 0, "response", "n/a", "n/a"]]
    write_tsv(tsv, header, rows)
    rec = recording(root, columns={"sound": "stim_file"}, kinds={"sound": "*", "word": "*", "phoneme": None},
                    blocks="sound")
    ev = rec.events()
    sounds, words = ev[ev.kind == "sound"], ev[ev.kind == "word"]
    assert list(sounds.onset) == list(words.onset) == [2.0, 12.0]
    assert list(sounds.duration) == list(words.duration) == [8.0, 8.0]  # the wav's length
    assert {Path(p) for p in sounds.filepath} == {root / "stimuli" / "story.wav"}  # also found under stimuli/


def test_sound_without_duration_and_without_file_is_named(eeg):
    root, tsv = eeg
    rows = story_rows()
    rows[0][5] = "stimuli/missing.wav"
    write_tsv(tsv, HEADER, rows)
    with pytest.raises(StudyError, match=r"events\.tsv line 2: the sound event has duration '0', so its duration "
                                         r"is read from its audio file, but .*stimuli/missing\.wav cannot be read"):
        recording(root).events()
    rows[0][1] = 6.5  # a duration given: the file is not needed to read the events
    write_tsv(tsv, HEADER, rows)
    assert recording(root).events().query("kind == 'sound'").duration.tolist() == [6.5]


def test_events_beyond_the_end_of_the_data(eeg, caplog):
    root, tsv = eeg
    rows = story_rows() + [[41.0, 0.3, "word", "late", "s9", "n/a"], [55.5, 0.3, "word", "later", "s9", "n/a"]]
    write_tsv(tsv, HEADER, rows)
    with caplog.at_level(logging.WARNING):
        ev = recording(root).events()
    assert "late" not in set(ev.text) and len(ev.query("kind == 'word'")) == 6
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "2 of 9 events (lines 9, 10) lie outside the data: their onsets go from 41.000 to 55.500 s, but the data " \
           "of sub-01_task-listen_eeg.vhdr end at 40.000 s; they are left out" in message
    unix = [[1.6e9 + float(r[0]), *r[1:]] for r in story_rows()]
    write_tsv(tsv, HEADER, unix)
    with pytest.raises(StudyError, match=r"all 7 events \(lines 2, 3, 4, 5, 6 \(and 2 more\)\) lie outside the data: "
                                         r"their onsets go from 1600000001\.000 to 1600000005\.800 s, but the data of "
                                         r"sub-01_task-listen_eeg\.vhdr end at 40\.000 s.*time stamps"):
        recording(root).events()
    millis = [[1000 * float(r[0]) + 1000, *r[1:]] for r in story_rows()]
    write_tsv(tsv, HEADER, millis)
    with pytest.raises(StudyError, match=r"may be milliseconds: divide them by 1000"):
        recording(root).events()


def test_column_blocks_are_padded_like_sentences(eeg):
    root, tsv = eeg
    write_tsv(tsv, HEADER + ["trial"], [r + [f"t{r[4]}" if r[2] == "word" else "n/a"] for r in story_rows()])
    by_column = recording(root, blocks="column:trial").events().query("kind == 'block'")
    by_sentence = recording(root).events().query("kind == 'block'")
    assert list(by_column.uid) == ["ts0", "ts1"]
    np.testing.assert_allclose(by_column.onset, by_sentence.onset)
    np.testing.assert_allclose(by_column.duration, by_sentence.duration)
    assert by_column.onset.iloc[0] == pytest.approx(1.0)  # 1 s (block_pad) before the first word at 2 s
    # both blocks meet halfway between the sentences: 2.8 + 0.3 = 3.1 and 5.0 -> 4.05
    assert by_column.onset.iloc[1] == pytest.approx(4.05)
    assert (by_column.onset + by_column.duration).iloc[1] == pytest.approx(5.8 + 0.3 + 1.0)


def test_sentence_blocks_without_sentence_ids_say_so(eeg, caplog):
    root, tsv = eeg
    write_tsv(tsv, HEADER[:4] + ["sound"], [r[:4] + [r[5]] for r in story_rows()])
    with caplog.at_level(logging.WARNING):
        blocks = recording(root).events().query("kind == 'block'")
    assert list(blocks.uid) == ["the cat sat a dog ran"]
    assert any("blocks=sentence makes ONE block of all 6 words" in r.getMessage()
               and "studies.bids.columns.sentence_id" in r.getMessage() for r in caplog.records)


def test_extra_fields_and_missing_columns_are_named(eeg):
    root, tsv = eeg
    write_tsv(tsv, HEADER, story_rows())
    lines = tsv.read_text().split("\n")
    lines[4] += "\textra\tx\ty\tz"
    tsv.write_text("\n".join(lines))
    with pytest.raises(StudyError, match=r"events\.tsv line 5: 10 tab-separated fields but the header"):
        recording(root).events()
    write_tsv(tsv, HEADER, story_rows())
    with pytest.raises(StudyError, match=r"no column 'text' \(studies\.bids\.columns\.word\); set "
                                         r"studies\.bids\.columns\.word to one of \['onset'"):
        recording(root, columns={"word": "text"}).events()
    with pytest.raises(StudyError, match=r"no kind column 'type' \(studies\.bids\.columns\.kind\)"):
        recording(root, columns={"kind": "type"}).events()


# -- positions and montages -------------------------------------------------------------------------------

def test_eeg_without_positions_names_channels_and_takes_a_montage(tmp_path):
    root = tmp_path / "bids"
    tsv = write_eeg_bids(root, positions=False, labels=("Fp1", "Fp2", "Cz", "O1", "O2", "Xtra"))
    write_tsv(tsv, HEADER, story_rows())
    names = ["Fp1", "Fp2", "Cz", "O1", "O2", "Xtra"]
    with pytest.raises(MissingPositionsError, match=r"6 of 6 channels have no sensor position \(type eeg\): "
                                                    r"Fp1, Fp2, Cz, O1, O2, Xtra.*studies\.bids\.montage"):
        recording(root).sensor_positions(names)
    rec = recording(root, montage="easycap-M1")
    with pytest.raises(MissingPositionsError, match=r"1 of 6 channels have no sensor position \(type eeg\): "
                                                    r"Xtra\. ") as info:
        rec.sensor_positions(names)
    assert info.value.channels == ["Xtra"]
    pos = rec.sensor_positions(names[:5])
    assert len(np.unique(pos, axis=0)) == 5
    assert pos[0, 1] > pos[3, 1] and pos[0, 0] < pos[1, 0]  # Fp1 in front of O1, left of Fp2
    # a montage file (relative to the BIDS root), positions in metres, label x y z
    (root / "cap.sfp").write_text("Fp1 -0.03 0.09 0.0\nFp2 0.03 0.09 0.0\nCz 0 0 0.1\nO1 -0.03 -0.09 0.0\n"
                                  "O2 0.03 -0.09 0.0\nXtra 0.08 0.0 0.02\n")
    from_file = recording(root, montage="cap.sfp")
    assert "montage:cap.sfp" in from_file.input_files()
    pos = from_file.sensor_positions(names)
    assert len(np.unique(pos, axis=0)) == 6 and pos[0, 1] > pos[3, 1]
    with pytest.raises(StudyError, match=r"studies\.bids\.montage='nope' is neither a montage file .* built-in"):
        recording(root, montage="nope").raw()


# -- caches follow their data ----------------------------------------------------------------------------

def test_uid_follows_sidecars_events_and_stimuli_not_mtimes(eeg, tmp_path):
    root, tsv = eeg
    write_tsv(tsv, HEADER, story_rows())
    first = recording(root)
    uid, signal = first.uid, first.signal_uid
    cache = Cache(tmp_path / "cache")
    params = PreprocessParams(sample_rate=50.0, picks=("eeg",))
    assert preprocess(first, cache, params).meta["ch_names"] == list(("Fp1", "Fp2", "F3", "F4", "C3", "C4",
                                                                       "O1", "O2"))
    # touching every file without changing it keeps the uid
    for path in root.rglob("*"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert recording(root).uid == uid
    # a channel marked bad in channels.tsv: new uid, and the preprocessed signal leaves it out
    channels = root / "sub-01" / "eeg" / "sub-01_task-listen_channels.tsv"
    table = pd.read_csv(channels, sep="\t", dtype=str, keep_default_na=False)
    table.loc[table.name == "C3", "status"] = "bad"
    table.to_csv(channels, sep="\t", index=False)
    marked = recording(root)
    assert marked.uid != uid and marked.signal_uid != signal
    assert "C3" not in preprocess(marked, cache, params).meta["ch_names"]
    uid, signal = marked.uid, marked.signal_uid
    # an onset shifted in events.tsv: new uid (the signal is the same)
    rows = story_rows()
    rows[2][0] = 2.45
    write_tsv(tsv, HEADER, rows)
    shifted = recording(root)
    assert shifted.uid != uid and shifted.signal_uid == signal
    assert 2.45 in set(shifted.events().onset)
    uid = shifted.uid
    # the stimulus file rewritten with other audio of the same length: new uid
    from .fixtures import write_wav

    write_wav(root / "stimuli" / "story.wav", 8.0, seed=7)
    assert recording(root).uid != uid
    uid = recording(root).uid
    # the EEG sidecar json, the electrodes, the study options
    sidecar = root / "sub-01" / "eeg" / "sub-01_task-listen_eeg.json"
    sidecar.write_text(sidecar.read_text().replace('"PowerLineFrequency": "n/a"', '"PowerLineFrequency": 60'))
    assert recording(root).uid != uid
    uid = recording(root).uid
    electrodes = next((root / "sub-01" / "eeg").glob("*electrodes.tsv"))
    electrodes.write_text(electrodes.read_text().replace("\n", "\n", 1) + "")
    lines = electrodes.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split("\t")[1], "0.0123", 1)
    electrodes.write_text("\n".join(lines) + "\n")
    assert recording(root).uid != uid
    assert recording(root, block_pad=0.5).uid != recording(root).uid
    # the same files elsewhere: the same uid
    moved = tmp_path / "elsewhere" / "bids"
    shutil.copytree(root, moved)
    assert recording(moved).uid == recording(root).uid
