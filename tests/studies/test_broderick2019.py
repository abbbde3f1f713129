"""broderick2019 (Natural Speech) on fixtures in the Dryad layout (Natural Speech/EEG/Subject*/..._Run*.mat,
Natural Speech/Stimuli/Text) and in the older flat one (Subject*/, Stimuli/)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.download.archives import extract_archive
from bm2.download.studies import DEFAULTS
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies.broderick2019 import Broderick2019

from .fixtures import BRODERICK_DIR, write_broderick

RUNS = [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("broderick2019")
    write_broderick(path, audio=path / "audiobook")
    return path


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("broderick2019_flat")
    write_broderick(path, layout="flat")
    return path


def test_fixture_layout(root, flat):
    data = root / BRODERICK_DIR
    assert (data / "EEG" / "Subject2" / "Subject2_Run1.mat").is_file()
    assert (data / "Stimuli" / "Text" / "Run2.mat").is_file()
    assert (data / "Stimuli" / "Envelopes" / "audio1_128Hz.mat").is_file()
    assert not (root / "Subject1").exists() and (flat / "Subject1" / "Subject1_Run1.mat").is_file()


def test_metadata_and_recordings(root):
    assert get_study_class("broderick2019") is Broderick2019
    study = Broderick2019(root)
    recs = list(study.iter_recordings())
    assert [(r.subject, r.task) for r in recs] == RUNS
    assert study.data_dirs() == (root / BRODERICK_DIR / "EEG", root / BRODERICK_DIR / "Stimuli")
    assert [r.task for r in Broderick2019(root, subjects=[2], runs=[2]).iter_recordings()] == ["2"]
    with pytest.raises(StudyError, match=r"subjects=\[3\] and runs=None"):
        list(Broderick2019(root, subjects=[3]).iter_recordings())


def test_layouts_give_the_same_recordings(root, flat, tmp_path):
    nested = list(Broderick2019(root).iter_recordings())
    inner = list(Broderick2019(root / BRODERICK_DIR).iter_recordings())  # root = the Natural Speech folder
    legacy = list(Broderick2019(flat).iter_recordings())
    assert [(r.subject, r.task) for r in inner] == [(r.subject, r.task) for r in legacy] == RUNS
    # the same files give the same uid in every layout (the fixture's flat files were written at another time,
    # and a .mat header holds its creation time: copy the nested files into the flat layout)
    copied = tmp_path / "flat_copy"
    shutil.copytree(root / BRODERICK_DIR / "EEG", copied)
    shutil.copytree(root / BRODERICK_DIR / "Stimuli", copied / "Stimuli")
    assert [r.uid for r in nested] == [r.uid for r in inner] == \
        [r.uid for r in Broderick2019(copied).iter_recordings()]
    assert inner[0].path == root / BRODERICK_DIR / "EEG" / "Subject1" / "Subject1_Run1.mat"
    for rec in (inner[0], legacy[0]):
        ev = rec.events()
        assert (ev.kind == "word").sum() == 42
    shutil.copytree(root / BRODERICK_DIR, tmp_path / "dryad_v3" / BRODERICK_DIR)  # archive inside a folder
    assert [(r.subject, r.task) for r in Broderick2019(tmp_path).iter_recordings()] == RUNS


def test_nothing_found_names_the_layouts(root, tmp_path):
    for where in (root / BRODERICK_DIR / "Stimuli", tmp_path):
        with pytest.raises(StudyError, match=r"searched: <root>/Natural Speech/EEG/Subject\*/.*"
                                             r"<root>/EEG/Subject\*/.*<root>/Subject\*/ with <root>/Stimuli/"):
            list(Broderick2019(where).iter_recordings())


def test_downloaded_archive_is_found(root, tmp_path):
    """The dataset zip (five inner zips) extracted as the downloader does: the study root works as is."""
    inner = tmp_path / "Natural Speech.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        for path in sorted((root / BRODERICK_DIR).rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    dataset = tmp_path / "broderick2019_dryad.zip"
    with zipfile.ZipFile(dataset, "w") as zf:
        zf.write(inner, inner.name)
        for other in ("Cocktail Party", "N400", "Natural Speech - Reverse", "Speech in Noise"):
            zf.writestr(f"{other}.zip", b"")
    study_root = tmp_path / "broderick2019"
    extract_archive(dataset, study_root)
    for pattern in DEFAULTS["broderick2019"]["nested"]:
        for found in sorted(study_root.glob(pattern)):
            extract_archive(found, found.parent)
    recs = list(Broderick2019(study_root).iter_recordings())
    assert [(r.subject, r.task) for r in recs] == RUNS
    assert recs[0].path == study_root / BRODERICK_DIR / "EEG" / "Subject1" / "Subject1_Run1.mat"
    assert (recs[0].events().kind == "block").sum() == 6


def test_raw_biosemi_positions_and_preprocess(root, tmp_path):
    rec = next(iter(Broderick2019(root).iter_recordings()))
    raw = rec.raw()
    assert raw.info["sfreq"] == 128 and len(raw.ch_names) == 130
    assert raw.get_channel_types().count("eeg") == 128 and raw.ch_names[:2] == ["A1", "A2"]
    assert raw.ch_names[-2:] == ["M1", "M2"] and raw.get_channel_types()[-2:] == ["misc", "misc"]
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
    assert abs(words.onset.iloc[0] - 1.0) < 1e-6  # onset_time: s from the audio onset = EEG sample 0
    for block in ev[ev.kind == "block"].itertuples():
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))
    with_audio = next(iter(Broderick2019(root, audio=root / "audiobook").iter_recordings())).events()
    sound = with_audio[with_audio.kind == "sound"].iloc[0]
    assert Path(sound.filepath) == root / "audiobook" / "audio1.wav" and Path(sound.filepath).exists()


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_missing_stimulus_file_is_named(root, flat, tmp_path, layout):
    copy = tmp_path / "ns"
    shutil.copytree(root if layout == "nested" else flat, copy)
    stimuli = copy / BRODERICK_DIR / "Stimuli" if layout == "nested" else copy / "Stimuli"
    (stimuli / "Text" / "Run1.mat").unlink()
    rec = next(iter(Broderick2019(copy).iter_recordings()))
    with pytest.raises(StudyError, match=r"Stimuli/Text/Run1\.mat"):
        rec.events()


def test_uid_follows_the_word_timings(root, tmp_path):
    from scipy.io import loadmat, savemat

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = [r.uid for r in Broderick2019(copy).iter_recordings()]
    text = copy / BRODERICK_DIR / "Stimuli" / "Text" / "Run1.mat"
    mat = loadmat(text)
    mat["onset_time"] = mat["onset_time"] + 0.01
    savemat(text, {k: v for k, v in mat.items() if not k.startswith("__")})
    after = [r.uid for r in Broderick2019(copy).iter_recordings()]
    assert [a != b for a, b in zip(after, before)] == [True, False, True, False]  # run 1 of both subjects
