"""Building blocks shared by bm2 brain encoders: spatial attention over sensors, subject layers, dropout."""

from __future__ import annotations

import math

import torch
from torch import nn


class ModelConfigError(ValueError):
    """A model's settings (``model.<name>.*`` overrides) are invalid or contradict each other; the message names the
    override to change. A ``ValueError``, so callers that catch those still do; ``dora run`` prints its message
    alone, without a traceback (:func:`bm2.train.user_errors`)."""


def n_freqs_for(pos_dim: int) -> int:
    """Return the number of frequencies per axis of a Fourier embedding of size ``pos_dim``.

    ``pos_dim`` must equal ``2 * n_freqs ** 2`` (cos and sin for each of the n_freqs x n_freqs frequency
    pairs); anything else is rejected rather than silently truncated.
    """
    if pos_dim <= 0 or pos_dim % 2:
        raise ValueError(f"pos_dim must be 2 * n_freqs ** 2 with n_freqs >= 1, got {pos_dim}")
    n_freqs = math.isqrt(pos_dim // 2)
    if 2 * n_freqs**2 != pos_dim:
        raise ValueError(
            f"pos_dim must be 2 * n_freqs ** 2 (e.g. 128, 288, 512, 2048), got {pos_dim}; "
            f"nearest valid values: {2 * n_freqs ** 2} and {2 * (n_freqs + 1) ** 2}"
        )
    return n_freqs


class FourierEmb(nn.Module):
    """2-D Fourier positional embedding of sensor positions: cos and sin of n_freqs x n_freqs frequency pairs.

    A position ``(px, py)`` in [0, 1]² is first mapped to ``x = (px + margin) / (1 + 2 * margin)`` (same for
    y), as in the original brainmagick code (the paper does not give the mapping); the embedding is then
    ``[cos(2π (fx·x + fy·y)), sin(2π (fx·x + fy·y))]`` over the integer frequency pairs ``fx, fy`` in
    ``0 .. n_freqs - 1``, x-major (``fx`` is the outer loop), all cosines first, then all sines.
    """

    def __init__(self, n_freqs: int, margin: float = 0.2) -> None:
        super().__init__()
        if n_freqs < 1:
            raise ValueError(f"n_freqs must be >= 1, got {n_freqs}")
        if not margin >= 0.0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.n_freqs = n_freqs
        self.margin = margin
        # Integer frequencies 0..n_freqs-1 on both axes; a buffer so it follows .to(device) but is not trained.
        freqs = torch.arange(n_freqs, dtype=torch.float32)
        fx, fy = torch.meshgrid(freqs, freqs, indexing="ij")
        self.freqs: torch.Tensor
        self.register_buffer("freqs", torch.stack([fx.flatten(), fy.flatten()], dim=-1), persistent=False)

    @property
    def dim(self) -> int:
        """Size of the embedding (2 * n_freqs ** 2)."""
        return 2 * self.n_freqs**2

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Embed positions ``[..., 2]`` in [0, 1] into ``[..., 2 * n_freqs ** 2]``."""
        if positions.shape[-1] != 2:
            raise ValueError(f"positions must end with a dimension of size 2, got shape {tuple(positions.shape)}")
        # [0, 1] -> [m / (1 + 2m), (1 + m) / (1 + 2m)], an interval shorter than 1: with integer frequencies
        # the embedding has period 1, so without a margin the opposite borders 0 and 1 would get the same code.
        pos = (positions.float() + self.margin) / (1.0 + 2.0 * self.margin)
        phase = 2 * math.pi * pos @ self.freqs.T  # [..., n_freqs ** 2]
        return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


class ChannelMerger(nn.Module):
    """Spatial attention: softmax-weighted mixes of any set of sensors into ``merger_channels`` virtual channels.

    Each sensor is scored from the Fourier embedding of its 2-D layout position, so a model trained on one
    montage can be applied to another (or to recordings with missing sensors) without changing its weights.

    Parameters
    ----------
    merger_channels : number of virtual output channels.
    pos_dim : size of the Fourier embedding (``2 * n_freqs ** 2``).
    dropout : radius of the disc of sensors masked during training (0 = none).
    per_subject : one set of attention heads per subject.
    n_subjects : number of subjects (with ``per_subject``).
    margin : margin of the position mapping of :class:`FourierEmb` (0.2 in the original code).
    dropout_per_item : draw one disc centre per batch item. The default (False) draws one centre for the
        whole batch, as the original brainmagick code does.
    """

    def __init__(self, merger_channels: int, pos_dim: int, dropout: float = 0.2, per_subject: bool = False,
                 n_subjects: int = 1, margin: float = 0.2, dropout_per_item: bool = False) -> None:
        super().__init__()
        if per_subject and n_subjects < 1:
            raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
        self.merger_channels = merger_channels
        self.dropout = dropout
        self.dropout_per_item = dropout_per_item
        self.per_subject = per_subject
        self.n_subjects = n_subjects
        self.embedding = FourierEmb(n_freqs_for(pos_dim), margin)
        n_heads = n_subjects if per_subject else 1
        # Scaled so that initial scores are O(1): the softmax starts smooth rather than picking single sensors.
        self.heads = nn.Parameter(torch.randn(n_heads, merger_channels, pos_dim) / math.sqrt(pos_dim))

    def _disc_dropout(self, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mask the sensors inside a disc of radius ``dropout`` around a random centre.

        One centre for the whole batch (the original code), or one per item with ``dropout_per_item``.
        """
        n_centres = positions.shape[0] if self.dropout_per_item else 1
        centre = torch.rand(n_centres, 1, 2, device=positions.device)
        inside = (positions.float() - centre).norm(dim=-1) < self.dropout
        dropped = mask & ~inside
        # A row whose sensors all fall in the disc keeps its original mask, so it never ends up empty.
        empty = ~dropped.any(dim=1, keepdim=True)
        return torch.where(empty, mask, dropped)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None = None,
                subject_index: torch.Tensor | None = None) -> torch.Tensor:
        """Mix ``x[B, C, T]`` (positions ``[B, C, 2]``, mask ``[B, C]`` True=present) into ``[B, M, T]``."""
        B, C, _ = x.shape
        if positions.shape != (B, C, 2):
            raise ValueError(f"positions must have shape {(B, C, 2)}, got {tuple(positions.shape)}")
        if mask is None:
            mask = torch.ones(B, C, dtype=torch.bool, device=x.device)
        elif mask.shape != (B, C):
            raise ValueError(f"mask must have shape {(B, C)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        # Missing sensors may carry NaN positions / values: replace them so that 0-weight * NaN cannot leak.
        positions = torch.where(mask[..., None], positions, torch.zeros_like(positions))
        x = torch.where(mask[..., None], x, torch.zeros_like(x))
        if self.training and self.dropout > 0:
            mask = self._disc_dropout(positions, mask)

        emb = self.embedding(positions).to(self.heads.dtype)  # [B, C, pos_dim]
        if self.per_subject:
            if subject_index is None:
                raise ValueError("a per-subject ChannelMerger needs subject_index")
            heads = self.heads[subject_index.long()]  # [B, M, pos_dim]
        else:
            heads = self.heads[0].expand(B, -1, -1)
        scores = torch.einsum("bmd,bcd->bmc", heads, emb)  # [B, M, C]
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        # A row with no sensor at all would give softmax(all -inf) = NaN (and NaN gradients): give it finite
        # scores, then zero its weights, so that it just outputs zeros.
        empty = ~mask.any(dim=1)
        scores = torch.where(empty[:, None, None], torch.zeros_like(scores), scores)
        weights = torch.softmax(scores, dim=-1) * (~empty)[:, None, None].to(scores.dtype)
        return torch.einsum("bmc,bct->bmt", weights, x.to(weights.dtype))


class ChannelDropout(nn.Module):
    """Training-time dropout of whole input sensors (never all of a row's present sensors)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"channel dropout p must be in [0, 1), got {p}")
        self.p = p

    def sample_keep(self, mask: torch.Tensor) -> torch.Tensor:
        """Return a copy of ``mask[B, C]`` with each present sensor dropped with probability p (train only)."""
        mask = mask.bool()
        if not self.training or self.p == 0:
            return mask
        kept = mask & (torch.rand(mask.shape, device=mask.device) >= self.p)
        # Keep the original row when every sensor would be dropped, so a row never becomes empty.
        return torch.where(kept.any(dim=1, keepdim=True), kept, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Zero dropped sensors of ``x[B, C, T]`` and rescale the rest to keep the row's total scale."""
        if not self.training or self.p == 0:
            return x
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        mask = mask.bool()
        kept = self.sample_keep(mask)
        # Per-row rescaling (present / kept) rather than 1 / (1 - p), which is exact whatever was drawn.
        scale = mask.sum(1, keepdim=True).clamp(min=1) / kept.sum(1, keepdim=True).clamp(min=1)
        return x * (kept * scale)[..., None].to(x.dtype)


class SubjectLayers(nn.Module):
    """One ``C x C`` linear map per subject (no bias), chosen by subject index.

    ``init_id=False`` initialises the matrices randomly (scaled normal), as the original brainmagick code does;
    ``init_id=True`` starts every subject from the identity (bm2's small default configuration).
    """

    def __init__(self, channels: int, n_subjects: int, init_id: bool = True) -> None:
        super().__init__()
        if n_subjects < 1:
            raise ValueError(f"n_subjects must be >= 1, got {n_subjects}")
        self.channels = channels
        self.n_subjects = n_subjects
        if init_id:
            # Identity start: every subject begins with the shared model and only learns its own deviation.
            weights = torch.eye(channels).repeat(n_subjects, 1, 1)
        else:
            weights = torch.randn(n_subjects, channels, channels) / math.sqrt(channels)
        self.weights = nn.Parameter(weights)  # [S, C_out, C_in]

    def forward(self, x: torch.Tensor, subject_index: torch.Tensor) -> torch.Tensor:
        """Apply subject ``subject_index[b]``'s matrix to ``x[b]`` (``x: [B, C, T]``)."""
        if x.shape[1] != self.channels:
            raise ValueError(f"SubjectLayers expects {self.channels} channels, got {x.shape[1]}")
        subject_index = subject_index.long()
        if subject_index.numel() and (subject_index.min() < 0 or subject_index.max() >= self.n_subjects):
            raise IndexError(f"subject_index out of range [0, {self.n_subjects}): {subject_index.tolist()}")
        # Indexing (rather than a one-hot product) means only the selected subjects' matrices get gradients.
        weights = self.weights[subject_index]  # [B, C_out, C_in]
        return torch.einsum("boc,bct->bot", weights, x)

    def extra_repr(self) -> str:
        """Show sizes in ``print(model)``."""
        return f"channels={self.channels}, n_subjects={self.n_subjects}"
