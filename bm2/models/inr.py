"""The class-codebook word decoder of Lee et al. (2024) ("interpretable neural representations"), written for bm2
from the description of the released code (``Speech-BCI/Interpretable-Neural-Representation``, Apache-2.0; its
channel-attention file is brainmagick's and is not used: bm2's own :class:`~bm2.models.common.ChannelMerger`).

Input: superlet spectra ``brain [B, C, F, T]`` with sensor ``positions [B, C, 2]`` and ``mask [B, C]``.

- :class:`DiscChannelDropout`: in training, drops every sensor inside a disc (radius 0.2 in layout space) around a
  random centre and rescales each kept sensor by 1 / P(kept), P estimated from 100 random discs.
- :class:`~bm2.models.common.ChannelMerger` 127 -> 32 (Fourier embedding dim 128, its own disc ban of 0.2), the
  same ``32 x C`` mixing applied at every (frequency, time) bin.
- :class:`SpectralCNN`: two stages of 3 residual bottleneck blocks on ``[B, 32, F, T]`` (32 channels with a
  bottleneck of 16, then 64 with 32): 1x1 -> 3x3 -> 3x3 -> 1x1 convolutions, GELU before each but the first
  convolution of the first block, one GroupNorm(4) reused after each of the first three; the last block of each
  stage average-pools time by 2; 1x1 convolutions 32 -> 64 between the stages and 64 -> 32 at the end (no bias).
- :class:`PatchEmbed`: Conv2d(32 -> 256, (8, 16), stride (4, 8)); a learnable positional embedding initialised
  with 2-D sinusoids; a CLS token (truncated normal, std 0.02) prepended without position; then LayerNorm.
- :class:`PostLNBlock` x 3: ``y = LN(x + attn(x))``, ``out = LN(y + ffn(y))`` with ONE LayerNorm shared by both
  sub-layers (as the original), :class:`TalkingHeadsAttention` (4 heads x 64, q / k / v without bias, learned
  4 x 4 head mixing before and after the softmax, attention dropout 0.3), FFN 256 -> 1024 -> 256 with GELU and
  He initialisation.
- Output: the 256-d CLS vector ``embedding``; a learnable class ``codebook [K, 256]``; and ``output``, the cosine
  similarity of the embedding to every codebook entry ``[B, K]`` (ranking it gives top-1 / top-10).

Parameter count at the release's sizes (127 channels, 64 frequencies, 512 times, 88 classes): 3,588,944
(tested): merger 4,096, CNN 89,584, patch embedding 1,107,200 (convolution 1,048,832, 15 x 15 positions 57,600,
CLS 256, LayerNorm 512), 3 blocks of 788,512, codebook 22,528. The talking-heads matrices start random, as in the
original (``init_identity`` is for tests).
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .common import ChannelMerger


class DiscChannelDropout(nn.Module):
    """Training-time dropout of the sensors inside a disc of ``radius`` around a random centre (one per batch),
    each kept sensor rescaled by 1 / P(kept), P estimated from ``n_estimate`` random discs."""

    def __init__(self, radius: float = 0.2, n_estimate: int = 100) -> None:
        super().__init__()
        if radius < 0:
            raise ValueError(f"channel dropout radius must be >= 0, got {radius}")
        self.radius, self.n_estimate = radius, n_estimate

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, ...]`` with ``positions [B, C, 2]`` -> the same shape."""
        if not self.training or self.radius == 0:
            return x
        pos = positions.float()
        centres = torch.rand(self.n_estimate, 1, 1, 2, device=x.device)
        kept_prob = ((pos[None] - centres).norm(dim=-1) >= self.radius).float().mean(0)  # [B, C]
        centre = torch.rand(1, 1, 2, device=x.device)
        keep = (pos - centre).norm(dim=-1) >= self.radius
        if mask is not None:
            keep = keep | ~mask.bool()
        scale = keep.float() / kept_prob.clamp(min=1.0 / self.n_estimate)
        return x * scale.view(*scale.shape, *([1] * (x.dim() - 2))).to(x.dtype)


class Bottleneck(nn.Module):
    """Residual bottleneck ``x + conv1x1(conv3x3(conv3x3(conv1x1(x))))`` with one GroupNorm reused after the first
    three convolutions, GELU before each convolution (but the first when ``first``), optional time pooling by 2."""

    def __init__(self, channels: int, hidden: int, groups: int = 4, first: bool = False, pool: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(channels, hidden, 1), nn.Conv2d(hidden, hidden, 3, padding=1),
                                    nn.Conv2d(hidden, hidden, 3, padding=1), nn.Conv2d(hidden, channels, 1)])
        self.norm = nn.GroupNorm(groups, hidden)
        self.first, self.pool = first, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, T]`` -> ``[B, C, F, T]`` (``T // 2`` with pooling)."""
        y = x
        for i, conv in enumerate(self.convs):
            if i > 0 or not self.first:
                y = F.gelu(y)
            y = conv(y)
            if i < 3:
                y = self.norm(y)
        y = x + y
        return F.avg_pool2d(y, (1, 2)) if self.pool else y


class SpectralCNN(nn.Module):
    """Two stages of ``n_blocks`` bottleneck blocks (``channels`` -> ``2 x channels``), each pooling time by 2 in its
    last block; ``[B, channels, F, T]`` -> ``[B, channels, F, T // 4]``."""

    def __init__(self, channels: int = 32, n_blocks: int = 3, groups: int = 4) -> None:
        super().__init__()
        wide = 2 * channels
        self.stage1 = nn.Sequential(*[Bottleneck(channels, channels // 2, groups, first=i == 0, pool=i == n_blocks - 1)
                                      for i in range(n_blocks)])
        self.widen = nn.Conv2d(channels, wide, 1, bias=False)
        self.stage2 = nn.Sequential(*[Bottleneck(wide, wide // 2, groups, pool=i == n_blocks - 1)
                                      for i in range(n_blocks)])
        self.narrow = nn.Conv2d(wide, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.narrow(self.stage2(self.widen(self.stage1(x))))


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> torch.Tensor:
    """2-D sine / cosine positions ``[height * width, dim]`` (row-major): half the channels encode the row, half the
    column, each as sin and cos of geometrically spaced frequencies (``dim`` divisible by 4)."""
    if dim % 4:
        raise ValueError(f"2-D sinusoidal positions need dim divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                                indexing="ij")
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    r = rows.flatten()[:, None] * omega[None]
    c = cols.flatten()[:, None] * omega[None]
    return torch.cat([r.sin(), r.cos(), c.sin(), c.cos()], dim=1)


class PatchEmbed(nn.Module):
    """Conv2d patches ``[B, C, F, T]`` -> tokens ``[B, 1 + n_patches, dim]``: learnable positions (2-D sinusoid
    start), a CLS token prepended without position, LayerNorm."""

    def __init__(self, in_channels: int, n_freqs: int, n_times: int, dim: int = 256,
                 kernel: tuple[int, int] = (8, 16), stride: tuple[int, int] = (4, 8)) -> None:
        super().__init__()
        self.grid = ((n_freqs - kernel[0]) // stride[0] + 1, (n_times - kernel[1]) // stride[1] + 1)
        if min(self.grid) < 1:
            raise ValueError(f"inputs of {n_freqs} frequencies x {n_times} times (after the CNN's pooling) are "
                             f"smaller than a {kernel} patch: use more frequencies or longer windows")
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride)
        self.pos_embed = nn.Parameter(sincos_2d(*self.grid, dim)[None])
        self.cls_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(1, 1, dim), std=0.02))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.norm(tokens)


class TalkingHeadsAttention(nn.Module):
    """Multi-head attention with talking heads (Shazeer et al. 2020): the ``[B, H, N, N]`` logits are mixed across
    heads by a learned ``H x H`` matrix before the softmax, and the weights by another after it. With both
    matrices the identity this is plain scaled dot-product attention (tested)."""

    def __init__(self, dim: int = 256, n_heads: int = 4, d_head: int = 64, dropout: float = 0.3,
                 init_identity: bool = False) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.n_heads, self.d_head = n_heads, d_head
        self.qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.out = nn.Linear(inner, dim)
        init = torch.eye(n_heads) if init_identity else torch.randn(n_heads, n_heads)
        self.pre_softmax = nn.Parameter(init.clone())
        self.post_softmax = nn.Parameter(init.clone())
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, dim]`` -> ``[B, N, dim]``."""
        B, N, _ = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)  # [B, H, N, N]
        logits = torch.einsum("bhij,hg->bgij", logits, self.pre_softmax)
        weights = torch.einsum("bhij,hg->bgij", logits.softmax(dim=-1), self.post_softmax)
        out = self.dropout(weights) @ v  # [B, H, N, d_head]
        return self.out(out.transpose(1, 2).reshape(B, N, -1))


class PostLNBlock(nn.Module):
    """``y = LN(x + attn(x))``, ``out = LN(y + ffn(y))`` with one LayerNorm shared by both (the original's)."""

    def __init__(self, dim: int = 256, n_heads: int = 4, d_head: int = 64, d_ff: int = 1024, dropout: float = 0.3,
                 init_identity: bool = False) -> None:
        super().__init__()
        self.attn = TalkingHeadsAttention(dim, n_heads, d_head, dropout, init_identity)
        self.ffn = nn.Sequential(nn.Linear(dim, d_ff), nn.GELU(), nn.Linear(d_ff, dim))
        for layer in self.ffn:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x + self.attn(x))
        return self.norm(y + self.ffn(y))


class INRDecoder(nn.Module):
    """Lee et al.'s decoder (module docstring): ``brain [B, C, F, T]`` -> ``{"output": cos [B, K], "embedding"
    [B, dim], "codebook" [K, dim]}``.

    Parameters
    ----------
    out_channels : number of classes K (codebook entries); from the data.
    n_subjects : unused (one model for all subjects, as the original); from the data.
    n_freqs, n_times : input frequencies and times; from the data.
    merger_channels, pos_dim, merger_dropout : ChannelMerger (32, 128, disc radius 0.2).
    channel_dropout : radius of :class:`DiscChannelDropout` (0.2; 0 = off).
    cnn_blocks, groups : bottleneck blocks per CNN stage (3) and GroupNorm groups (4).
    dim, depth, n_heads, d_head, d_ff, dropout : Transformer (256, 3, 4, 64, 1024, attention dropout 0.3).
    patch, patch_stride : patch embedding kernel (8, 16) and stride (4, 8) over (frequency, time).
    codebook_init : ``[K, dim]`` start of the codebook (e.g. word vectors); None = standard normal.

    Raises ``ValueError`` when the input is too small for one patch after the CNN's pooling by 4 in time.
    """

    inputs: tp.ClassVar[tuple[str, ...]] = ("brain", "positions", "mask")
    data_kwargs: tp.ClassVar[tuple[str, ...]] = ("n_freqs", "n_times")
    per_sample = False  # one vector per window: classification only

    def __init__(self, out_channels: int, n_subjects: int, n_freqs: int, n_times: int, merger_channels: int = 32,
                 pos_dim: int = 128, merger_dropout: float = 0.2, channel_dropout: float = 0.2, cnn_blocks: int = 3,
                 groups: int = 4, dim: int = 256, depth: int = 3, n_heads: int = 4, d_head: int = 64,
                 d_ff: int = 1024, dropout: float = 0.3, patch: tp.Sequence[int] = (8, 16),
                 patch_stride: tp.Sequence[int] = (4, 8),
                 codebook_init: tp.Sequence[tp.Sequence[float]] | None = None) -> None:
        super().__init__()
        del n_subjects
        self.channel_dropout = DiscChannelDropout(channel_dropout)
        self.merger = ChannelMerger(merger_channels, pos_dim, dropout=merger_dropout)
        self.cnn = SpectralCNN(merger_channels, cnn_blocks, groups)
        self.patch = PatchEmbed(merger_channels, n_freqs, n_times // 4, dim, (patch[0], patch[1]),
                                (patch_stride[0], patch_stride[1]))
        self.blocks = nn.ModuleList([PostLNBlock(dim, n_heads, d_head, d_ff, dropout) for _ in range(depth)])
        if codebook_init is not None:
            init = torch.as_tensor(codebook_init, dtype=torch.float32)
            if init.shape != (out_channels, dim):
                raise ValueError(f"codebook_init must be [{out_channels}, {dim}], got {tuple(init.shape)}")
        else:
            init = torch.randn(out_channels, dim)
        self.codebook = nn.Parameter(init)

    def no_weight_decay(self) -> set[str]:
        """Parameters the original keeps out of weight decay beside biases and norms: the positions and the
        talking-heads matrices."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "pre_softmax", "post_softmax"))}

    def embed(self, brain: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The CLS embedding ``[B, dim]`` of ``brain [B, C, F, T]``."""
        if brain.dim() != 4:
            raise ValueError(f"INRDecoder takes spectra [B, C, F, T], got shape {tuple(brain.shape)}: set "
                             "preprocess.tf=superlet or read a study that holds spectra (lee2024)")
        B, C, n_f, n_t = brain.shape
        x = self.channel_dropout(brain, positions, mask)
        x = self.merger(x.reshape(B, C, n_f * n_t), positions, mask).view(B, -1, n_f, n_t)
        tokens = self.patch(self.cnn(x))
        for block in self.blocks:
            tokens = block(tokens)
        return tokens[:, 0]

    def forward(self, brain: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        z = self.embed(brain, positions, mask)
        cos = F.normalize(z.float(), dim=-1) @ F.normalize(self.codebook.float(), dim=-1).T
        return {"output": cos, "embedding": z, "codebook": self.codebook}


__all__ = ["Bottleneck", "DiscChannelDropout", "INRDecoder", "PatchEmbed", "PostLNBlock", "SpectralCNN",
           "TalkingHeadsAttention", "sincos_2d"]
