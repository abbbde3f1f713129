"""nsd2024: the Neural Speech Decoding release's HDF5 layout written with h5py, read back; its spectrogram feature,
the brain lead, the last-N split and the reference audio on it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
from bm2.features import FeatureError, FeatureStack, build_feature
from bm2.features.nsd import chunked_release_spectrogram
from bm2.features.nsd_spec import release_spectrogram
from bm2.preprocessing import PreprocessParams
from bm2.studies.base import StudyError, get_study_class
from bm2.studies.nsd2024 import NSD2024, grid_positions, trial_blocks

from .fixtures_nsd import tiny_signals, tiny_trials, write_nsd, write_tiny


def _one(root, **options):
    return list(NSD2024(root, **options).iter_recordings())


def test_registered_and_reads_the_release_layout(tmp_path):
    assert get_study_class("nsd2024") is NSD2024
    path, w = write_tiny(tmp_path, formant=True)
    (rec,) = _one(tmp_path, sex="female")
    assert rec.subject == "HB02" and rec.sex == "female"
    raw = rec.raw()
    assert raw.info["sfreq"] == 125.0 and raw.get_channel_types() == ["ecog"] * 64
    data = raw.get_data()
    assert data.shape == (64, w["n_frames"])
    np.testing.assert_allclose(data, w["ecog"].T, rtol=0, atol=1e-5)  # electrode i = column i of the file
    events = rec.events()
    sounds = events[events.kind == "sound"].reset_index(drop=True)
    assert len(sounds) == 12 and list(sounds.text) == w["labels"]
    np.testing.assert_allclose(sounds.onset * 125, w["starts"])
    np.testing.assert_allclose((sounds.onset + sounds.duration) * 125, w["ends"])
    assert (sounds.filepath == str(path)).all()
    np.testing.assert_allclose(sounds.offset, sounds.onset)
    words = events[events.kind == "word"].reset_index(drop=True)
    assert list(words.text) == w["labels"] and (words.word_index == 0).all()
    np.testing.assert_allclose(words.onset, sounds.onset)
    blocks = events[events.kind == "block"].reset_index(drop=True)
    first, stop = np.round(blocks.onset * 125), np.round((blocks.onset + blocks.duration) * 125)
    assert (first[1:].to_numpy() >= stop[:-1].to_numpy()).all()  # disjoint
    np.testing.assert_array_equal(first, np.maximum(w["starts"] - 80, 0))  # gaps of 160 frames: blocks do not touch
    np.testing.assert_array_equal(stop, np.maximum(w["ends"] + 63, w["starts"] + 96))
    assert rec.optional("formant_re_alldataset").shape == (w["n_frames"], 6)
    assert rec.optional("noisesample_re_alldataset").shape == (20, 256)
    # the audio track is the waveform, sample 128 t at frame t
    track = rec.audio_track()
    assert track.sample_rate == 16000 and track.n_samples == len(w["wave"])
    np.testing.assert_array_equal(track.read(128 * 5, 128 * 7), w["wave"][640:896])


def test_missing_optional_keys_are_fine(tmp_path):
    write_tiny(tmp_path, spec=None, noise=False)
    (rec,) = _one(tmp_path)
    assert rec.stored_spectrogram() is None and rec.optional("noisesample_re_alldataset") is None
    assert rec.optional("formant_re_alldataset") is None and rec.tasks is None
    assert rec.sex is None
    value = build_feature("nsd_spec").compute_timeline(rec, 125.0, rec.n_frames, Cache(tmp_path / "c"))
    assert value.shape == (256, rec.n_frames)


@pytest.mark.parametrize("key", ["ecog_alldataset", "wave_re_alldataset", "start_ind_re_valid_alldataset",
                                 "end_ind_re_valid_alldataset", "label_alldataset"])
def test_missing_required_key_names_the_file(tmp_path, key):
    path, _ = write_tiny(tmp_path, drop=(key,))
    with pytest.raises(StudyError, match=rf"{path}.*{key}"):
        _one(tmp_path)


def test_trial_indices_beyond_T_name_the_file(tmp_path):
    starts, ends, n_frames = tiny_trials(4)
    ecog, wave = tiny_signals(n_frames, starts=starts, ends=ends)
    ends = ends.copy()
    ends[-1] = n_frames + 30
    path = write_nsd(tmp_path / "P1.h5", ecog, wave, starts, ends, ["a"] * 4, spec=None)
    with pytest.raises(StudyError, match=rf"{path}.*beyond.*{n_frames}.*trial 3"):
        _one(tmp_path)


def test_start_not_before_end_overlaps_and_counts_are_errors(tmp_path):
    starts, ends, n_frames = tiny_trials(4)
    ecog, wave = tiny_signals(n_frames)
    bad = ends.copy()
    bad[1] = starts[1]
    write_nsd(tmp_path / "a" / "P1.h5", ecog, wave, starts, bad, ["a"] * 4, spec=None)
    with pytest.raises(StudyError, match=r"P1.h5.*start >= end.*trial 1"):
        _one(tmp_path / "a")
    swapped = starts.copy()
    swapped[[1, 2]] = swapped[[2, 1]]
    write_nsd(tmp_path / "b" / "P1.h5", ecog, wave, swapped, swapped + 10, ["a"] * 4, spec=None)
    with pytest.raises(StudyError, match=r"P1.h5.*out of time order"):
        _one(tmp_path / "b")
    write_nsd(tmp_path / "c" / "P1.h5", ecog, wave, starts, ends, ["a"] * 3, spec=None)
    with pytest.raises(StudyError, match=r"P1.h5.*different lengths"):
        _one(tmp_path / "c")


def test_label_not_utf8_names_the_file_and_trial(tmp_path):
    starts, ends, n_frames = tiny_trials(3)
    ecog, wave = tiny_signals(n_frames)
    path = write_nsd(tmp_path / "P1.h5", ecog, wave, starts, ends, None, spec=None,
                     raw_labels=[b"cat", "caf\u00e9".encode("latin-1"), b"dog"])
    with pytest.raises(StudyError, match=rf"{path}.*label_alldataset\[1\].*not UTF-8"):
        _one(tmp_path)
    write_nsd(tmp_path / "u" / "P1.h5", ecog, wave, starts, ends, None, spec=None,
              raw_labels=[b"cat", "caf\u00e9".encode(), b"dog"])
    (rec,) = _one(tmp_path / "u")
    assert rec.labels == ["cat", "caf\u00e9", "dog"]


def test_ecog_and_audio_lengths_must_agree(tmp_path):
    starts, ends, n_frames = tiny_trials(3)
    ecog, wave = tiny_signals(n_frames)
    path = write_nsd(tmp_path / "P1.h5", ecog, wave[:-3 * 128], starts, ends, ["a"] * 3, spec=None)
    with pytest.raises(StudyError, match=rf"{path}.*ECoG and audio lengths disagree.*{n_frames} frames"):
        _one(tmp_path)
    write_nsd(tmp_path / "ok" / "P1.h5", ecog, wave[:-100], starts, ends, ["a"] * 3, spec=None)
    assert len(_one(tmp_path / "ok")) == 1  # less than a frame short: within the tolerance


def test_grid_positions_row_major_and_hybrid():
    pos = grid_positions(64)
    assert pos.shape == (64, 2)
    np.testing.assert_allclose(pos[0], [0, 0])
    np.testing.assert_allclose(pos[9], [10, -10])  # row 1, column 1
    np.testing.assert_allclose(pos[63], [70, -70])
    hybrid = grid_positions(128, "hybrid")
    np.testing.assert_allclose(hybrid[:64], pos)
    np.testing.assert_allclose(hybrid[64], [5, -5])
    assert len(np.unique(hybrid, axis=0)) == 128
    with pytest.raises(StudyError, match="do not fit"):
        grid_positions(60, source="x.h5")


def test_sensor_positions_unit_square(tmp_path):
    write_tiny(tmp_path)
    (rec,) = _one(tmp_path)
    pos = rec.sensor_positions(rec.ch_names)
    assert pos.min() == 0 and pos.max() == 1
    np.testing.assert_allclose(pos[9] - pos[0], [1 / 7, -1 / 7], atol=1e-6)


def test_trials_too_close_for_an_evaluation_window_are_reported(tmp_path, caplog):
    starts, ends = np.array([30, 200, 280, 500]), np.array([60, 240, 330, 560])
    ecog, wave = tiny_signals(700)
    write_nsd(tmp_path / "P1.h5", ecog, wave, starts, ends, ["a"] * 4, spec=None)
    with caplog.at_level("WARNING", logger="bm2.studies.nsd2024"):
        _one(tmp_path)
    assert "P1.h5: the blocks of 3 trial(s) (e.g. [0, 1, 2])" in caplog.text  # 0: the start; 1, 2: too close


def test_blocks_meet_halfway_when_trials_are_close():
    starts, ends = np.array([100, 200]), np.array([150, 260])
    blocks = trial_blocks(starts, ends, 400, before=80, after=63, min_after_onset=96)
    assert blocks[0, 1] == blocks[1, 0] == 175 and blocks[0, 0] == 20 and blocks[1, 1] == 323
    np.testing.assert_array_equal(trial_blocks(np.array([10]), np.array([20]), 60, 80, 63, 96), [[0, 60]])


# --------------------------------------------------------------------------- the spectrogram feature

def test_chunked_spectrogram_equals_the_whole_track(tmp_path):
    write_tiny(tmp_path, n_trials=3, spec=None)
    (rec,) = _one(tmp_path)
    track = rec.audio_track()
    whole, _ = release_spectrogram(torch.from_numpy(track.read()))
    chunked = chunked_release_spectrogram(track, rec.n_frames, chunk=7)
    np.testing.assert_allclose(chunked, whole.numpy()[:, :rec.n_frames], atol=1e-5)
    assert whole.shape[-1] == rec.n_frames  # T x 128 samples: exactly one frame per ECoG frame
    longer = chunked_release_spectrogram(track, rec.n_frames + 3, chunk=7)  # past the track: the last frame again
    np.testing.assert_array_equal(longer[:, rec.n_frames:], np.repeat(chunked[:, -1:], 3, axis=1))


def test_spectrogram_checked_against_the_stored_one(tmp_path):
    path, w = write_tiny(tmp_path, n_trials=3)
    (rec,) = _one(tmp_path)
    cache = Cache(tmp_path / "cache")
    value = build_feature("nsd_spec").compute_timeline(rec, 125.0, rec.n_frames, cache)
    np.testing.assert_allclose(value, rec.stored_spectrogram(), atol=1e-4)
    tone = slice(4, 6)  # bins around the 150-Hz tone of trial 0 (bin k at k * 16000 / 511 Hz)
    assert value[tone, w["starts"][0] + 5].mean() > value[tone, 5].mean() + 0.5
    # a stored spectrogram that is not the audio's
    stored = rec.stored_spectrogram().T.copy()
    stored[50, 3] += 0.5
    write_nsd(tmp_path / "bad" / "HB02.h5", w["ecog"], w["wave"], w["starts"], w["ends"], w["labels"], spec=stored)
    (bad,) = _one(tmp_path / "bad")
    with pytest.raises(FeatureError, match=r"bad/HB02.h5.*up to 0.5.*frame 50, bin 3.*source=stored"):
        build_feature("nsd_spec").compute_timeline(bad, 125.0, bad.n_frames, cache)
    trusted = build_feature("nsd_spec", source="stored").compute_timeline(bad, 125.0, bad.n_frames, cache)
    np.testing.assert_array_equal(trusted, stored.T)
    unchecked = build_feature("nsd_spec", check=False).compute_timeline(bad, 125.0, bad.n_frames, cache)
    np.testing.assert_allclose(unchecked, value, atol=1e-5)
    with pytest.raises(FeatureError, match="preprocess.sample_rate=125"):
        build_feature("nsd_spec").compute_timeline(rec, 120.0, rec.n_frames, cache)


# --------------------------------------------------------------------------- windows, lead, split, audio

def _datasets(tmp_path, rec, lead_ms=128.0, **split):
    window = WindowParams(tmin=-0.256, tmax=0.768, stride=0.008, offset_ms=0.0, anchor="sound",
                          train_anchor="stride", lead_ms=lead_ms)
    return build_datasets([rec], Cache(tmp_path / "cache"), PreprocessParams(sample_rate=125.0, picks=("ecog",)),
                          FeatureStack([build_feature("nsd_spec")]), window,
                          SplitParams(strategy="last_n", **{"last_n": 3, "valid": 0.2, **split}),
                          NormParams(baseline=False, robust=False, max_scale=None, scale_features=False),
                          targets=("features", "speech"))


def test_windows_crops_lead_split_and_reference_audio(tmp_path):
    path, w = write_tiny(tmp_path)
    (rec,) = _one(tmp_path)
    ds = _datasets(tmp_path, rec)
    starts, ends = w["starts"], w["ends"]
    # the last 3 trials in file order are the test set, 2 of the other 9 (round(0.2 * 9)) just before them valid
    trial_of = {f"HB02/trial {i}": i for i in range(12)}
    assert sorted(trial_of[u] for u in ds.test.segments.block_uid) == [9, 10, 11]
    assert sorted(trial_of[u] for u in ds.valid.segments.block_uid) == [7, 8]
    # test windows: 128 frames from 32 frames before onset; brain from 16 frames earlier
    first = ds.test.segments.start.to_numpy()
    np.testing.assert_array_equal(first, starts[9:] - 32)
    batch = ds.test.batch([0, 1])
    assert batch["brain"].shape == (2, 64, 144) and batch["features"].shape == (2, 256, 128)
    assert batch["speech"].shape == (2, 128)
    centred = w["ecog"] - w["ecog"].astype(np.float64).mean(axis=0)  # preprocessing removes each channel's mean
    expected = centred[first[0] - 16:first[0] + 128].T
    np.testing.assert_allclose(batch["brain"][0].numpy(), expected, atol=1e-3)  # exact samples, electrode order
    np.testing.assert_array_equal(batch["speech"][0].numpy(), ((np.arange(128) >= 32) &
                                                               (np.arange(128) < 32 + ends[9] - starts[9])))
    spec = ds.recordings[0].features.array
    np.testing.assert_array_equal(batch["features"][0].numpy(), spec[:, first[0]:first[0] + 128])
    # training crops: every start in [onset - 64, end - 64), as the original draws them
    train = ds.train.segments
    for i in range(7):
        got = np.sort(train.start[train.block_uid == f"HB02/trial {i}"].to_numpy())
        np.testing.assert_array_equal(got, np.arange(starts[i] - 64, ends[i] - 64))
    assert ds.train.batch([0])["brain"].shape == (1, 64, 144)
    # reference audio: the waveform under the test window's 128 frames
    audio, sr = ds.test.reference_audio(0)
    assert sr == 16000
    np.testing.assert_array_equal(audio, w["wave"][first[0] * 128:(first[0] + 128) * 128])


def test_last_n_per_task(tmp_path):
    tasks = ["VisRead", "PicN"] * 6
    write_tiny(tmp_path, tasks=tasks)
    (rec,) = _one(tmp_path)
    assert rec.tasks == tasks
    ds = _datasets(tmp_path, rec, last_n=2, valid=0.0, last_n_per="task")
    trial_of = {f"HB02/trial {i}": i for i in range(12)}
    assert sorted(trial_of[u] for u in ds.test.segments.block_uid) == [8, 9, 10, 11]
    events = rec.events()
    assert set(events[events.kind == "sound"].task) == {"VisRead", "PicN"}
    with pytest.raises(ValueError, match="last_n_per='session'"):
        _datasets(tmp_path, rec, last_n=2, valid=0.0, last_n_per="session")


def test_last_n_per_task_without_tasks_is_an_error_not_a_plain_last_n(tmp_path):
    write_tiny(tmp_path)  # the release has no task key: every trial's task is unknown
    (rec,) = _one(tmp_path)
    assert rec.tasks is None
    with pytest.raises(ValueError, match="no block of this recording has a task.*last_n_per=null"):
        _datasets(tmp_path, rec, last_n=2, valid=0.0, last_n_per="task")


def test_truncated_file_names_the_file(tmp_path):
    path, _ = write_tiny(tmp_path, n_trials=3)
    with h5py.File(path, "r") as f:
        assert "ecog_alldataset" in f
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(StudyError, match=rf"{path}"):
        _one(tmp_path)


# --------------------------------------------------------------------------- the optional praat target

def _praat_datasets(tmp_path, rec, **params):
    from bm2.features.praat import PraatParams

    window = WindowParams(tmin=-0.256, tmax=0.768, stride=0.008, offset_ms=0.0, anchor="sound",
                          train_anchor="stride", lead_ms=128.0)
    return build_datasets([rec], Cache(tmp_path / "cache"), PreprocessParams(sample_rate=125.0, picks=("ecog",)),
                          FeatureStack([build_feature("nsd_spec")]), window,
                          SplitParams(strategy="last_n", last_n=3, valid=0.0),
                          NormParams(baseline=False, robust=False, max_scale=None, scale_features=False),
                          targets=("features", "praat"), praat=PraatParams(**params))


def test_praat_target_from_the_release_tracks(tmp_path):
    write_tiny(tmp_path, formant=True)
    (rec,) = _one(tmp_path)
    batch = _praat_datasets(tmp_path, rec).test.batch([0, 1])
    assert batch["praat"].shape == (2, 4, 128)
    np.testing.assert_array_equal(batch["praat"][0, :, 0].numpy(), [120, 500, 1500, 2500])
    from bm2.features import FeatureError as Error
    from bm2.features.praat import stored_tracks

    with pytest.raises(Error, match="HB02.h5 stores its pitch / formant tracks at 125 Hz.*sample_rate=125"):
        stored_tracks(rec, 100, sample_rate=100.0)  # frame t would take the value of another time


def test_praat_target_computed_by_praat_when_absent(tmp_path):
    pytest.importorskip("parselmouth")
    from bm2.features import FeatureError as Error

    _, w = write_tiny(tmp_path, spec=None)
    (rec,) = _one(tmp_path)
    with pytest.raises(Error, match="HB02.h5.*features.praat.source=auto"):
        _praat_datasets(tmp_path / "a", rec, source="stored")
    ds = _praat_datasets(tmp_path / "b", rec)
    trial = int(ds.test.segments.block_uid.iloc[0].split()[-1])
    praat = ds.test.praat_window(0)
    spoken = slice(32 + 3, 32 + int(w["ends"][trial] - w["starts"][trial]) - 3)
    # each trial of the fixture is a tone of 150 + 20 i Hz over faint noise: Praat's f0 is the tone inside the
    # word and undefined in the silence before it
    np.testing.assert_allclose(np.nanmedian(praat[0, spoken]), 150 + 20 * trial, rtol=0.02)
    assert np.isnan(praat[0, :25]).mean() > 0.8
