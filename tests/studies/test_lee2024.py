"""lee2024: the release's HDF5 layout and its MATLAB v7.3 channel file, written here with h5py, read back.

What the fixtures emulate (MATLAB ``save -v7.3``, as documented by MathWorks and read by hdf5storage / pymatreader):
an HDF5 file behind a 512-byte user block holding MATLAB's text header; arrays stored transposed (column-major);
char arrays as uint16 code units with ``MATLAB_class='char'``; a 1 x N cell as an (N, 1) dataset of object
references into ``/#refs#``; a 1 x N struct array (EEGLAB's ``chanlocs``) as a group with ``MATLAB_class='struct'``
whose fields are (N, 1) datasets of references; ``srate`` a (1, 1) double. A second fixture writes ``ch_names``
as a char matrix (N x L, stored (L, N)) and ``ch_locs`` fields as plain numeric vectors (a scalar struct).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies.base import StudyError, get_study_class
from bm2.studies.lee2024 import (CLASSES, TRIPLETS, Lee2024, class_groups, read_channel_info, triplet_role)
from bm2.studies.lee2024_synthetic import (Lee2024Synthetic, montage_channels, write_channel_info,
                                           write_release)

N_CH = 127


@pytest.fixture(scope="module")
def montage():
    return montage_channels()


def _release(root, montage, n_trials=12, shape=(4, 16), labels=None, raw=False, name="sub_1_ImaginedSpeech.h5"):
    names, xyz = montage
    root.mkdir(parents=True, exist_ok=True)
    write_channel_info(root / "ch_information.mat", names, 256.0, xyz)
    rng = np.random.default_rng(0)
    x = rng.random((n_trials, N_CH, shape[1]) if raw else (n_trials, N_CH, *shape)).astype(np.float32)
    y = np.arange(n_trials) % 88 if labels is None else labels
    write_release(root / name, x, y)
    return x, y


def test_class_names_and_triplets():
    assert len(CLASSES) == 88 == len(set(CLASSES))
    words = [w for t in TRIPLETS for w in t]
    assert len(words) == 36 == len(set(words)) and set(words) <= set(CLASSES)
    groups = class_groups(CLASSES)
    assert groups[CLASSES.index("barrier")] == groups[CLASSES.index("wall")] == groups[CLASSES.index("war")]
    assert groups[CLASSES.index("barrier")] != groups[CLASSES.index("shop")]
    assert len(set(groups)) == 12 + 52  # 12 triplets, 52 phrase words alone
    assert [triplet_role(w) for w in ("barrier", "wall", "war", "google")] == [
        "word", "semantic", "phonological", "phrase"]


def test_matlab_v73_channel_file(tmp_path, montage):
    names, xyz = montage
    path = tmp_path / "ch_information.mat"
    write_channel_info(path, names, 256.0, xyz)
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as f:  # the layout MATLAB writes
        assert f["ch_names"].dtype == h5py.ref_dtype and f["ch_names"].shape == (N_CH, 1)
        first = f[f["ch_names"][0, 0]]
        assert first.dtype == np.uint16 and first.attrs["MATLAB_class"] == b"char"
        assert f["ch_locs"].attrs["MATLAB_class"] == b"struct"
    got_names, srate, got_xyz = read_channel_info(path)
    assert got_names == names and srate == 256.0
    np.testing.assert_allclose(got_xyz, xyz)


def test_char_matrix_names_and_numeric_fields(tmp_path, montage):
    names, xyz = montage
    path = tmp_path / "ch.mat"
    width = max(map(len, names))
    chars = np.array([[ord(c) for c in n.ljust(width)] for n in names], dtype=np.uint16)  # MATLAB N x L
    with h5py.File(path, "w", userblock_size=512) as f:
        ds = f.create_dataset("ch_names", data=chars.T)
        ds.attrs["MATLAB_class"] = np.bytes_("char")
        f.create_dataset("srate", data=np.array([[256.0]])).attrs["MATLAB_class"] = np.bytes_("double")
        locs = f.create_group("ch_locs")
        locs.attrs["MATLAB_class"] = np.bytes_("struct")
        for i, key in enumerate("XYZ"):
            locs.create_dataset(key, data=xyz[:, i][:, None])
    got_names, _, got_xyz = read_channel_info(path)
    assert got_names == names
    np.testing.assert_allclose(got_xyz, xyz)


def test_read_spectra_release(tmp_path, montage):
    x, y = _release(tmp_path, montage)
    study = Lee2024(tmp_path)
    (rec,) = list(study.iter_recordings())
    assert rec.subject == "1" and rec.is_spectra
    events = rec.events()
    words = events[events.kind == "word"]
    assert list(words.text) == [CLASSES[i] for i in y]
    assert np.allclose(np.diff(words.onset.to_numpy()), 16 / 256.0)  # trials end to end
    spectra = rec.spectra()
    np.testing.assert_array_equal(spectra.read(slice(None), slice(2, 4)), x[2:4])
    pos = rec.sensor_positions(rec.ch_names)
    assert pos.shape == (N_CH, 2) and pos.min() >= 0 and pos.max() <= 1
    assert len(np.unique(np.round(pos, 4), axis=0)) == N_CH
    # stored as the [C, F, T] brain by the preprocessing step, resampled 256 -> 128 Hz per trial
    entry = preprocess(rec, Cache(tmp_path / "cache"), PreprocessParams(sample_rate=128.0, picks=("eeg",)))
    brain = np.asarray(entry["brain"])
    assert brain.shape == (N_CH, 4, 12 * 8) and entry.meta["tf"] == "precomputed"
    same = preprocess(rec, Cache(tmp_path / "cache2"), PreprocessParams(sample_rate=256.0, picks=("eeg",)))
    # stored in V^2: the release's uV^2 times unit_scale^2
    np.testing.assert_allclose(np.asarray(same["brain"])[:, :, 16:32], x[1] * 1e-12, rtol=1e-6)
    kept = preprocess(next(iter(Lee2024(tmp_path, unit_scale=1.0).iter_recordings())), Cache(tmp_path / "c5"),
                      PreprocessParams(sample_rate=256.0, picks=("eeg",)))
    np.testing.assert_array_equal(np.asarray(kept["brain"])[:, :, 16:32], x[1])
    with pytest.raises(ValueError, match="preprocess.tf=null"):
        preprocess(rec, Cache(tmp_path / "c3"), PreprocessParams(
            sample_rate=256.0, tf="superlet", superlet={"foi": [8, 16]}))
    with pytest.raises(ValueError, match="whole number"):
        preprocess(rec, Cache(tmp_path / "c4"), PreprocessParams(sample_rate=100.0))


def test_raw_release_goes_through_superlets(tmp_path, montage):
    _release(tmp_path, montage, n_trials=3, shape=(0, 256), raw=True)
    (rec,) = list(Lee2024(tmp_path).iter_recordings())
    assert not rec.is_spectra and rec.spectra() is None
    assert rec.raw().get_channel_types() == ["eeg"] * N_CH
    entry = preprocess(rec, Cache(tmp_path / "cache"), PreprocessParams(
        sample_rate=128.0, picks=("eeg",), tf="superlet", superlet={"foi": [8.0, 16.0, 24.0], "order": [1, 2]}))
    assert np.asarray(entry["brain"]).shape == (N_CH, 3, 3 * 128)


def _raw_brain(root, x, params):
    write_release(root / "sub_1_ImaginedSpeech.h5", x, np.arange(len(x)))
    (rec,) = list(Lee2024(root).iter_recordings())
    assert rec.trial_samples == x.shape[-1]
    return np.asarray(preprocess(rec, Cache(root / "cache"), params)["brain"])


@pytest.mark.parametrize("steps", [
    dict(sample_rate=256.0),
    dict(sample_rate=128.0, highpass=1.0, lowpass=40.0)])
def test_raw_trials_never_see_their_neighbours(tmp_path, montage, steps):
    """A trial's superlet spectra (and filtered, resampled signal) do not change when its neighbour changes."""
    names, xyz = montage
    params = PreprocessParams(picks=("eeg",), tf="superlet", superlet={"foi": [4.0, 8.0, 16.0], "order": [1, 3]},
                              **steps)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, N_CH, 256)).astype(np.float32)
    other = x.copy()
    other[0] = 50 * rng.standard_normal((N_CH, 256))  # trial 0 changes (and a large DC step at its border)
    other[2] += 100.0
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_channel_info(tmp_path / name / "ch_information.mat", names, 256.0, xyz)
    a, b = _raw_brain(tmp_path / "a", x, params), _raw_brain(tmp_path / "b", other, params)
    n = a.shape[-1] // 3
    assert a.shape == (N_CH, 3, 3 * n)
    np.testing.assert_array_equal(a[..., n:2 * n], b[..., n:2 * n])  # trial 1, between the two changed ones
    assert not np.allclose(a[..., :n], b[..., :n], rtol=1e-3, atol=0)
    # each trial is the transform of that trial alone
    if "highpass" not in steps:
        from bm2.superlet import superlet
        alone = superlet(x[1].astype(np.float64) * 1e-6, 256.0, [4.0, 8.0, 16.0], 3.0, (1, 3))
        np.testing.assert_allclose(a[..., n:2 * n], alone, rtol=1e-5)


def test_labels_out_of_range_name_the_file(tmp_path, montage):
    _release(tmp_path, montage, labels=np.arange(12) + 80)  # 80 .. 91
    with pytest.raises(StudyError, match=r"sub_1_ImaginedSpeech.h5.*out of range \[0, 88\)"):
        list(Lee2024(tmp_path).iter_recordings())


def test_one_based_and_one_hot_labels(tmp_path, montage):
    _release(tmp_path / "a", montage, labels=np.arange(12) + 1)
    (rec,) = list(Lee2024(tmp_path / "a", label_base=1).iter_recordings())
    assert list(rec.labels) == list(range(12))
    onehot = np.eye(88, dtype=np.int64)[np.arange(12) * 7]
    _release(tmp_path / "b", montage, labels=onehot)
    (rec,) = list(Lee2024(tmp_path / "b").iter_recordings())
    assert list(rec.labels) == list(np.arange(12) * 7)
    bad = onehot.copy()
    bad[0, 1] = 1
    _release(tmp_path / "c", montage, labels=bad)
    with pytest.raises(StudyError, match="not one-hot"):
        list(Lee2024(tmp_path / "c").iter_recordings())


def test_channel_file_disagreeing_with_the_data(tmp_path, montage):
    names, xyz = montage
    _release(tmp_path, montage)
    write_channel_info(tmp_path / "ch_information.mat", names[:-1], 256.0, xyz[:-1])  # 126 names
    with pytest.raises(StudyError, match=r"127 channels but the channel file .*ch_information.mat names 126"):
        list(Lee2024(tmp_path).iter_recordings())
    with h5py.File(tmp_path / "sub_1_ImaginedSpeech.h5", "a") as f:  # a file naming its own channels
        f.create_dataset("ch_names", data=np.array([[ord(c) for c in "X1"]], dtype=np.uint16).T)
    write_channel_info(tmp_path / "ch_information.mat", names, 256.0, xyz)
    with pytest.raises(StudyError, match="disagree with the channel file"):
        list(Lee2024(tmp_path).iter_recordings())


def test_locs_labels_disagreeing_with_names(tmp_path, montage):
    names, xyz = montage
    path = tmp_path / "ch.mat"
    write_channel_info(path, names, 256.0, xyz)
    with h5py.File(path, "a") as f:  # rename ch_names{1}
        ref = f["ch_names"][0, 0]
        f[ref][...] = np.array([[ord(c)] for c in "Zz"[:len(f[ref])].ljust(len(f[ref]), "z")], dtype=np.uint16)
    with pytest.raises(StudyError, match="ch.mat: ch_locs.labels disagree with ch_names"):
        read_channel_info(path)


def test_truncated_files_name_the_file(tmp_path, montage):
    _release(tmp_path, montage)
    data = tmp_path / "sub_1_ImaginedSpeech.h5"
    data.write_bytes(data.read_bytes()[:3000])
    with pytest.raises(StudyError, match="sub_1_ImaginedSpeech.h5.*truncated"):
        list(Lee2024(tmp_path).iter_recordings())
    channels = tmp_path / "ch_information.mat"
    channels.write_bytes(channels.read_bytes()[:2000])
    with pytest.raises(StudyError, match="ch_information.mat"):
        list(Lee2024(tmp_path).iter_recordings())


def test_synthetic_study_roundtrip(tmp_path):
    opts = dict(repeats=2, sfreq=32.0, fmin=4.0, fmax=12.0, n_freqs=8, order=(1, 2))
    spectra = Lee2024Synthetic(tmp_path, **opts)
    assert get_study_class("lee2024_synthetic") is Lee2024Synthetic
    spectra.prepare()
    (rec,) = list(spectra.iter_recordings())
    assert rec.shape == (176, N_CH, 8, 64) and sorted(np.bincount(rec.labels)) == [2] * 88
    raw = Lee2024Synthetic(tmp_path, variant="raw", **opts)
    (raw_rec,) = list(raw.iter_recordings())
    assert raw_rec.shape == (176, N_CH, 64) and list(raw_rec.labels) == list(rec.labels)
    # the spectra file is the superlet power of the raw file, trial by trial
    trial = raw_rec.raw().get_data()[:, :64] * 1e6  # back to uV
    np.testing.assert_allclose(rec.spectra().read(slice(None), slice(0, 1))[0],
                               spectra.spectra_of(trial[None].astype(np.float32))[0], rtol=1e-4, atol=1e-6)
    # one unit (V^2) on both paths: the spectra file read as released, and the raw file through
    # preprocess.tf=superlet with the generator's settings, give the same values
    cache = Cache(tmp_path / "cache")
    released = np.asarray(preprocess(rec, cache, PreprocessParams(sample_rate=32.0, picks=("eeg",)))["brain"])
    computed = np.asarray(preprocess(raw_rec, cache, PreprocessParams(
        sample_rate=32.0, picks=("eeg",), tf="superlet",
        superlet={"foi": spectra.foi_hz.tolist(), "c1": 3.0, "order": [1, 2]}))["brain"])
    assert released.shape == computed.shape == (N_CH, 8, 176 * 64)
    assert 1e-14 < np.median(computed) < 1e-9  # EEG power in V^2 (uV^2 would be ~1e12 larger)
    np.testing.assert_allclose(computed, released, rtol=1e-4, atol=1e-6 * float(np.median(released)))
    # triplets share structure: the word shares a burst with its synonym and one with its neighbour
    _, _, bursts = spectra.class_bursts(montage_channels()[1])
    word, synonym, neighbour = (CLASSES.index(w) for w in TRIPLETS[0])
    assert len(set(bursts[word]) & set(bursts[synonym])) == 1 == len(set(bursts[word]) & set(bursts[neighbour]))
    assert not set(bursts[CLASSES.index("google")]) & set().union(*(bursts[i] for i in range(88)
                                                                    if CLASSES[i] != "google"))


def test_triplet_confusion_counts_semantic_and_phonological_errors():
    from bm2.studies.lee2024 import triplet_confusion

    labels = ["barrier", "barrier", "wall", "war", "wall", "ship", "google"]
    preds = ["barrier", "wall", "barrier", "barrier", "war", "hey", "barrier"]
    table = triplet_confusion(labels, preds)
    row = table.loc["barrier/wall/war"]
    assert row.to_dict() == {"n": 5, "correct": 1, "semantic": 2, "phonological": 1, "same_triplet": 1, "outside": 0}
    assert table.loc["ship/boat/coat", "outside"] == 1
    assert table.loc["all", "n"] == 6  # the phrase word is left out


def test_superlet_phase_as_a_second_input(tmp_path, montage):
    """preprocess.superlet.phase: the brain is [C, 2F, T], power rows then the superlet's phase, per trial."""
    from bm2.superlet import superlet

    x, _ = _release(tmp_path, montage, n_trials=2, shape=(0, 128), raw=True)
    (rec,) = list(Lee2024(tmp_path).iter_recordings())
    settings = {"foi": [8.0, 16.0], "order": [1, 2]}
    plain = preprocess(rec, Cache(tmp_path / "cache"), PreprocessParams(
        sample_rate=256.0, picks=("eeg",), tf="superlet", superlet=settings))
    both = preprocess(rec, Cache(tmp_path / "cache"), PreprocessParams(
        sample_rate=256.0, picks=("eeg",), tf="superlet", superlet={**settings, "phase": True}))
    brain = np.asarray(both["brain"])
    assert brain.shape == (N_CH, 4, 2 * 128) and both.meta["phase"] is True and not plain.meta["phase"]
    np.testing.assert_array_equal(brain[:, :2], np.asarray(plain["brain"]))
    _, angle = superlet(x[1].astype(np.float64) * 1e-6, 256.0, [8.0, 16.0], 3.0, (1, 2), phase=True)
    np.testing.assert_allclose(brain[:, 2:, 128:], angle, atol=1e-5)
    assert np.abs(brain[:, 2:]).max() <= np.pi + 1e-6
