"""ECoG decoders of Neural Speech Decoding (Chen et al., Nat. Mach. Intell. 2024): ECoG -> per-frame features that
the shared parameter head (:mod:`bm2.models.nsd`) turns into speech-synthesizer parameters.

Rebuilt from the written description only (``ANCHORS.md`` §2, ``ANCHORS_WAVE2.md`` §3 "ECoG decoders"); the
original (flinkerlab/neural_speech_decoding) is GPL-3.0 and none of its code is used. Three decoders, each with a
**causal** variant:

- ``resnet`` (:class:`ECoGResNet3d`): a 3-D ResNet over (time, 8 x 8 grid);
- ``lstm`` (:class:`ECoGLSTM`): 3 x 128 LSTM, bidirectional unless causal;
- ``swin`` (:class:`bm2.models.ecog_swin.ECoGSwin3d`): a video-Swin-style transformer over (time, grid).

The common interface (:func:`build_ecog_decoder`): ``forward(ecog [B, E, T + lead]) -> features [B, D, T]`` at
the ECoG frame rate (125 Hz), with ``lead = 16``: the ECoG window starts 16 frames (128 ms) before the first
speech frame, as the release's data loader cuts it, so speech frame ``j`` lies at ECoG frame ``j + 16``. A decoder
built with ``causal=True`` gives output frame ``j`` from ECoG frames ``<= j + 16`` only (tested exactly, in eval
mode, in ``tests/models/test_ecog_decoders.py``); see :mod:`bm2.models.ecog_common` for what that takes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .ecog_common import LEAD, Conv1dBlock, Upsample1d, check_ecog, check_grid, group_norm, time_padding, to_grid
from .ecog_swin import ECoGSwin3d

__all__ = ["DECODERS", "ECoGLSTM", "ECoGResNet3d", "ECoGSwin3d", "build_ecog_decoder"]


class _ResBlock3d(nn.Module):
    """Residual block over ``[B, C, T, H, W]``: two Conv3d(kernel) with GroupNorm, LeakyReLU(0.2), a 1x1x1
    projection on the skip when the width changes, then max-pooling by ``pool`` (kernel = stride, so a pooled frame
    covers the ``pool[0]`` frames it summarises and no later one) and dropout.

    Time padding is causal (``kt - 1`` frames on the left) or centred; space padding is centred (zeros outside
    the grid). The block layout (two convolutions, norm, skip) is ours: the description gives widths, kernels and
    pooling only.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                 pool: tuple[int, int, int], causal: bool, dropout: float) -> None:
        super().__init__()
        kt, kh, kw = kernel
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"spatial kernels must be odd (centred), got {kernel}")
        self.time_pad = time_padding(kt, causal)
        space = (0, kh // 2, kw // 2)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel, padding=space)
        self.norm1 = group_norm(out_channels, causal, has_space=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, kernel, padding=space)
        self.norm2 = group_norm(out_channels, causal, has_space=True)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.pool = nn.MaxPool3d(pool) if max(pool) > 1 else nn.Identity()
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(dropout)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, 0, 0, 0, *self.time_pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(self._pad(x))))
        h = self.norm2(self.conv2(self._pad(h)))
        return self.drop(self.pool(self.act(h + self.skip(x))))


class ECoGResNet3d(nn.Module):
    """3-D ResNet ECoG decoder over (time, grid): ``[B, E, T + 16] -> [B, out_channels, T]`` at 125 Hz.

    Layout (``ECoGMapping_ResNet`` as described in ``ANCHORS_WAVE2.md`` §3; widths for ``width=16``, the paper's):

    1. the E electrodes laid on the grid row-major, zero where no electrode: ``[B, 1, T + 16, 8, 8]``;
    2. ``Conv3d(1 -> 16, [9, 1, 1])``;
    3. residual block 16 -> 32, kernels ``[5, 1, 1]``, time max-pool x2; block 32 -> 64, ``[3, 1, 1]``, time x2
       (frames at stride 4);
    4. **the lead**: the description drops the first 4 steps at stride 4, i.e. the 16-frame lead (non-causal);
    5. blocks 64 -> 128 and 128 -> 256, kernels ``[3, 3, 3]``, pooling ``[2, 2, 2]`` over time and space (stride 16,
       2 x 2 cells left), then the max over the remaining space;
    6. ``Conv1d(256 -> 256, k3)`` with GroupNorm and LeakyReLU(0.2);
    7. four transposed-convolution x2 upsampling blocks 256 -> 128 -> 64 -> 32 -> 32 (stride 16 back to 1) with
       GroupNorm(32) and LeakyReLU(0.2) (:class:`~bm2.models.ecog_common.Upsample1d`); a 1x1 convolution to
       ``out_channels`` when it is not the last width (32);
    8. dropout 0.2 after each encoder block. The shared parameter head is not part of the decoder.

    Any ``T >= 1`` works: the non-causal input is zero-padded at the end to a multiple of 16 frames and the output
    cropped back to T.

    ``causal=True``: every temporal convolution is padded on the left only, norms are per frame
    (:class:`~bm2.models.ecog_common.FrameGroupNorm`), the transposed convolutions are cropped causally, and the
    lead becomes the delay that stride-16 pooling needs: instead of dropping the 16 lead frames the decoder drops
    the **last** 16, so coarse step t summarises ECoG frames ``<= 16 t + 15`` and is upsampled to speech frames
    ``16 t .. 16 t + 15`` (ECoG frames ``16 t + 16 ..``). Output frame j therefore sees ECoG up to 1-16 frames
    (8-128 ms) before its own time; the non-causal decoder uses the whole window.

    Size at the paper's defaults (64 electrodes, out_channels 32): 3 765 184 parameters.
    """

    def __init__(self, n_electrodes: int = 64, out_channels: int = 32, causal: bool = False,
                 grid: tuple[int, int] = (8, 8), width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        self.grid = check_grid(n_electrodes, tuple(grid), "ECoGResNet3d")  # type: ignore[arg-type]
        self.n_electrodes = n_electrodes
        self.causal = causal
        self.lead = LEAD
        self.stride = 16  # time pooling of the 4 blocks; the lead is 4 steps of the stride-4 sequence
        c = [width, 2 * width, 4 * width, 8 * width, 16 * width]
        self.stem_pad = time_padding(9, causal)
        self.stem = nn.Conv3d(1, c[0], (9, 1, 1))
        self.time_blocks = nn.Sequential(_ResBlock3d(c[0], c[1], (5, 1, 1), (2, 1, 1), causal, dropout),
                                         _ResBlock3d(c[1], c[2], (3, 1, 1), (2, 1, 1), causal, dropout))
        self.space_blocks = nn.Sequential(_ResBlock3d(c[2], c[3], (3, 3, 3), (2, 2, 2), causal, dropout),
                                          _ResBlock3d(c[3], c[4], (3, 3, 3), (2, 2, 2), causal, dropout))
        self.temporal = Conv1dBlock(c[4], c[4], 3, causal)
        up = [c[4], 8 * width, 4 * width, 2 * width, 2 * width]
        self.upsample = nn.Sequential(*(Upsample1d(a, b, causal) for a, b in zip(up[:-1], up[1:])))
        self.out = nn.Conv1d(up[-1], out_channels, 1) if out_channels != up[-1] else nn.Identity()

    def forward(self, ecog: torch.Tensor) -> torch.Tensor:
        check_ecog(ecog, self.n_electrodes, self.lead, type(self).__name__)
        t_out = ecog.shape[-1] - self.lead
        n_coarse = -(-t_out // self.stride)  # ceil
        if self.causal:
            # the first n_coarse * 16 frames: the lead and the speech frames but the last 16 (see the docstring)
            x = ecog[..., :n_coarse * self.stride]
        else:
            x = F.pad(ecog, (0, (n_coarse + 1) * self.stride - ecog.shape[-1]))
        x = to_grid(x, self.grid)
        x = self.stem(F.pad(x, (0, 0, 0, 0, *self.stem_pad)))
        x = self.time_blocks(x)
        if not self.causal:
            x = x[:, :, self.lead // 4:]  # drop the lead (4 steps at stride 4)
        x = self.space_blocks(x)
        x = x.amax(dim=(-2, -1))  # max over the remaining grid cells: [B, C, n_coarse]
        x = self.upsample(self.temporal(x))
        return self.out(x)[..., :t_out]


class ECoGLSTM(nn.Module):
    """LSTM ECoG decoder: ``[B, E, T + 16] -> [B, out_channels, T]``.

    ``ECoGMapping_RNN`` as described (``ANCHORS_WAVE2.md`` §3): an LSTM over the E electrode signals (3 layers x 128
    units, bidirectional unless causal, dropout 0.5 between layers), a linear map to ``out_channels`` features (64 in
    the original), then the crop ``[8:-8]`` of the T + 16 frames: output frame j is the LSTM's output at ECoG frame
    ``j + shift`` (``shift=8``), i.e. the ECoG leads the speech by 8 frames (64 ms). Of the 16-frame lead of the
    interface, ``shift`` frames are dropped at the start and ``16 - shift`` at the end (``shift`` from 0 to 16;
    16 aligns each output frame with its own ECoG frame). The LSTM reads the electrodes directly, so ``grid`` does
    not apply.

    ``causal=True``: a unidirectional LSTM, whose output at ECoG frame ``j + shift`` depends on frames ``<= j + shift``,
    ``16 - shift`` frames (64 ms at the default) before speech frame j.

    Size at the paper's defaults (64 electrodes, out_channels 64): 1 005 632 parameters (bidirectional), 371 776
    (causal).
    """

    def __init__(self, n_electrodes: int = 64, out_channels: int = 64, causal: bool = False, hidden: int = 128,
                 layers: int = 3, dropout: float = 0.5, shift: int = 8) -> None:
        super().__init__()
        if not 0 <= shift <= LEAD:
            raise ValueError(f"ECoGLSTM: shift must be in [0, {LEAD}] frames, got {shift}")
        self.n_electrodes = n_electrodes
        self.causal = causal
        self.lead = LEAD
        self.shift = shift
        self.lstm = nn.LSTM(n_electrodes, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                            bidirectional=not causal)
        self.linear = nn.Linear(hidden * (1 if causal else 2), out_channels)

    def forward(self, ecog: torch.Tensor) -> torch.Tensor:
        check_ecog(ecog, self.n_electrodes, self.lead, type(self).__name__)
        t_out = ecog.shape[-1] - self.lead
        y, _ = self.lstm(ecog.transpose(1, 2))
        y = self.linear(y)[:, self.shift:self.shift + t_out]
        return y.transpose(1, 2)


DECODERS: dict[str, type[nn.Module]] = {"resnet": ECoGResNet3d, "lstm": ECoGLSTM, "swin": ECoGSwin3d}


def build_ecog_decoder(name: str, n_electrodes: int = 64, causal: bool = False, grid: tuple[int, int] = (8, 8),
                       out_channels: int | None = None, **kwargs: Any) -> nn.Module:
    """The ECoG decoder ``name`` in {"resnet", "lstm", "swin"}: ``forward(ecog [B, E, T + 16]) -> [B, D, T]``.

    ``n_electrodes`` (E) is laid on ``grid`` (rows, columns) row-major, zero-filled when E is smaller (the LSTM
    reads the E signals directly and ignores ``grid``); ``causal=True`` builds the variant whose output frame j
    depends on ECoG frames ``<= j + 16`` only; ``out_channels`` (D) defaults to the original's width (32 for the
    ResNet and the Swin, 64 for the LSTM); other ``kwargs`` go to the class (sizes such as ``width``, ``hidden``,
    ``embed_dim``, ``depths``; see each class). The module has ``lead = 16``, the frames before the first speech
    frame. Raises ``KeyError`` naming the valid decoders for an unknown ``name``, ``ValueError`` when the electrodes
    do not fit the grid.
    """
    if name not in DECODERS:
        raise KeyError(f"unknown ECoG decoder {name!r}; valid names: {sorted(DECODERS)}")
    if out_channels is not None:
        kwargs["out_channels"] = out_channels
    if name != "lstm":
        kwargs["grid"] = tuple(grid)
    return DECODERS[name](n_electrodes=n_electrodes, causal=causal, **kwargs)
