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
