"""norm.pooled: per-channel statistics pooled exactly over whole training recordings (LibriBrain's standardisation,
fitted on training runs only)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
from bm2.data.build import pooled_statistics
from bm2.features import FeatureStack, WordOnset
from bm2.preprocessing import PreprocessParams
from bm2.studies.libribrain2025 import selectors
from bm2.studies.libribrain_synthetic import LibriBrainSynthetic


def test_pooled_statistics_are_exact():
    rng = np.random.default_rng(0)
    runs = [rng.standard_normal((3, n)) * s + m for n, s, m in ((100, 1.0, 0.0), (250, 3.0, 5.0), (7, 0.5, -2.0))]
    n, mean, std = pooled_statistics(runs, chunk=16)
    joined = np.concatenate(runs, axis=1)
    assert n == 357
    np.testing.assert_allclose(mean, joined.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, joined.std(axis=1), rtol=1e-12)


PHONEME_WINDOW = WindowParams(tmin=0.0, tmax=0.5, anchor="phoneme", offset_ms=0)


def _build(study, cache):
    return build_datasets(list(study.iter_recordings()), Cache(cache),
                          PreprocessParams(sample_rate=250.0, picks=("meg",)), FeatureStack([WordOnset()]),
                          PHONEME_WINDOW, SplitParams(strategy="named", **selectors()),
                          NormParams(baseline=False, pooled=True, max_scale=10.0), targets=("label",))


def test_statistics_come_from_training_runs_only(tmp_path):
    study = LibriBrainSynthetic(tmp_path / "data", n_train_runs=2, run_seconds=20.0)
    study.prepare()
    before = _build(study, tmp_path / "c1")
    center, scale = before.recordings[0].scaler.center.copy(), before.recordings[0].scaler.scale.copy()
    assert all(np.array_equal(r.scaler.center, center) for r in before.recordings)  # one scaler for every run
    test_h5 = [r for r in study.iter_recordings() if r.session == "12"][0].h5
    with h5py.File(test_h5, "r+") as f:  # change the test run's values
        f["data"][...] = f["data"][...] * 7 + 3e-12
    after = _build(LibriBrainSynthetic(tmp_path / "data", n_train_runs=2, run_seconds=20.0), tmp_path / "c2")
    np.testing.assert_array_equal(after.recordings[0].scaler.center, center)
    np.testing.assert_array_equal(after.recordings[0].scaler.scale, scale)
    assert not np.allclose(after.test[0]["brain"], before.test[0]["brain"])
    assert np.abs(after.test[0]["brain"]).max() <= 10.0  # clipped at ±10
    np.testing.assert_array_equal(after.train[0]["brain"], before.train[0]["brain"])


def test_pooled_needs_whole_training_recordings(tmp_path):
    study = LibriBrainSynthetic(tmp_path / "data", n_train_runs=1, run_seconds=20.0)
    study.prepare()
    with pytest.raises(ValueError, match="recording-level split"):
        build_datasets(list(study.iter_recordings()), Cache(tmp_path / "c"), PreprocessParams(sample_rate=250.0),
                       FeatureStack([WordOnset()]), WindowParams(tmin=0.0, tmax=0.5, anchor="phoneme"),
                       SplitParams(strategy="stratified", test=0.2, valid=0.2),
                       NormParams(baseline=False, pooled=True), targets=("label",))
