"""gwilliams2022 (MEG-MASC) on a fixture in its BIDS layout with dict-literal events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm2.cache import Cache
from bm2.events import ARPABET
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError, get_study_class
from bm2.studies._common import parse_dict_literal, to_arpabet
from bm2.studies.gwilliams2022 import Gwilliams2022

from .fixtures import GWILLIAMS_RECORDINGS, write_gwilliams


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gwilliams2022")
    write_gwilliams(path)
    return path


def test_metadata():
    assert get_study_class("gwilliams2022") is Gwilliams2022
    meta = Gwilliams2022.metadata()
    assert meta["modality"] == "meg" and "KIT" in meta["device"] and "208" in meta["device"]
    assert meta["language"] == "en" and meta["doi"] and meta["url"].startswith("https://")


def test_recordings_sorted_and_filtered(root):
    recs = list(Gwilliams2022(root).iter_recordings())
    assert [(r.subject, r.session, r.task) for r in recs] == list(GWILLIAMS_RECORDINGS)
    assert len({r.uid for r in recs}) == 3
    assert [r.task for r in Gwilliams2022(root, subjects=["01"], tasks=["1"]).iter_recordings()] == ["1"]
    with pytest.raises(StudyError, match="no 'sub-"):
        list(Gwilliams2022(root / "sub-01").iter_recordings())


def test_events_words_phonemes_sounds_blocks(root):
    rec = next(iter(Gwilliams2022(root).iter_recordings()))
    ev = rec.events()
    counts = ev.kind.value_counts()
    assert counts["block"] == 12 and counts["word"] == 84 and counts["phoneme"] == 252 and counts["sound"] == 1
    assert set(ev.loc[ev.kind == "phoneme", "text"]) <= set(ARPABET)
    sound = ev[ev.kind == "sound"].iloc[0]
    assert Path(sound.filepath) == root / "stimuli" / "audio" / "lw1_0.wav" and sound.duration > 30
    blocks = ev[ev.kind == "block"]
    words = ev[ev.kind == "word"]
    for block in blocks.itertuples():  # each block holds one whole sentence, text = uid
        inside = words[(words.onset >= block.onset) & (words.onset < block.onset + block.duration)]
        assert " ".join(inside.text) == block.uid and list(inside.word_index) == list(range(7))
        assert inside.sentence_id.nunique() == 1
    assert (blocks.onset.to_numpy()[1:] >= (blocks.onset + blocks.duration).to_numpy()[:-1] - 1e-9).all()


def test_raw_positions_and_preprocess(root, tmp_path):
    rec = next(iter(Gwilliams2022(root).iter_recordings()))
    raw = rec.raw()
    assert len(raw.ch_names) == 208 and raw.info["sfreq"] == 1000.0
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("meg",)))
    assert entry["brain"].shape[0] == 208 and entry["positions"].shape == (208, 2)
    pos = entry["positions"]
    assert pos.min() >= 0 and pos.max() <= 1 and len(np.unique(pos.round(4), axis=0)) == 208


def test_arpabet_labels():
    assert to_arpabet("ah_B") == "AH" and to_arpabet("HH1") == "HH" and to_arpabet("sil") is None
    assert to_arpabet("sp") is None and to_arpabet(None) is None


def test_dict_literal_parsing_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [f"__import__('os').system('touch {marker}')",
                f"{{'kind': __import__('os').system('touch {marker}')}}",
                "{'kind': 'word', 'x': [1, 2]}", "['kind', 'word']", "{'kind': 'word'"]
    for text in payloads:
        with pytest.raises(StudyError, match="file.tsv row 7"):
            parse_dict_literal(text, "file.tsv row 7")
    assert not marker.exists()
    assert parse_dict_literal("{'kind': 'word', 'word': 'a', 'n': 1.0}", "x") == {"kind": "word", "word": "a",
                                                                                  "n": 1.0}


def test_malicious_events_file_is_rejected(root, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    tsv = copy / "sub-01/ses-0/meg/sub-01_ses-0_task-0_events.tsv"
    table = pd.read_csv(tsv, sep="\t")
    marker = tmp_path / "pwned"
    table.loc[3, "trial_type"] = f"__import__('os').system('touch {marker}')"
    table.to_csv(tsv, sep="\t", index=False)
    rec = next(iter(Gwilliams2022(copy).iter_recordings()))
    with pytest.raises(StudyError, match=r"events\.tsv line 5"):
        rec.events()
    assert not marker.exists()


def test_sound_paths_resolved_tolerantly(tmp_path):
    from bm2.studies.gwilliams2022 import resolve_sound

    audio = tmp_path / "stimuli" / "audio"
    audio.mkdir(parents=True)
    (audio / "lw1_0.wav").write_bytes(b"RIFF")
    (audio / "the_black_willow_3.wav").write_bytes(b"RIFF")
    assert resolve_sound(tmp_path, "stimuli/audio/lw1_0.wav") == audio / "lw1_0.wav"
    assert resolve_sound(tmp_path, "stimuli/audio/lw1_0.0.wav") == audio / "lw1_0.wav"          # float sound id
    assert resolve_sound(tmp_path, "Stimuli/Audio/The_Black_Willow_3.wav") == audio / "the_black_willow_3.wav"
    assert resolve_sound(tmp_path, "/abs/elsewhere/lw1_0.wav") == audio / "lw1_0.wav"
    assert resolve_sound(tmp_path, "stimuli/audio/missing_1.wav") == audio / "missing_1.wav"  # named in errors


def test_uid_follows_sidecars_events_and_audio(root, tmp_path, caplog):
    """The cache key follows channels.tsv, events.tsv (also read as Latin-1), the audio and the raw file; a
    touch changes nothing."""
    import logging
    import os
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    meg = copy / "sub-01/ses-0/meg"

    def uid() -> str:
        return next(iter(Gwilliams2022(copy).iter_recordings())).uid

    first = uid()
    assert first == next(iter(Gwilliams2022(root).iter_recordings())).uid  # the same files elsewhere
    for path in meg.iterdir():
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert uid() == first
    channels = meg / "sub-01_ses-0_task-0_channels.tsv"
    channels.write_text(channels.read_text().replace("\tgood", "\tbad", 1))
    assert next(iter(Gwilliams2022(copy).iter_recordings())).raw().info["bads"] == ["MEG 001"]
    second = uid()
    assert second != first
    tsv = meg / "sub-01_ses-0_task-0_events.tsv"
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    word = table.trial_type.str.contains("'kind': 'word'").idxmax()
    table.loc[word, "onset"] = str(float(table.loc[word, "onset"]) + 0.05)
    table.loc[word, "trial_type"] = table.loc[word, "trial_type"].replace("'word': '", "'word': 'é", 1)
    tsv.write_bytes(table.to_csv(sep="\t", index=False).encode("latin-1"))
    with caplog.at_level(logging.WARNING):
        rec = next(iter(Gwilliams2022(copy).iter_recordings()))
        assert rec.uid not in (first, second)
    assert any("is not UTF-8" in r.getMessage() and "events.tsv" in r.getMessage() for r in caplog.records)
    assert rec.events().text.str.startswith("é").sum() == 1
    third = uid()
    from .fixtures import write_wav

    write_wav(copy / "stimuli/audio/lw1_0.wav", 5.0, seed=3)
    assert uid() not in (first, second, third)
