"""Du-IN's continuous pre-training data (``{subject}/pretrain/dataset.default.1000hz``: an ``info`` pickle and
``(2, C, T)`` ``.npy`` files) read as one continuous recording per subject with the channels of its epochs."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

from bm2.studies import StudyError
from bm2.studies.duin2024 import Duin2024
from bm2.studies.synthetic_seeg import SyntheticSeegStudy

from .fixtures_duin import DATASET, make_epochs, release_classes, write_release

EPOCH_CHANNELS = ["SM1", "SM2", "P1"]


def _write_pretrain(root, subject, ch_names, arrays):
    folder = root / DATASET / subject / "pretrain" / "dataset.default.1000hz"
    folder.mkdir(parents=True)
    with release_classes() as DotDict:
        (folder / "info").write_bytes(pickle.dumps(DotDict(ch_names=list(ch_names)), protocol=4))
    for k, array in enumerate(arrays):
        np.save(folder / f"{k}.npy", array)
    return folder


def _release(tmp_path):
    write_release(tmp_path, {s: {"run1": (EPOCH_CHANNELS, ["a", "b"], make_epochs(2, 3, seed=int(s)))}
                             for s in ("001", "002")})


def test_pretrain_folder_is_one_recording_with_the_epoch_channels_in_order(tmp_path):
    _release(tmp_path)
    rng = np.random.default_rng(0)
    pretrain_channels = ["P1", "X9", "SM2", "SM1"]  # another order and an extra contact
    arrays = [rng.standard_normal((2, 4, n)).astype(np.float32) for n in (12_000, 7_000)]
    _write_pretrain(tmp_path, "001", pretrain_channels, arrays)
    study = Duin2024(tmp_path, unit_scale=1e-6)
    recs = list(study.iter_continuous())
    assert [r.subject for r in recs] == ["001"]  # 002 has no pretrain folder
    rec = recs[0]
    raw = rec.raw()
    assert raw.ch_names == EPOCH_CHANNELS and raw.info["sfreq"] == 1000.0 and raw.n_times == 19_000
    order = [pretrain_channels.index(c) for c in EPOCH_CHANNELS]
    want = np.concatenate([a[0][order] for a in arrays], axis=1) * 1e-6  # X_s only, not X_n
    np.testing.assert_allclose(raw.get_data(), want, rtol=1e-6)
    blocks = rec.events()
    assert blocks.kind.eq("block").all() and blocks.uid.tolist() == ["0.npy/0", "1.npy/0"]  # 0.npy's last 2 s: no block
    # the same subject and positions as the epochs, so the subject layer carries over
    epochs = next(iter(study.iter_recordings()))
    assert (epochs.study, epochs.subject) == (rec.study, rec.subject)
    np.testing.assert_array_equal(epochs.sensor_positions(EPOCH_CHANNELS), rec.sensor_positions(EPOCH_CHANNELS))
    assert rec.uid != epochs.uid


def test_missing_channel_skips_the_subject_with_a_warning(tmp_path, caplog):
    _release(tmp_path)
    folder = _write_pretrain(tmp_path, "001", ["SM1", "P1"], [np.zeros((2, 2, 5000), np.float32)])
    with caplog.at_level(logging.WARNING):
        assert list(Duin2024(tmp_path).iter_continuous()) == []
    assert "['SM2']" in caplog.text and str(folder / "info") in caplog.text


@pytest.mark.parametrize("bad", ["shape", "pickle"])
def test_malformed_npy_names_the_file(tmp_path, bad):
    _release(tmp_path)
    folder = _write_pretrain(tmp_path, "001", EPOCH_CHANNELS, [np.zeros((2, 3, 100), np.float32)])
    path = folder / "1.npy"
    if bad == "shape":
        np.save(path, np.zeros((3, 100)))
    else:
        np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)  # never unpickled
    with pytest.raises(StudyError, match=str(path).replace(".", r"\.")):
        list(Duin2024(tmp_path).iter_continuous())


def test_synthetic_study_writes_continuous_data_read_by_the_same_loader(tmp_path):
    study = SyntheticSeegStudy(tmp_path, n_subjects=2, n_runs=1, n_words=4, repeats=2, n_channels=5, n_responsive=2,
                               continuous_seconds=130.0)
    study.prepare()
    recs = list(study.iter_continuous())
    assert [r.subject for r in recs] == ["001", "002"]
    files = sorted((study.data_root / "001" / "pretrain" / "dataset.default.1000hz").glob("*.npy"))
    assert [f.name for f in files] == ["0.npy", "1.npy"]  # 100 s + 30 s
    assert np.load(files[0]).shape == (2, 5, 100_000)
    raw = recs[0].raw()
    assert raw.n_times == 130_000 and raw.ch_names == list(next(iter(study.iter_recordings())).raw().ch_names)
    # its own draws: not a copy of the epochs
    assert not np.allclose(raw.get_data()[:, :3000], next(iter(study.iter_recordings())).raw().get_data()[:, :3000])
    none = SyntheticSeegStudy(tmp_path, n_subjects=1, n_runs=1, n_words=2, repeats=2, n_channels=3, n_responsive=1,
                              continuous_seconds=0)
    none.prepare()
    assert list(none.iter_continuous()) == []
