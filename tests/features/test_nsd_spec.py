"""The Neural Speech Decoding release's spectrogram against a hand-computed STFT (numpy, explicit DFT)."""

import numpy as np
import pytest
import torch

from bm2.features import nsd_spec


def _hand_stft_power(wave: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Power of a centred, reflect-padded STFT with a periodic Hann window, by an explicit DFT sum."""
    length = 2 * n_fft - 1
    half = length // 2
    padded = np.pad(wave, half, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)  # periodic Hann
    n_frames = 1 + (len(wave) - 1) // hop  # centring pads (length - 1) / 2 = 255 samples a side
    k = np.arange(n_fft)[:, None]
    n = np.arange(length)[None, :]
    basis = np.exp(-2j * np.pi * k * n / length)
    out = np.empty((n_fft, n_frames))
    for t in range(n_frames):
        frame = padded[t * hop:t * hop + length] * window
        out[:, t] = np.abs(basis @ frame) ** 2
    return out


@pytest.mark.parametrize("n_samples, n_frames", [(1000, 8), (1280, 10)])  # 1280 = 10 ECoG frames of 128
def test_power_matches_hand_stft(n_samples, n_frames):
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(n_samples)
    power = nsd_spec.power_spectrogram(torch.from_numpy(wave), n_fft=256, hop=128).numpy()
    ref = _hand_stft_power(wave, 256, 128)
    assert power.shape == ref.shape == (256, n_frames)
    np.testing.assert_allclose(power, ref, rtol=1e-9, atol=1e-9)


def test_db_mapping_and_inverse():
    power = torch.tensor([1e-12, 1e-5, 1.0, 10 ** 2.25, 1e6], dtype=torch.float64)
    norm = nsd_spec.db_to_norm(nsd_spec.power_to_db(power))
    # floored at 1e-10 (-100 dB) then clamped at -50 dB -> -1; 22.5 dB -> 1; 0 dB -> 50 / 72.5 * 2 - 1
    np.testing.assert_allclose(norm.numpy(), [-1.0, -1.0, 50 / 72.5 * 2 - 1, 1.0, 1.0], atol=1e-12)
    mid = torch.linspace(-1, 1, 7, dtype=torch.float64)
    np.testing.assert_allclose(nsd_spec.db_to_norm(nsd_spec.norm_to_db(mid)).numpy(), mid.numpy(), atol=1e-12)


def test_sinusoid_peaks_in_its_bin_and_batch_shape():
    sr = nsd_spec.SAMPLE_RATE
    f = 1000.0
    t = np.arange(sr // 4) / sr
    wave = torch.from_numpy(np.stack([np.sin(2 * np.pi * f * t), 0.5 * np.sin(2 * np.pi * 2 * f * t)]))
    spec, power = nsd_spec.release_spectrogram(wave)
    assert spec.shape == power.shape == (2, 256, 1 + (len(t) - 1) // 128)
    freqs = nsd_spec.bin_frequencies()
    peaks = freqs[power[:, :, 5].argmax(dim=-1)]
    assert abs(float(peaks[0]) - f) < 16000 / 511 and abs(float(peaks[1]) - 2 * f) < 16000 / 511
    assert float(spec.min()) >= -1 and float(spec.max()) <= 1


def test_too_short_wave_is_refused():
    with pytest.raises(ValueError, match="too short"):
        nsd_spec.power_spectrogram(torch.zeros(100))
