"""The embedded synthetic study: generation, BIDS round trip, timings, determinism and signal content."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from scipy import signal

from bm2.events import ARPABET
from bm2.studies import StudyError, get_study_class, layout_positions
from bm2.studies.synthetic import GEN_VERSION, SyntheticStudy, speech
from bm2.utils.hashing import content_hash

TINY = dict(n_subjects=2, n_sessions=1, n_sentences=6, sentences_per_recording=4, sfreq=200.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SyntheticStudy:
    study = SyntheticStudy(tmp_path_factory.mktemp("synthetic"), **TINY)
    study.prepare()
    return study


def test_registered_with_metadata():
    assert get_study_class("synthetic") is SyntheticStudy
    meta = SyntheticStudy.metadata()
    assert meta["modality"] == "meg" and meta["licence"] == "MIT" and meta["language"] == "en"
    assert meta["doi"].startswith("n/a") and meta["url"] == "generated"


def test_options_choose_the_folder(tmp_path):
    a, b = SyntheticStudy(tmp_path, **TINY), SyntheticStudy(tmp_path / "other", **TINY)
    assert a.dataset.name == b.dataset.name and a.dataset.name.startswith(f"{GEN_VERSION}-")
    assert SyntheticStudy(tmp_path, **{**TINY, "seed": 1}).dataset != a.dataset
    assert SyntheticStudy(tmp_path, **{**TINY, "snr": 2.0}).dataset != a.dataset
    with pytest.raises(StudyError, match="prepare"):
        a.iter_recordings()
    with pytest.raises(ValueError, match="sfreq"):
        SyntheticStudy(tmp_path, sfreq=50.0)


def test_prepare_writes_bids_once(tiny):
    root = tiny.dataset
    assert (root / "bm2_complete.json").is_file()
    assert not list(tiny.root.glob(".*tmp*"))
    start = time.perf_counter()
    tiny.prepare()
    assert time.perf_counter() - start < 0.5
    for name in ("participants.tsv", "dataset_description.json", "README"):
        assert (root / name).is_file(), name
    assert sorted(pd.read_csv(root / "participants.tsv", sep="\t")["participant_id"]) == ["sub-01", "sub-02"]
    recordings = list(tiny.iter_recordings())
    assert [(r.subject, r.session, r.task) for r in recordings] == [("01", "0", "listen"), ("02", "0", "listen")]
    assert len({r.uid for r in recordings}) == 2
    assert recordings[0].identity["generation"] == root.name
    fif = root / "sub-01/ses-0/meg/sub-01_ses-0_task-listen_meg.fif"
    tsv = fif.with_name("sub-01_ses-0_task-listen_events.tsv")
    assert fif.is_file() and tsv.is_file() and tsv.with_suffix(".json").is_file()
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False)
    assert list(table.columns[:3]) == ["onset", "duration", "trial_type"]
    sounds = table.loc[table.trial_type == "sound", "sound"]
    assert all(s.startswith("stimuli/") and (root / s).is_file() for s in sounds)


def test_events_and_timings(tiny):
    for rec in tiny.iter_recordings():
        ev = rec.events()
        raw = rec.raw()
        counts = ev["kind"].value_counts()
        assert counts["sound"] == counts["block"] == TINY["sentences_per_recording"]
        sounds = ev[ev.kind == "sound"].sort_values("onset")
        blocks = ev[ev.kind == "block"].sort_values("onset")
        words, phones = ev[ev.kind == "word"], ev[ev.kind == "phoneme"]
        assert sounds.onset.iloc[0] >= 2.0 and raw.times[-1] - (sounds.onset + sounds.duration).iloc[-1] >= 2.0
        pauses = sounds.onset.to_numpy()[1:] - (sounds.onset + sounds.duration).to_numpy()[:-1]
        assert np.all((pauses >= 1.5 - 1e-6) & (pauses <= 2.5 + 1e-3))
        assert np.isclose(blocks.onset.iloc[0], sounds.onset.iloc[0] - 1.0)
        assert np.isclose((blocks.onset + blocks.duration).iloc[-1], (sounds.onset + sounds.duration).iloc[-1] + 1)
        block_ends = (blocks.onset + blocks.duration).to_numpy()
        assert np.all(block_ends[:-1] <= blocks.onset.to_numpy()[1:] + 1e-9)  # no overlap
        assert set(phones.text) <= set(ARPABET)
        for (_, snd), (_, blk) in zip(sounds.iterrows(), blocks.iterrows()):
            assert blk.onset < snd.onset and snd.onset + snd.duration < blk.onset + blk.duration
            info = soundfile.info(snd.filepath)
            assert Path(snd.filepath).is_absolute() and snd.offset == 0
            assert info.samplerate == 16_000 and info.channels == 1
            assert np.isclose(info.frames / info.samplerate, snd.duration, atol=1e-6)
            inside = words[(words.onset >= snd.onset) & (words.onset < snd.onset + snd.duration)]
            assert " ".join(inside.sort_values("onset").text) == blk.uid
            assert list(inside.sort_values("onset").word_index) == list(range(len(inside)))
            assert set(inside.sentence_id) == {content_hash(blk.uid)}
            assert (inside.onset + inside.duration <= snd.onset + snd.duration + 1e-6).all()
            assert inside.duration.between(0.249, 0.701).all()
            for _, w in inside.iterrows():
                ph = phones[(phones.onset >= w.onset - 1e-9) & (phones.onset < w.onset + w.duration - 1e-9)]
                assert list(ph.text) == list(speech.PRONUNCIATIONS[w.text])
                assert np.isclose(ph.duration.sum(), w.duration, atol=1e-6)
                assert ph.duration.between(0.05 - 1e-6, 0.2 + 1e-6).all()


def test_read_back_equals_generation_and_layout(tiny):
    import mne

    rec = next(tiny.iter_recordings())
    raw = rec.raw()
    assert not raw.preload and raw.info["sfreq"] == TINY["sfreq"] and len(raw.ch_names) == 102
    assert raw.ch_names[0] == "MEG 0111" and set(raw.get_channel_types()) == {"mag"}
    generated, events = tiny.simulate_recording(0, 0)
    data = raw.get_data()
    np.testing.assert_allclose(data, generated.get_data(), rtol=2e-7, atol=1e-20)
    assert 1e-14 < np.median(data.std(axis=1)) < 5e-12  # femtotesla-scale values in Tesla
    assert mne.channels.find_layout(raw.info).kind == "Vectorview-mag"
    pos = layout_positions(raw.info, raw.ch_names)
    assert pos.shape == (102, 2) and pos.min() >= 0 and pos.max() <= 1
    assert np.array_equal(pos, rec.sensor_positions(raw.ch_names))
    ev = rec.events()
    assert len(ev) == len(events)
    np.testing.assert_allclose(np.sort(ev.onset), np.sort(events.onset), atol=1e-6)


def test_deterministic(tiny, tmp_path):
    again = SyntheticStudy(tmp_path, **TINY)
    again.prepare()
    for a, b in zip(tiny.iter_recordings(), again.iter_recordings()):
        assert a.uid == b.uid
        assert np.array_equal(a.raw().get_data(), b.raw().get_data())
        ea, eb = a.events(), b.events()
        pd.testing.assert_frame_equal(ea.drop(columns="filepath"), eb.drop(columns="filepath"))
    for wav in sorted((tiny.dataset / "stimuli").glob("*.wav")):
        assert wav.read_bytes() == (again.dataset / "stimuli" / wav.name).read_bytes()
    other = SyntheticStudy(tmp_path, **{**TINY, "seed": 1})
    raw_a, ev_a = tiny.simulate_recording(0, 0)
    raw_b, ev_b = other.simulate_recording(0, 0)
    assert set(ev_a.block_uid.dropna()) != set(ev_b.block_uid.dropna())
    n = min(raw_a.n_times, raw_b.n_times)
    da, db = raw_a.get_data()[:, :n], raw_b.get_data()[:, :n]
    assert np.abs(da - db).mean() > 0.5 * np.abs(da).mean()


def _prepare_in_child(root: str, log: str) -> None:
    original = SyntheticStudy._generate

    def counted(self: SyntheticStudy, out: Path) -> None:
        with open(log, "a") as f:
            f.write("generated\n")
        original(self, out)

    SyntheticStudy._generate = counted  # type: ignore[method-assign]
    SyntheticStudy(root, **TINY).prepare()


def test_concurrent_prepare_generates_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "log.txt"
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path / "data"), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert log.read_text().count("generated") == 1
    datasets = [p for p in (tmp_path / "data").iterdir() if p.is_dir()]
    assert [p.name for p in datasets] == [SyntheticStudy(tmp_path, **TINY).dataset.name]
    assert len(list(SyntheticStudy(tmp_path / "data", **TINY).iter_recordings())) == 2


def test_speech_lexicon_and_audio():
    used = {p for pron in speech.PRONUNCIATIONS.values() for p in pron}
    assert used == set(ARPABET) and 60 <= len(speech.WORDS) <= 110
    rng = np.random.default_rng(0)
    sentences = speech.make_sentences(30, rng)
    assert len(set(sentences)) == 30 and all(4 <= len(s.split()) <= 9 for s in sentences)
    sent = speech.synthesize(sentences[0], rng)
    assert sent.audio.dtype == np.float32 and np.abs(sent.audio).max() < 1
    assert sent.audio[:10].std() < 1e-3 and sent.audio[-10:].std() < 1e-3  # ramps, no click at the edges
    assert [w for w, _, _ in sent.words] == sentences[0].split()


def test_brain_signal_carries_the_stimulus(tmp_path):
    """At the default snr, the word-locked average 50-300 ms after onsets beats random-onset averages."""
    sfreq = 100.0
    study = SyntheticStudy(tmp_path, n_subjects=1, n_sessions=1, n_sentences=30, sentences_per_recording=30,
                           sfreq=sfreq)
    raw, events = study.simulate_recording(0, 0)
    data = signal.sosfiltfilt(signal.butter(4, 1.0, "highpass", fs=sfreq, output="sos"), raw.get_data(), axis=1)
    median = np.median(data, axis=1, keepdims=True)
    iqr = np.subtract(*np.percentile(data, [75, 25], axis=1))[:, None]
    scaled = (data - median) / iqr
    assert np.abs(scaled).max() > 20  # artefacts: robust scaling + clamping are needed
    lags = np.arange(int(-0.2 * sfreq), int(0.5 * sfreq))
    window = (lags >= 0.05 * sfreq) & (lags <= 0.3 * sfreq)

    def response(onsets: np.ndarray) -> float:
        epochs = np.stack([scaled[:, i + lags] for i in onsets])
        clean = np.abs(epochs).max(axis=(1, 2)) < 10  # reject epochs hit by an artefact, as one does
        avg = epochs[clean].mean(0)
        avg -= avg[:, lags < 0].mean(axis=1, keepdims=True)
        return float(np.sqrt((avg[:, window] ** 2).mean()))

    words = np.round(events.onset[events.trial_type == "word"].to_numpy() * sfreq).astype(int)
    rng = np.random.default_rng(0)
    null = [response(rng.integers(50, scaled.shape[1] - 100, len(words))) for _ in range(20)]
    assert response(words) > max(null) and response(words) > 1.5 * np.mean(null)


def test_uid_follows_channels_and_events(tiny, tmp_path):
    import shutil

    copy = SyntheticStudy(tmp_path, **TINY)
    shutil.copytree(tiny.dataset, copy.dataset)
    before = [r.uid for r in copy.iter_recordings()]
    assert before == [r.uid for r in tiny.iter_recordings()]
    meg = copy.dataset / "sub-01" / "ses-0" / "meg"
    channels = next(meg.glob("*_channels.tsv"))
    channels.write_text(channels.read_text().replace("\tgood", "\tbad", 1))
    marked = [r.uid for r in copy.iter_recordings()]
    assert marked[0] != before[0] and marked[1] == before[1]
    tsv = next(meg.glob("*_events.tsv"))
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    row = table.index[table.trial_type == "word"][0]
    table.loc[row, "onset"] = str(float(table.loc[row, "onset"]) + 0.02)
    table.to_csv(tsv, sep="\t", index=False)
    assert [r.uid for r in copy.iter_recordings()][0] not in (before[0], marked[0])
