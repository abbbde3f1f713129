"""Pieces shared by the ECoG decoders of :mod:`bm2.models.ecog_decoders`: the electrode grid, input checks,
time-causal padding and normalisation, and causal transposed-convolution upsampling.

Causality here means, for a decoder fed ECoG ``[B, E, T + lead]`` and returning features ``[B, D, T]``: output
frame ``j`` (speech frame ``j``, which lies at ECoG frame ``j + lead``) depends on ECoG frames ``<= j + lead``
only. Three things can break it besides a centred convolution kernel, and each has its piece here:

- **normalisation over time**: GroupNorm's statistics span every frame, so a future frame moves every past
  output; causal decoders normalise each frame on its own (:class:`FrameGroupNorm`);
- **strided pooling followed by upsampling**: a frame pooled at stride ``s`` summarises ``s`` input frames, the
  last of which lies ``s - 1`` frames after the first output frame it is upsampled to; causal decoders delay the
  coarse sequence by one coarse step (using the ECoG lead for it), see the decoders;
- **transposed convolutions**: a kernel wider than the stride spreads coarse frame ``t`` over output frames before
  ``s * t`` when padded symmetrically; :class:`Upsample1d` with ``causal=True`` crops the extra frames on the
  right, so output frame ``i`` depends on coarse frames ``<= i // s`` only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

LEAD = 16  # ECoG frames before the first speech frame (128 ms at 125 Hz; ANCHORS_WAVE2 §3, dataset.py)


def check_ecog(ecog: torch.Tensor, n_electrodes: int, lead: int, name: str) -> None:
    """Raise ``ValueError`` unless ``ecog`` is ``[B, n_electrodes, T + lead]`` with ``T >= 1``."""
    if ecog.dim() != 3:
        raise ValueError(f"{name}: ECoG must be [batch, electrodes, frames], got shape {tuple(ecog.shape)}")
    if ecog.shape[1] != n_electrodes:
        raise ValueError(f"{name}: got {ecog.shape[1]} electrodes, the decoder was built for {n_electrodes}; "
                         f"build it with n_electrodes={ecog.shape[1]}")
    if ecog.shape[2] <= lead:
        raise ValueError(f"{name}: got {ecog.shape[2]} ECoG frames, but the first {lead} are the lead before the "
                         f"speech frames: give at least {lead + 1} (T + lead)")


def check_grid(n_electrodes: int, grid: tuple[int, int], name: str) -> tuple[int, int]:
    """Validate ``grid`` (rows, columns) for ``n_electrodes``; returns it as a tuple of two ints."""
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"{name}: grid must be (rows, columns) >= 1, got {grid}")
    rows, cols = int(grid[0]), int(grid[1])
    if not 1 <= n_electrodes <= rows * cols:
        raise ValueError(f"{name}: {n_electrodes} electrodes do not fit a {rows} x {cols} grid; set grid= to a "
                         f"grid with at least {n_electrodes} cells")
    return rows, cols


def to_grid(ecog: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, E, T]`` -> ``[B, 1, T, rows, cols]``: electrode ``i`` at row ``i // cols``, column ``i % cols``
    (row-major), cells without an electrode (``i >= E``) zero."""
    b, e, t = ecog.shape
    rows, cols = grid
    if e < rows * cols:
        ecog = F.pad(ecog, (0, 0, 0, rows * cols - e))
    return ecog.transpose(1, 2).reshape(b, 1, t, rows, cols)


def time_padding(kernel: int, causal: bool) -> tuple[int, int]:
    """(left, right) zero padding that keeps the length of a stride-1 convolution of ``kernel`` frames:
    ``kernel - 1`` on the left when causal (output t sees inputs <= t), centred otherwise (odd kernels)."""
    if causal:
        return kernel - 1, 0
    if kernel % 2 == 0:
        raise ValueError(f"a centred (non-causal) convolution needs an odd kernel, got {kernel}")
    return (kernel - 1) // 2, (kernel - 1) // 2


class FrameGroupNorm(nn.Module):
    """GroupNorm of ``[B, C, T, *space]`` whose statistics cover one frame (and its space) only.

    GroupNorm over ``[B, C, T]`` pools its mean and variance over all T frames, which lets future frames change past
    outputs; this normalises each frame alone, so it keeps causality. Same parameters as ``nn.GroupNorm``.
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape[:3]
        space = x.shape[3:]
        frames = x.movedim(2, 1).reshape(b * t, c, *space)  # each frame its own sample
        return self.norm(frames).reshape(b, t, c, *space).movedim(1, 2)


def group_norm(channels: int, causal: bool, has_space: bool, groups: int = 32) -> nn.Module:
    """GroupNorm with ``gcd(groups, channels)`` groups; per frame when ``causal``.

    A per-frame group must hold more than one value: with space (3-D blocks) a group of channels x grid cells
    does; without space (1-D blocks) one channel per group would be normalised to a constant, so the per-frame
    1-D norm uses one group (a LayerNorm over the channels of the frame).
    """
    n_groups = math.gcd(groups, channels)
    if not causal:
        return nn.GroupNorm(n_groups, channels)
    return FrameGroupNorm(n_groups if has_space else 1, channels)


class Upsample1d(nn.Module):
    """x2 in time: ``ConvTranspose1d(k=4, stride 2)`` -> GroupNorm -> LeakyReLU(0.2), ``[B, Cin, T] -> [B, Cout, 2T]``.

    Non-causal: padding 1 on both sides (output frame i mixes coarse frames (i - 2) // 2 to (i + 1) // 2).
    Causal: no padding, and the last 2 of the ``2T + 2`` frames are cropped, so output frame ``i`` depends on coarse
    frames ``i // 2 - 1`` and ``i // 2`` only, never a later one.
    """

    def __init__(self, in_channels: int, out_channels: int, causal: bool = False, groups: int = 32) -> None:
        super().__init__()
        self.causal = causal
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, 4, stride=2, padding=0 if causal else 1)
        self.norm = group_norm(out_channels, causal, has_space=False, groups=groups)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        y = self.conv(x)[..., :2 * t]
        return self.act(self.norm(y))


class Conv1dBlock(nn.Module):
    """``Conv1d(k)`` (causal or centred padding) -> GroupNorm -> LeakyReLU(0.2), ``[B, Cin, T] -> [B, Cout, T]``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, causal: bool = False,
                 groups: int = 32) -> None:
        super().__init__()
        self.padding = time_padding(kernel, causal)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel)
        self.norm = group_norm(out_channels, causal, has_space=False, groups=groups)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(F.pad(x, self.padding))))
