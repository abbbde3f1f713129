"""A video-Swin-style ECoG decoder over (time, electrode grid), with a causal variant (Neural Speech Decoding's
``ECoGMapping_3D_SWIN``, rebuilt from its description in ``ANCHORS_WAVE2.md`` §3; the original is GPL-3.0 and none
of its code is used).

Why a rebuild rather than torchvision's ``swin3d_t``: its shifted-window attention builds its own shift mask
inside ``shifted_window_attention_3d`` with no way to add a mask over future frames, which the causal variant
needs; torchvision is not a bm2 dependency either, and the other pieces (patch merging, MLP, stochastic depth) are a
few lines each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .ecog_common import LEAD, Conv1dBlock, Upsample1d, check_ecog, check_grid, to_grid


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the residual branch of whole samples with probability ``p`` (scaled by 1 / (1 - p))."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


def window_partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """``[B, T, H, W, C]`` (each size a multiple of the window) -> ``[B, nW, N, C]``, N = wt * wh * ww tokens."""
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    x = x.reshape(b, t // wt, wt, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(b, -1, wt * wh * ww, c)


def window_reverse(x: torch.Tensor, window: tuple[int, int, int], size: tuple[int, int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B, nW, N, C]`` -> ``[B, T, H, W, C]``."""
    b, _, _, c = x.shape
    t, h, w = size
    wt, wh, ww = window
    x = x.reshape(b, t // wt, h // wh, w // ww, wt, wh, ww, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, c)


def window_mask(size: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int],
                causal: bool, device: torch.device | None = None) -> torch.Tensor:
    """Which key each query may attend to in each window, ``[nW, N, N]`` (True = allowed), after a cyclic shift of
    the ``size`` token volume by ``-shift``.

    Two rules: a query and a key must come from the same side of every wrap-around of the shift (Swin's shift mask),
    and, when ``causal``, the key's **original** frame must not be later than the query's. The original frame of the
    token at shifted position p is ``(p + shift) mod T``, so the end of the sequence rolled to the front is never seen
    as the past of the start, and no window, shifted or not, reaches a later frame.
    """
    def coords(n: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = torch.arange(n, device=device)
        return (p + s) % n, (p >= n - s) if s > 0 else torch.zeros(n, dtype=torch.bool, device=device)

    (t_orig, t_wrap), (_, h_wrap), (_, w_wrap) = (coords(n, s) for n, s in zip(size, shift))
    t, h, w = size
    region = (t_wrap.long()[:, None, None] * 4 + h_wrap.long()[None, :, None] * 2 + w_wrap.long()[None, None, :])
    frame = t_orig[:, None, None].expand(t, h, w)
    stacked = torch.stack([region, frame], dim=-1)[None]  # [1, T, H, W, 2]
    windows = window_partition(stacked, window)[0]  # [nW, N, 2]
    reg, frm = windows[..., 0], windows[..., 1]
    allowed = reg[:, :, None] == reg[:, None, :]
    if causal:
        allowed = allowed & (frm[:, None, :] <= frm[:, :, None])  # key frame <= query frame
    return allowed


class WindowAttention3d(nn.Module):
    """Multi-head self-attention inside (shifted) 3-D windows with a learned relative-position bias (video Swin),
    over ``[B, T, H, W, C]``; with ``causal=True`` a query never attends to a token of a later frame.

    ``window`` and ``shift`` are (time, height, width) in tokens; the volume is zero-padded at the end of each axis
    to a multiple of the window (padding at the end of time is in the future, so it cannot reach a past frame).
    """

    def __init__(self, dim: int, heads: int, window: tuple[int, int, int], shift: tuple[int, int, int],
                 causal: bool, attn_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.window = window
        self.shift = shift
        self.causal = causal
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        wt, wh, ww = window
        self.bias_table = nn.Parameter(torch.zeros((2 * wt - 1) * (2 * wh - 1) * (2 * ww - 1), heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        grid = torch.stack(torch.meshgrid(torch.arange(wt), torch.arange(wh), torch.arange(ww), indexing="ij"))
        grid = grid.flatten(1)  # [3, N]
        rel = grid[:, :, None] - grid[:, None, :] + torch.tensor([wt - 1, wh - 1, ww - 1])[:, None, None]
        index = (rel[0] * (2 * wh - 1) + rel[1]) * (2 * ww - 1) + rel[2]
        self.bias_index: torch.Tensor
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h, w, c = x.shape
        pads = [(-n) % k for n, k in zip((t, h, w), self.window)]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        size = (t + pads[0], h + pads[1], w + pads[2])
        if any(self.shift):
            x = torch.roll(x, [-s for s in self.shift], dims=(1, 2, 3))
        win = window_partition(x, self.window)  # [B, nW, N, C]
        n_win, n = win.shape[1], win.shape[2]
        qkv = self.qkv(win).reshape(b, n_win, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, nW, heads, N, d]
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # [heads, N, N]
        mask = window_mask(size, self.window, self.shift, self.causal, x.device)  # [nW, N, N]
        attn_mask = bias[None].to(q.dtype).masked_fill(~mask[:, None], float("-inf"))  # [nW, heads, N, N]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        y = self.drop(self.proj(y.transpose(2, 3).reshape(b, n_win, n, c)))
        y = window_reverse(y, self.window, size)
        if any(self.shift):
            y = torch.roll(y, list(self.shift), dims=(1, 2, 3))
        return y[:, :t, :h, :w]


class SwinBlock3d(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(WindowAttention(LN x))``, ``x + DropPath(MLP(LN x))``, MLP
    ``Linear(C -> r C) -> GELU -> Dropout -> Linear(-> C) -> Dropout``; over ``[B, T, H, W, C]``."""

    def __init__(self, dim: int, heads: int, window: tuple[int, int, int], shift: tuple[int, int, int],
                 causal: bool, mlp_ratio: float = 4.0, dropout: float = 0.0, attn_dropout: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3d(dim, heads, window, shift, causal, attn_dropout, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + _drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        return x + _drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)


class PatchMerging(nn.Module):
    """Video Swin's spatial down-sampling: the 2 x 2 neighbouring tokens of each frame concatenated (odd sizes
    zero-padded), LayerNorm, ``Linear(4C -> 2C)``; ``[B, T, H, W, C] -> [B, T, ceil(H/2), ceil(W/2), 2C]``. Frames
    are never mixed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[3] % 2, 0, x.shape[2] % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class ECoGSwin3d(nn.Module):
    """3-D Swin ECoG decoder over (time, grid): ``[B, E, T + 16] -> [B, out_channels, T]`` at 125 Hz.

    Layout (``ECoGMapping_3D_SWIN`` as described in ``ANCHORS_WAVE2.md`` §3, with video Swin's blocks):

    1. the E electrodes on the grid row-major, zero where no electrode: ``[B, 1, frames, 8, 8]``. The original pads
       the 8 x 8 grid to 9 x 9; we keep 8 x 8, which patches of 2 and windows of 2 tile exactly (a 9 x 9 grid would
       be padded again to 10 x 10 by the patch and to 6 x 6 tokens by the windows);
    2. patch embedding ``Conv3d(1 -> 48, kernel = stride = (2, 2, 2))`` + LayerNorm: tokens at half the frame rate;
    3. stages of Swin blocks (depths [2, 2, 6, 2], heads [3, 6, 12, 24], window (4, 2, 2) in (time, rows, columns),
       shifted by half a window in every other block, MLP ratio 4, stochastic depth rising linearly to 0.1 as video
       Swin-T), with patch merging (space only, width x2) between stages. By default 3 stages for grids of <= 64
       cells ("low density" in the paper's figure) and 4 above (hybrid density); ``depths`` / ``heads`` override.
       A window (or shift) larger than the tokens of a spatial axis is cut to that axis (no shift), as video Swin;
    4. LayerNorm, the mean over the grid, ``[B, C, T/2]``;
    5. ``ConvTranspose1d`` x2 back to the frame rate (:class:`~bm2.models.ecog_common.Upsample1d`, to 128 channels),
       then 3 blocks ``Conv1d(k3)`` + GroupNorm + LeakyReLU(0.2) to 64, 32 and ``out_channels``. The description has
       "ConvTranspose1d plus 3 upsampling blocks"; with patches of 2 frames one x2 step restores the rate, so our
       3 blocks keep it.

    The lead: non-causal, the first 16 frames are dropped (as the original). Any ``T >= 1``: frames are zero-padded
    at the end to a multiple of 8 (2-frame patches x 4-token windows) and the output is cropped back to T.

    ``causal=True``: attention masks every key of a later frame than its query, inside and across windows, with
    shifted windows judged by each token's original frame (:func:`window_mask`); norms of the head are per frame;
    transposed convolution and convolutions are causal. A 2-frame patch summarises frames 2p, 2p + 1; to upsample
    it to speech frames without a look-ahead the causal decoder starts its patches 2 frames earlier, inside the lead
    (ECoG frames 14 + 2p, 15 + 2p for speech frames 2p, 2p + 1): output frame j sees ECoG up to 1-2 frames (8-16 ms)
    before its own time.

    Size at the paper's defaults (64 electrodes on 8 x 8, 3 stages, out_channels 32): 3 178 134 parameters.
    """

    def __init__(self, n_electrodes: int = 64, out_channels: int = 32, causal: bool = False,
                 grid: tuple[int, int] = (8, 8), embed_dim: int = 48, depths: Sequence[int] | None = None,
                 heads: Sequence[int] | None = None, patch: tuple[int, int, int] = (2, 2, 2),
                 window: tuple[int, int, int] = (4, 2, 2), mlp_ratio: float = 4.0, dropout: float = 0.0,
                 attn_dropout: float = 0.0, drop_path: float = 0.1,
                 head_channels: Sequence[int] = (128, 64, 32)) -> None:
        super().__init__()
        self.grid = check_grid(n_electrodes, tuple(grid), "ECoGSwin3d")  # type: ignore[arg-type]
        self.n_electrodes = n_electrodes
        self.causal = causal
        self.lead = LEAD
        if depths is None:
            depths = [2, 2, 6] if self.grid[0] * self.grid[1] <= 64 else [2, 2, 6, 2]
        if heads is None:
            heads = [3, 6, 12, 24][:len(depths)]
        if len(heads) != len(depths):
            raise ValueError(f"ECoGSwin3d: {len(depths)} stages in depths={list(depths)} but {len(heads)} in "
                             f"heads={list(heads)}")
        self.patch = (int(patch[0]), int(patch[1]), int(patch[2]))
        if self.patch[0] != 2:
            raise ValueError(f"ECoGSwin3d: the head restores the frame rate with one x2 step, so the time patch must "
                             f"be 2 frames, got patch={tuple(patch)}")
        self.window_t = window[0]
        self.patch_embed = nn.Conv3d(1, embed_dim, self.patch, stride=self.patch)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        h = -(-self.grid[0] // self.patch[1])
        w = -(-self.grid[1] // self.patch[2])
        stages: list[nn.Module] = []
        dim, k = embed_dim, 0
        for i, (depth, n_heads) in enumerate(zip(depths, heads)):
            # a window no larger than the tokens of a spatial axis, and no shift where it covers the axis
            win = (window[0], min(window[1], h), min(window[2], w))
            shift = (win[0] // 2, win[1] // 2 if h > win[1] else 0, win[2] // 2 if w > win[2] else 0)
            blocks: list[nn.Module] = [
                SwinBlock3d(dim, n_heads, win, shift if j % 2 else (0, 0, 0), causal, mlp_ratio, dropout,
                            attn_dropout, rates[k + j]) for j in range(depth)]
            k += depth
            if i < len(depths) - 1:
                blocks.append(PatchMerging(dim))
                dim, h, w = 2 * dim, -(-h // 2), -(-w // 2)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(dim)
        self.upsample = Upsample1d(dim, head_channels[0], causal)
        widths = [*head_channels, out_channels]
        self.head = nn.Sequential(*(Conv1dBlock(a, b, 3, causal) for a, b in zip(widths[:-1], widths[1:])))

    def forward(self, ecog: torch.Tensor) -> torch.Tensor:
        check_ecog(ecog, self.n_electrodes, self.lead, type(self).__name__)
        t_out = ecog.shape[-1] - self.lead
        pt = self.patch[0]
        multiple = pt * self.window_t
        frames = -(-t_out // multiple) * multiple
        start = self.lead - pt if self.causal else self.lead  # causal: patches one patch early (see the docstring)
        x = ecog[..., start:start + frames]
        x = F.pad(x, (0, frames - x.shape[-1]))
        x = to_grid(x, self.grid)
        x = F.pad(x, (0, (-x.shape[-1]) % self.patch[2], 0, (-x.shape[-2]) % self.patch[1]))
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))  # [B, T', H', W', C]
        x = self.norm(self.stages(x)).mean(dim=(2, 3))  # [B, T', C]
        y = self.head(self.upsample(x.transpose(1, 2)))
        return y[..., :t_out]
