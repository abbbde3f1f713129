"""Acoustic features: log-mel spectrum (from ``torch.stft`` and a mel filter bank; no torchaudio)."""

from __future__ import annotations

import typing as tp

import numpy as np
import torch

from .base import SoundFeature, load_audio  # noqa: F401  (load_audio re-exported for convenience)


class MelSpectrum(SoundFeature):
    """Log mel spectrum of the audio (the paper's baselines use 120 bands, n_fft 512)."""

    name = "mel"
    version = "1"

    def __init__(self, n_mels: int = 40, n_fft: int = 512, hop_ms: float = 10.0, fmin: float = 20.0,
                 fmax: float = 8000.0, sample_rate: int = 16000, log_eps: float = 1e-5) -> None:
        if n_mels < 1 or fmax <= fmin or fmax > sample_rate / 2:
            raise ValueError(f"invalid mel parameters n_mels={n_mels}, fmin={fmin}, fmax={fmax} "
                             f"(fmax must be <= sample_rate / 2 = {sample_rate / 2})")
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_ms = hop_ms
        self.fmin = fmin
        self.fmax = fmax
        self.sample_rate = sample_rate
        self.log_eps = log_eps
        self._bank: torch.Tensor | None = None

    @property
    def dimension(self) -> int:
        return self.n_mels

    def params(self) -> dict[str, tp.Any]:
        return {k: getattr(self, k) for k in ("n_mels", "n_fft", "hop_ms", "fmin", "fmax", "sample_rate",
                                                "log_eps")}

    def _filter_bank(self) -> torch.Tensor:
        if self._bank is None:
            from transformers.audio_utils import mel_filter_bank

            bank = mel_filter_bank(num_frequency_bins=self.n_fft // 2 + 1, num_mel_filters=self.n_mels,
                                   min_frequency=self.fmin, max_frequency=self.fmax,
                                   sampling_rate=self.sample_rate, norm="slaney", mel_scale="slaney")
            self._bank = torch.from_numpy(bank.astype(np.float32))
        return self._bank

    def compute_sound(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            wav = resample_poly(wav, self.sample_rate, sample_rate).astype(np.float32)
        hop = int(round(self.sample_rate * self.hop_ms / 1000))
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        if x.numel() < self.n_fft:
            x = torch.nn.functional.pad(x, (0, self.n_fft - x.numel()))
        spec = torch.stft(x, self.n_fft, hop_length=hop, window=torch.hann_window(self.n_fft),
                          center=True, return_complex=True).abs().pow(2)
        mel = self._filter_bank().T @ spec
        return torch.log(mel + self.log_eps).numpy(), self.sample_rate / hop


class Envelope(SoundFeature):
    """Broadband amplitude envelope of the audio (one channel) at ``rate`` Hz.

    ``method="hilbert"``: magnitude of the analytic signal; ``"rectify"``: absolute value. The envelope is then
    low-passed at ``lowpass_hz`` (4th-order Butterworth, zero phase) and sampled at ``rate``; ``log=True``
    returns ``log(envelope + log_eps)``.
    """

    name = "envelope"
    version = "1"

    def __init__(self, rate: float = 100.0, lowpass_hz: float = 25.0, method: str = "hilbert", log: bool = True,
                 log_eps: float = 1e-5, sample_rate: int = 16000) -> None:
        if method not in ("hilbert", "rectify"):
            raise ValueError(f"envelope method must be 'hilbert' or 'rectify', got {method!r}")
        if rate <= 0 or not 0 < lowpass_hz < rate / 2:
            raise ValueError(f"envelope needs 0 < lowpass_hz < rate / 2, got lowpass_hz={lowpass_hz}, rate={rate}")
        if lowpass_hz >= sample_rate / 2:
            raise ValueError(f"envelope lowpass_hz={lowpass_hz} must be below sample_rate / 2")
        self.rate = float(rate)
        self.lowpass_hz = float(lowpass_hz)
        self.method = method
        self.log = bool(log)
        self.log_eps = float(log_eps)
        self.sample_rate = int(sample_rate)

    @property
    def dimension(self) -> int:
        return 1

    def params(self) -> dict[str, tp.Any]:
        return {k: getattr(self, k) for k in ("rate", "lowpass_hz", "method", "log", "log_eps", "sample_rate")}

    def compute_sound(self, wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
        from math import gcd

        from scipy.fft import next_fast_len
        from scipy.signal import butter, hilbert, resample_poly, sosfiltfilt

        x = np.asarray(wav, dtype=np.float64)
        if sample_rate != self.sample_rate:
            g = gcd(int(sample_rate), self.sample_rate)
            x = resample_poly(x, self.sample_rate // g, int(sample_rate) // g)
        sr = self.sample_rate
        if self.method == "hilbert":
            env = np.abs(hilbert(x, N=next_fast_len(len(x)))[:len(x)])
        else:
            env = np.abs(x)
        sos = butter(4, self.lowpass_hz, btype="low", fs=sr, output="sos")
        if len(env) > 1:
            env = sosfiltfilt(sos, env, padlen=min(len(env) - 1, 3 * (2 * sos.shape[0] + 1)))
        env = np.maximum(env, 0.0)
        n_frames = int(np.floor((len(x) - 1) / sr * self.rate)) + 1
        value = np.interp(np.arange(n_frames) / self.rate, np.arange(len(x)) / sr, env)
        if self.log:
            value = np.log(value + self.log_eps)
        return value[None].astype(np.float32), self.rate
