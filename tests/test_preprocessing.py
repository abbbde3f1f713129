import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, RecordingDataError, RobustScaler, preprocess, resampled_length


def test_resample_and_cache(array_recording, tmp_path):
    rec = array_recording(sfreq=200.0, seconds=10.0)
    cache = Cache(tmp_path)
    params = PreprocessParams(sample_rate=120.0)
    entry = preprocess(rec, cache, params)
    brain = entry["brain"]
    assert brain.shape == (12, 1200) and brain.dtype == np.float32
    assert entry.meta["sample_rate"] == 120.0 and len(entry.meta["ch_names"]) == 12
    assert entry["positions"].shape == (12, 2)
    # same result as a direct polyphase resampling of the demeaned data
    data = rec.raw().get_data()
    expected = signal.resample_poly(data - data.mean(1, keepdims=True), 3, 5, axis=1)
    np.testing.assert_allclose(brain, expected.astype(np.float32), rtol=1e-4, atol=1e-18)
    # cached: the second call does not touch the raw
    rec._raw = None
    rec._load_raw = lambda: (_ for _ in ()).throw(AssertionError("raw reloaded"))
    again = preprocess(rec, cache, params)
    np.testing.assert_array_equal(again["brain"], brain)


def test_chunking_does_not_change_results_and_filters_apply(array_recording, tmp_path):
    rec = array_recording(sfreq=200.0, seconds=10.0)
    a = preprocess(rec, Cache(tmp_path / "a"), PreprocessParams(highpass=1.0, notch=(50.0,), chunk_channels=5))
    b = preprocess(rec, Cache(tmp_path / "b"), PreprocessParams(highpass=1.0, notch=(50.0,), chunk_channels=64))
    np.testing.assert_array_equal(a["brain"], b["brain"])
    assert PreprocessParams(chunk_channels=5).key() == PreprocessParams(chunk_channels=64).key()
    raw = preprocess(rec, Cache(tmp_path / "c"), PreprocessParams())
    assert np.abs(a["brain"] - raw["brain"]).max() > 0.1 * np.abs(raw["brain"]).max()


def test_nan_in_recording_is_a_clear_error(array_recording, tmp_path):
    data = np.random.default_rng(0).standard_normal((12, 2000)) * 1e-12
    data[3, 100:110] = np.nan
    rec = array_recording(data=data)
    with pytest.raises(RecordingDataError, match=r"NaN.*MEG.*bads"):
        preprocess(rec, Cache(tmp_path), PreprocessParams())
    assert not list((tmp_path / "preprocess").glob("*/manifest.json"))  # nothing half-written


def test_no_channel_of_requested_type(array_recording, tmp_path):
    with pytest.raises(RecordingDataError, match="preprocess.picks"):
        preprocess(array_recording(), Cache(tmp_path), PreprocessParams(picks=("seeg",)))


def test_robust_scaler_clamps_and_ignores_outliers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5000)).astype(np.float32)
    x[:, ::100] = 1e6  # artefacts
    scaler = RobustScaler.fit(x, max_scale=20)
    y = scaler(x.copy())
    assert np.abs(y).max() == 20
    assert np.allclose(scaler.scale, 1.35, atol=0.1)  # IQR of a standard normal, unaffected by outliers
    flat = RobustScaler.fit(np.ones((2, 10), dtype=np.float32))
    assert np.isfinite(flat(np.ones((2, 10), dtype=np.float32))).all()


def test_resampled_length():
    assert resampled_length(1000, 1000.0, 120.0) == (3, 25, 120)


def test_superlet_step_caches_c_f_t_equal_to_the_transform(array_recording, tmp_path):
    from bm2.superlet import superlet

    rec = array_recording(sfreq=200.0, seconds=4.0)
    settings = {"foi": {"fmin": 4, "fmax": 40, "n": 10}, "c1": 3, "order": [1, 5]}
    params = PreprocessParams(sample_rate=100.0, tf="superlet", superlet=settings)
    plain = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=100.0))
    entry = preprocess(rec, Cache(tmp_path), params)
    brain = entry["brain"]
    assert brain.shape == (12, 10, 400) and brain.dtype == np.float32
    assert entry.meta["tf"] == "superlet" and entry.meta["foi"] == list(np.linspace(4, 40, 10))
    expected = superlet(np.asarray(plain["brain"], dtype=np.float64), 100.0, np.linspace(4, 40, 10), 3, (1, 5))
    np.testing.assert_allclose(brain, expected, rtol=1e-5, atol=1e-6 * expected.max())
    # the TF settings enter the cache key; the default (tf=None) keeps today's key
    assert params.key() != PreprocessParams(sample_rate=100.0).key()
    assert "tf" not in PreprocessParams(sample_rate=100.0, superlet=settings).key()
    other = PreprocessParams(sample_rate=100.0, tf="superlet", superlet={**settings, "c1": 4})
    assert other.key() != params.key()
    # chunking over channels does not change the result
    chunked = preprocess(rec, Cache(tmp_path / "b"), dataclasses.replace(params, chunk_channels=5))
    np.testing.assert_array_equal(chunked["brain"], brain)
    with pytest.raises(ValueError, match="Nyquist"):
        preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=50.0, tf="superlet", superlet=settings))
    with pytest.raises(ValueError, match="preprocess.tf"):
        PreprocessParams(tf="stft")
    with pytest.raises(ValueError, match="foi"):
        PreprocessParams(tf="superlet", superlet={"c1": 3})
    # the config's spelling (fmin / fmax / n_freqs, foi null) gives the same key as foi {fmin, fmax, n}
    flat = {"foi": None, "fmin": 4, "fmax": 40, "n_freqs": 10, "c1": 3, "order": [1, 5]}
    assert PreprocessParams(sample_rate=100.0, tf="superlet", superlet=flat).key() == params.key()


def test_superlet_config_overrides(tmp_path):
    from omegaconf import OmegaConf

    from bm2.builders import _section

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "config.yaml")
    pre = _section(cfg, "preprocess")
    assert pre["tf"] is None and "tf" not in PreprocessParams(**{**pre, "picks": tuple(pre["picks"]),
                                                                   "notch": tuple(pre["notch"])}).key()
    for over in (["preprocess.tf=superlet"], ["preprocess.tf=superlet", "preprocess.superlet.foi=[4,8,16]"]):
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(over))
        pre = _section(merged, "preprocess")
        params = PreprocessParams(**{**pre, "picks": tuple(pre["picks"]), "notch": tuple(pre["notch"])})
        foi = params.superlet_settings()["foi"]
        assert foi == ([4.0, 8.0, 16.0] if len(over) == 2 else list(np.linspace(2, 50, 49)))


def test_superlet_brain_goes_through_the_datasets(array_recording, tmp_path):
    import pandas as pd

    from bm2.data import NormParams, SplitParams, WindowParams, build_datasets, collate
    from bm2.features import FeatureStack, WordOnset

    rows = []
    for b in range(12):
        t = 1.0 + 4.0 * b
        rows.append(dict(kind="block", onset=t - 0.5, duration=4.0, uid=f"sentence {b}"))
        rows.append(dict(kind="sound", onset=t, duration=2.0, filepath=f"s{b}.wav", offset=0.0))
        for w in range(3):
            rows.append(dict(kind="word", onset=t + 0.6 * w, duration=0.4, text=("cat", "dog", "cow")[(b + w) % 3],
                             sentence_id=f"s{b}", word_index=w))
    rec = array_recording(seconds=50.0, sfreq=100.0, events=pd.DataFrame(rows))
    params = PreprocessParams(sample_rate=50.0, tf="superlet",
                              superlet={"foi": [5.0, 10.0, 20.0], "c1": 3, "order": [1, 3], "log": True})
    ds = build_datasets([rec], Cache(tmp_path), params, FeatureStack([WordOnset()]),
                        WindowParams(tmin=-0.2, tmax=0.8, anchor="word"), SplitParams(0.25, 0.25, seed=1),
                        NormParams(), targets=("label",))
    batch = collate(ds.train.__getitems__([0, 1]))
    assert batch["brain"].shape == (2, 12, 3, 50)
    assert np.isfinite(batch["brain"].numpy()).all()
