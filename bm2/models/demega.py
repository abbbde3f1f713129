"""DeMEGa-style phoneme classifier: a Conformer with DeBERTa-style disentangled attention over the time points of a
MEG window, flattened into an embedding, with a class head, an IPA-feature head and a contrastive projection head.

Rebuilt in bm2's own code from a written description only (``ANCHORS_WAVE2.md`` §1.3 and issue 12; the original,
September-Labs/pnpl-2025-experiments, is CC BY-NC 4.0 and none of its code is used). Layout at the paper's sizes
(306 sensors, 125 samples at 250 Hz, 39 classes; 5 226 101 parameters, the "5.23 M" of the description):

1. optional per-window robust scaling, without gradients: per sample and sensor, (x - median) / (IQR + 1e-6) over
   time (``robust_scale``);
2. input projection ``Conv1d(C->d, k5) -> SiLU -> Conv1d(d->d, k3)`` plus a skip ``Conv1d(C->d, k1)``, summed;
3. ``n_layers`` pre-norm Conformer layers, each ``x + Drop(Conv(LN x))``, ``x + Drop(Attn(LN x))``,
   ``x + FFN(LN x)``; the conv module is depthwise conv -> SiLU -> pointwise conv; the FFN
   ``Linear(d->ff) -> SiLU -> Drop -> Linear(ff->d) -> Drop``;
4. a final LayerNorm, flatten (``n_times * d``) -> Drop -> ``Linear(->embed_hidden)`` -> SiLU ->
   ``Linear(->embed_dim)`` -> Drop: the embedding;
5. heads: ``classifier`` Linear(embed_dim->K); ``ipa_head`` Linear(->64) -> SiLU -> Drop -> Linear(->14);
   ``projection_head`` Linear -> ReLU -> Linear, L2-normalised.

The attention (:class:`DisentangledAttention`) adds to the content-to-content scores a content-to-position term
(query against a projected relative-position embedding) and a position-to-content term (key against another
projection of it), with relative distances put in log-spaced buckets (:func:`log_bucket_position`). Every
layer has its own relative-position table (``2 * buckets`` rows, LayerNorm-ed before use). The content term is
divided by ``sqrt(d_head * (1 + number of positional terms))``, the positional terms by
``sqrt(d_head * pos_scale_mult)`` (2 by default, as the description of the original; reference DeBERTa-v2 uses 3).
With both positional terms off the layer is exactly multi-head scaled dot-product attention.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def log_bucket_position(relative: torch.Tensor, buckets: int = 32, max_position: int = 128) -> torch.Tensor:
    """Relative positions ``r`` (integers) in log buckets: ``|r| <= buckets // 2`` kept as is, beyond that
    ``sign(r) * (ceil(ln(|r| / mid) / ln((max_position - 1) / mid) * (mid - 1)) + mid)`` with ``mid = buckets // 2``
    (so ``|r| = max_position - 1`` lands in bucket ``buckets - 1``)."""
    mid = buckets // 2
    rel = relative.to(torch.float64)
    absolute = rel.abs()
    far = absolute > mid
    safe = torch.where(far, absolute, torch.full_like(absolute, float(mid)))  # no log(0) on the near side
    logged = torch.ceil(torch.log(safe / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return torch.where(far, torch.sign(rel) * logged, rel).to(torch.long)


def relative_positions(n_query: int, n_key: int, buckets: int, max_position: int,
                       device: torch.device | None = None) -> torch.Tensor:
    """``[n_query, n_key]`` bucketed ``i - j`` (query position minus key position)."""
    q = torch.arange(n_query, device=device)
    k = torch.arange(n_key, device=device)
    return log_bucket_position(q[:, None] - k[None, :], buckets, max_position)


class DisentangledAttention(nn.Module):
    """Multi-head self-attention with DeBERTa-style relative-position terms (see the module docstring).

    ``forward(x [B, N, d], rel_table [2 * buckets, d])`` -> ``[B, N, d]``. ``c2p`` / ``p2c`` switch the
    content-to-position and position-to-content terms; ``dropout`` is applied to the attention probabilities and
    to the output. The softmax is computed in float32.
    """

    def __init__(self, dim: int = 128, n_heads: int = 4, buckets: int = 32, max_position: int = 128,
                 c2p: bool = True, p2c: bool = True, pos_scale_mult: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim {dim} must be a multiple of n_heads {n_heads}")
        self.dim, self.n_heads, self.d_head = dim, n_heads, dim // n_heads
        self.buckets, self.max_position = buckets, max_position
        self.c2p, self.p2c, self.pos_scale_mult = c2p, p2c, pos_scale_mult
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.pos_key = nn.Linear(dim, dim) if c2p else None
        self.pos_query = nn.Linear(dim, dim) if p2c else None
        self.drop = nn.Dropout(dropout)
        self._rel_cache: dict[tuple[int, str], torch.Tensor] = {}

    def _relative(self, n: int, device: torch.device) -> torch.Tensor:
        # the bucketed [N, N] table depends on N alone: computed once per length and device, not per forward
        key = (n, str(device))
        if key not in self._rel_cache:
            self._rel_cache[key] = relative_positions(n, n, self.buckets, self.max_position, device)
        return self._rel_cache[key]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.d_head).transpose(-3, -2)  # [..., H, N, dh]

    def scores(self, x: torch.Tensor, rel_table: torch.Tensor | None) -> torch.Tensor:
        """Pre-softmax attention scores ``[B, H, N, N]`` (float32)."""
        n = x.shape[1]
        q, k = self._heads(self.query(x)).float(), self._heads(self.key(x)).float()
        n_pos = int(self.c2p) + int(self.p2c)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head * (1 + n_pos))
        if n_pos == 0:
            return scores
        if rel_table is None:
            raise ValueError("the positional terms need the relative-position table")
        span = rel_table.shape[0] // 2
        rel = self._relative(n, x.device)  # [N, N], i - j
        pos_scale = math.sqrt(self.d_head * self.pos_scale_mult)
        if self.pos_key is not None:  # content -> position: q_i . Kpos[r(i, j)]
            pos_k = self._heads(self.pos_key(rel_table)).float()  # [H, 2 span, dh]
            c2p = q @ pos_k.transpose(-1, -2)  # [B, H, N, 2 span]
            index = (rel + span).clamp(0, 2 * span - 1).expand(*c2p.shape[:2], n, n)
            scores = scores + torch.gather(c2p, -1, index) / pos_scale
        if self.pos_query is not None:  # position -> content: gathered on the key side, then transposed
            pos_q = self._heads(self.pos_query(rel_table)).float()
            p2c = k @ pos_q.transpose(-1, -2)  # [B, H, N (keys), 2 span]
            index = (-rel + span).clamp(0, 2 * span - 1).expand(*p2c.shape[:2], n, n)
            scores = scores + torch.gather(p2c, -1, index).transpose(-1, -2) / pos_scale
        return scores

    def forward(self, x: torch.Tensor, rel_table: torch.Tensor | None = None) -> torch.Tensor:
        probs = self.drop(torch.softmax(self.scores(x, rel_table), dim=-1))
        v = self._heads(self.value(x))
        context = (probs.to(v.dtype) @ v).transpose(-3, -2).reshape(*x.shape[:-1], self.dim)
        return self.drop(self.out(context))


class ConvModule(nn.Module):
    """Depthwise Conv1d (``kernel``) -> SiLU -> pointwise Conv1d, on ``[B, N, d]``."""

    def __init__(self, dim: int, kernel: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.pointwise = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(F.silu(self.depthwise(x.transpose(1, 2)))).transpose(1, 2)


class ConformerLayer(nn.Module):
    """Pre-norm conv -> disentangled attention -> feed-forward, each a residual sub-block; the layer owns its
    relative-position table (``2 * buckets`` x d, LayerNorm-ed before use)."""

    def __init__(self, dim: int = 128, n_heads: int = 4, ff_dim: int = 256, kernel: int = 3, dropout: float = 0.5,
                 buckets: int = 32, max_position: int = 128, c2p: bool = True, p2c: bool = True,
                 pos_scale_mult: float = 2.0) -> None:
        super().__init__()
        self.norm_conv, self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.conv = ConvModule(dim, kernel)
        self.attn = DisentangledAttention(dim, n_heads, buckets, max_position, c2p, p2c, pos_scale_mult, dropout)
        self.rel_embedding = nn.Parameter(torch.randn(2 * buckets, dim) * 0.02) if (c2p or p2c) else None
        self.rel_norm = nn.LayerNorm(dim) if (c2p or p2c) else None
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim),
                                nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.conv(self.norm_conv(x)))
        table = None if self.rel_embedding is None or self.rel_norm is None else self.rel_norm(self.rel_embedding)
        x = x + self.drop(self.attn(self.norm_attn(x), table))
        return x + self.ff(self.norm_ff(x))


def robust_scale(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per sample and sensor over time: ``(x - median) / (q75 - q25 + eps)`` (``x [B, C, T]``)."""
    q = torch.quantile(x.float(), torch.tensor([0.25, 0.5, 0.75], device=x.device), dim=-1, keepdim=True)
    return ((x.float() - q[1]) / (q[2] - q[0] + eps)).to(x.dtype)


class DeMEGa(nn.Module):
    """DeMEGa-style window classifier: ``brain [B, C, T]`` (+ ``mask [B, C]``) -> ``{"output": [B, K],
    "ipa": [B, n_ipa], "projection": [B, proj_dim] (unit norm), "embedding": [B, embed_dim]}``.

    Args:
        out_channels: number of classes K (39 ARPABET phonemes on LibriBrain).
        n_subjects: accepted for the uniform builder call and ignored (one montage, no subject layer).
        n_channels: sensors C of every batch; n_times: window length T in samples (the flatten size).
        dim, n_layers, n_heads, ff_dim, kernel, dropout: Conformer sizes (paper: 128, 4, 4, 256, 3, 0.5).
        buckets, max_relative_positions: relative-position buckets and the distance mapped to the last one.
        c2p, p2c, pos_scale_mult: the positional terms and their scale (``sqrt(pos_scale_mult * d_head)``).
        embed_hidden, embed_dim: the flatten -> embedding MLP; ipa_hidden, n_ipa: the IPA head;
        proj_dim: the contrastive projection; robust_scale: per-window median / IQR scaling in forward.
    """

    inputs: tuple[str, ...] = ("brain", "mask")
    data_kwargs: tuple[str, ...] = ("n_channels", "n_times")
    per_sample = False  # one vector per window: classification only

    def __init__(self, out_channels: int, n_subjects: int = 1, n_channels: int = 306, n_times: int = 125,
                 dim: int = 128, n_layers: int = 4, n_heads: int = 4, ff_dim: int = 256, kernel: int = 3,
                 dropout: float = 0.5, buckets: int = 32, max_relative_positions: int = 128, c2p: bool = True,
                 p2c: bool = True, pos_scale_mult: float = 2.0, embed_hidden: int = 256, embed_dim: int = 128,
                 ipa_hidden: int = 64, n_ipa: int = 14, proj_dim: int = 128, robust_scale: bool = True) -> None:
        super().__init__()
        for name, value in (("out_channels", out_channels), ("n_channels", n_channels), ("n_times", n_times)):
            if int(value) < 1:
                raise ValueError(f"DeMEGa needs a positive {name}, got {value}")
        self.n_times, self.robust_scale = int(n_times), robust_scale
        self.input_proj = nn.Sequential(nn.Conv1d(n_channels, dim, 5, padding=2), nn.SiLU(),
                                        nn.Conv1d(dim, dim, 3, padding=1))
        self.input_skip = nn.Conv1d(n_channels, dim, 1)
        self.encoder = nn.ModuleList([
            ConformerLayer(dim, n_heads, ff_dim, kernel, dropout, buckets, max_relative_positions, c2p, p2c,
                           pos_scale_mult) for _ in range(n_layers)])
        self.final_norm = nn.LayerNorm(dim)
        self.aggregator = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(n_times * dim, embed_hidden),
                                        nn.SiLU(), nn.Linear(embed_hidden, embed_dim), nn.Dropout(dropout))
        self.classifier = nn.Linear(embed_dim, out_channels)
        self.ipa_head = nn.Sequential(nn.Linear(embed_dim, ipa_hidden), nn.SiLU(), nn.Dropout(dropout),
                                      nn.Linear(ipa_hidden, n_ipa))
        self.projection_head = nn.Sequential(nn.Linear(embed_dim, proj_dim), nn.ReLU(),
                                             nn.Linear(proj_dim, proj_dim))

    def forward(self, brain: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if brain.shape[-1] != self.n_times:
            raise ValueError(f"DeMEGa was built for windows of {self.n_times} samples, got {brain.shape[-1]}")
        if mask is not None:
            brain = brain * mask[..., None].to(brain.dtype)
        if self.robust_scale:
            with torch.no_grad():
                brain = robust_scale(brain)
        x = (self.input_proj(brain) + self.input_skip(brain)).transpose(1, 2)  # [B, T, d]
        for layer in self.encoder:
            x = layer(x)
        embedding = self.aggregator(self.final_norm(x))
        return {"output": self.classifier(embedding), "ipa": self.ipa_head(embedding),
                "projection": F.normalize(self.projection_head(embedding), dim=-1), "embedding": embedding}
