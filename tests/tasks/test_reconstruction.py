"""Reconstruction: per-bin Pearson r, the trial-shuffled null, STOI and the decoded audio files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import soundfile

from bm2.tasks import get_task
from bm2.tasks.reconstruction import derangement, shuffled_null, stoi_score

from .fakes import Echo, FakeDataset, segments


def _dataset(preds: np.ndarray, targets: np.ndarray, **kwargs) -> FakeDataset:
    n = len(preds)
    return FakeDataset(list(preds), segments(n, subject=["01", "02"] * (n // 2)), targets={"features": targets},
                       **kwargs)


def test_perfect_prediction_and_its_null(tmp_path):
    targets = np.random.default_rng(0).standard_normal((40, 3, 20)).astype(np.float32)
    task = get_task("reconstruction")
    result = task.evaluate(Echo(), _dataset(targets, targets), batch_size=16, n_null=50)
    m = result.metrics
    assert m["pcc"] == pytest.approx(1.0) and m["n_bins"] == 3 and m["n_windows"] == 40
    # windows of independent noise: another window's target does not correlate (sd of r ~ 1 / sqrt(800))
    assert abs(m["pcc_null_mean"]) < 0.03 and m["pcc_null_p95"] < 0.1 and m["chance_pcc"] == m["pcc_null_mean"]
    assert m["pcc_p_value"] == pytest.approx(1 / 51) and m["n_null"] == 50
    result.save(tmp_path, {"sig": "rec"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "reconstruction" and summary["groups"]["subject"]["02"]["pcc"] == pytest.approx(1.0)
    per_bin = pd.read_csv(tmp_path / "per_bin.csv")
    assert per_bin["pcc"].tolist() == pytest.approx([1.0] * 3) and (per_bin["null_p95"] < 0.2).all()
    items = pd.read_csv(tmp_path / "items.csv")
    assert items["pcc_window"].tolist() == pytest.approx([1.0] * 40) and not (tmp_path / "audio").exists()
    assert "| PCC (mean over 3 bins) | 1.000 |" in task.table(m)


def test_pcc_against_scipy_and_constant_bins():
    from scipy.stats import pearsonr

    rng = np.random.default_rng(1)
    targets = rng.standard_normal((6, 3, 5)).astype(np.float32)
    preds = (targets + rng.standard_normal(targets.shape)).astype(np.float32)
    targets[:, 2] = 1.0  # a constant bin has no correlation: NaN, left out of the mean
    task = get_task("reconstruction")
    m = task.evaluate(Echo(), _dataset(preds, targets), batch_size=4, n_null=5).metrics
    pooled = [pearsonr(preds[:, d].ravel(), targets[:, d].ravel())[0] for d in range(2)]  # over all 30 samples
    assert m["pcc"] == pytest.approx(np.mean(pooled), abs=1e-6)
    assert m["n_bins_constant"] == 1
    quick = task.evaluate(Echo(), _dataset(preds, targets), quick=True, batch_size=5)
    assert quick.metrics["pcc"] == pytest.approx(np.mean(pooled), abs=1e-6)


def test_null_pairs_every_window_with_another():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10):
        for _ in range(20):
            partner = derangement(n, rng)
            assert sorted(partner.tolist()) == list(range(n)) and (partner != np.arange(n)).all()
    x = np.random.default_rng(2).standard_normal((4, 2, 8))
    assert shuffled_null(x, x, n_null=7, seed=0).shape == (7, 2)
    assert np.array_equal(shuffled_null(x, x, 3, seed=5), shuffled_null(x, x, 3, seed=5))  # seeded


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise under a 4 Hz syllabic envelope, band-limited below ~3 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    noise = np.convolve(rng.standard_normal(len(t)), np.ones(4) / 4, mode="same")
    return (noise * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_stoi_of_known_waveforms_and_wav_files(tmp_path):
    rate = 16000
    clean = [_speech_like(1.0, rate, s) for s in range(2)]
    noisy = clean[1] + 2.0 * np.random.default_rng(9).standard_normal(len(clean[1])).astype(np.float32)
    decoded = [clean[0], noisy]  # window 0 decodes its reference exactly, window 1 with heavy noise
    feats = np.random.default_rng(3).standard_normal((2, 2, 6)).astype(np.float32)
    data = _dataset(feats, feats, audio={0: (clean[0], rate), 1: (clean[1], rate)}, extra={"wave": decoded})
    task = get_task("reconstruction")
    result = task.evaluate(Echo(inputs=("brain", "wave")), data, n_null=3, audio_sample_rate=rate)
    items = result.items.set_index("index")
    assert items.loc[0, "stoi"] == pytest.approx(1.0, abs=1e-3)
    assert items.loc[1, "stoi"] < 0.9
    assert result.metrics["stoi"] == pytest.approx(items["stoi"].mean()) and result.metrics["n_stoi"] == 2
    result.save(tmp_path)
    audio, sr = soundfile.read(tmp_path / "audio" / "0.wav", dtype="float32")
    assert sr == rate and np.array_equal(audio, clean[0])
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == ["0.true.wav", "0.wav", "1.true.wav", "1.wav"]
    true, sr = soundfile.read(tmp_path / "audio" / "1.true.wav", dtype="float32")  # the reference beside it
    assert sr == rate and np.array_equal(true, clean[1])
    assert f"| STOI (2 windows) | {result.metrics['stoi']:.3f} | – | – |" in task.table(result.metrics)
    with pytest.raises(ValueError, match="audio_sample_rate"):
        task.evaluate(Echo(inputs=("brain", "wave")), data)
    model = Echo(inputs=("brain", "wave"))
    model.audio_sample_rate = rate  # a model that knows its audio rate (model=nsd) needs no argument
    assert task.evaluate(model, data, n_null=3).metrics["stoi"] == pytest.approx(result.metrics["stoi"])


def test_stoi_resamples_and_rejects_too_short_audio():
    reference = _speech_like(1.0, 16000, 4)
    import julius
    import torch

    half = julius.resample_frac(torch.from_numpy(reference), 16000, 8000).numpy()
    assert stoi_score(half, 8000, reference, 16000) > 0.95  # STOI looks below 5 kHz: nothing is lost
    assert np.isnan(stoi_score(reference[:1600], 16000, reference[:1600], 16000))  # 0.1 s: fewer than 30 frames


def test_pcc_per_trial_its_null_and_the_example_spectrograms(tmp_path):
    from scipy.stats import pearsonr

    rng = np.random.default_rng(3)
    targets = rng.standard_normal((12, 4, 16)).astype(np.float32)
    preds = (targets + 0.5 * rng.standard_normal(targets.shape)).astype(np.float32)
    task = get_task("reconstruction")
    result = task.evaluate(Echo(), _dataset(preds, targets), batch_size=5, n_null=30)
    m = result.metrics
    # Neural Speech Decoding's per-trial PCC: the whole [D, T] spectrogram of a window against the true one
    expected = [pearsonr(p.ravel(), t.ravel())[0] for p, t in zip(preds, targets)]
    assert m["pcc_trial"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert abs(m["pcc_trial_null_mean"]) < 0.1 < m["pcc_trial"] and m["pcc_trial_p_value"] == pytest.approx(1 / 31)
    assert "| PCC per trial (whole spectrogram) |" in task.table(m)
    result.save(tmp_path, {"sig": "rec"})
    items = pd.read_csv(tmp_path / "items.csv")
    assert items["pcc_trial"].to_numpy() == pytest.approx(expected, abs=1e-6)
    with np.load(tmp_path / "examples.npz") as data:
        assert data["index"].tolist() == [0, 1, 2, 3]
        np.testing.assert_array_equal(data["pred"], preds[:4])
        np.testing.assert_array_equal(data["target"], targets[:4])
    assert (tmp_path / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
