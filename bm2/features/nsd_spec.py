"""The spectrogram of the Neural Speech Decoding release (Chen et al. 2024), shared by its study and synthesizer.

Definition (the release's ``wave2spec`` with ``n_fft=256``, ANCHORS_WAVE2 §3):

- STFT with FFT length and window length ``2 * n_fft - 1`` (511), a periodic Hann window, hop ``16000 / 125 = 128``
  samples at 16 kHz (one frame per 8 ms ECoG frame at 125 Hz), centred frames with reflect padding, power 2:
  ``n_fft`` (256) linear bins from 0 Hz to just under 8 kHz (bin ``k`` at ``k * 16000 / 511`` Hz);
- ``10 * log10(power)`` (power floored at 1e-10, as an amplitude-to-dB conversion does), clamped to
  [``NOISE_DB``, ``MAX_DB``] = [-50, 22.5] dB, then mapped linearly to [-1, 1] (``-50 dB -> -1``, ``22.5 dB -> 1``).

The release stores the mapped spectrogram as ``wave_re_spec_alldataset`` ``(T, 256)`` and the power spectrogram as
``wave_re_spec_amp_alldataset``; bm2 keeps bins first, ``[..., n_fft, T]``, like every feature timeline.
"""

from __future__ import annotations

import torch

SAMPLE_RATE = 16000
FRAME_RATE = 125
HOP = SAMPLE_RATE // FRAME_RATE  # 128 samples: one spectrogram frame per ECoG frame
N_FFT = 256
NOISE_DB = -50.0
MAX_DB = 22.5
POWER_FLOOR = 1e-10


def stft_length(n_fft: int = N_FFT) -> int:
    """The FFT (and window) length of the release's STFT for ``n_fft`` output bins: ``2 * n_fft - 1``."""
    return 2 * n_fft - 1


def bin_frequencies(n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Centre frequency (Hz) of each of the ``n_fft`` bins, float32 ``[n_fft]``."""
    return torch.arange(n_fft, dtype=torch.float32) * sample_rate / stft_length(n_fft)


def release_stft(wave: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP,
                 window: torch.Tensor | None = None) -> torch.Tensor:
    """The release's complex STFT of ``wave`` ``[..., S]`` (16 kHz samples) -> ``[..., n_fft, 1 + (S - 1) // hop]``:
    ``2 n_fft - 1`` points, periodic Hann window (or ``window``, of that length), centred with reflect padding.

    Raises ``ValueError`` when the wave is shorter than half a window (reflect padding needs ``S > n_fft - 1``).
    """
    length = stft_length(n_fft)
    if wave.shape[-1] <= length // 2:
        raise ValueError(f"a wave of {wave.shape[-1]} samples is too short for the {length}-sample STFT "
                         f"(needs more than {length // 2})")
    lead = wave.shape[:-1]
    flat = wave.reshape(-1, wave.shape[-1])
    if window is None:
        window = torch.hann_window(length, periodic=True, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(flat, n_fft=length, hop_length=hop, win_length=length, window=window.to(flat.dtype),
                      center=True, pad_mode="reflect", return_complex=True)
    return spec.reshape(*lead, *spec.shape[-2:])


def power_spectrogram(wave: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """Power spectrogram (:func:`release_stft` squared magnitude) of ``wave`` ``[..., S]`` -> ``[..., n_fft,
    1 + (S - 1) // hop]`` (float32 for float32 input). Raises ``ValueError`` as :func:`release_stft`."""
    spec = release_stft(wave, n_fft, hop)
    return spec.real.square() + spec.imag.square()


def power_to_db(power: torch.Tensor) -> torch.Tensor:
    """``10 * log10(max(power, 1e-10))`` in dB (any shape)."""
    return 10.0 * torch.log10(power.clamp_min(POWER_FLOOR))


def db_to_norm(db: torch.Tensor, noise_db: float = NOISE_DB, max_db: float = MAX_DB) -> torch.Tensor:
    """dB clamped to ``[noise_db, max_db]`` and mapped linearly to [-1, 1]."""
    return (db.clamp(noise_db, max_db) - noise_db) / (max_db - noise_db) * 2.0 - 1.0


def norm_to_db(norm: torch.Tensor, noise_db: float = NOISE_DB, max_db: float = MAX_DB) -> torch.Tensor:
    """The inverse of :func:`db_to_norm` on [-1, 1] (dB)."""
    return (norm + 1.0) / 2.0 * (max_db - noise_db) + noise_db


def norm_to_power(norm: torch.Tensor, noise_db: float = NOISE_DB, max_db: float = MAX_DB) -> torch.Tensor:
    """Power from the [-1, 1] spectrogram (values at the clamps come back as the clamp's power)."""
    return torch.pow(10.0, norm_to_db(norm, noise_db, max_db) / 10.0)


def release_spectrogram(wave: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spec, power)``: the release's [-1, 1] spectrogram and its power spectrogram, both ``[..., n_fft, T]``
    with ``T = 1 + (S - 1) // hop`` for a 16 kHz ``wave`` ``[..., S]`` (see the module docstring)."""
    power = power_spectrogram(wave, n_fft, hop)
    return db_to_norm(power_to_db(power)), power
