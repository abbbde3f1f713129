"""Du-IN's encoder and classifier (Zheng et al., NeurIPS 2024), written for bm2 from the paper's description.

- :class:`DuinSubjectLayer`: per subject, a linear map of its ``n_channels`` sEEG channels to ``d_subject`` (16)
  with a bias (normal weights, std 0.02, truncated at 2 std; zero bias); padded channels (``mask`` False) are
  zeroed first.
- :class:`PatchTokenizer`: the signal is cut into ``patch`` (100-sample, 100 ms) segments, each tokenised on its
  own by Conv1d(16->128, k19, s10, p9) -> BN -> Conv1d(128->128, k3) -> BN -> Conv1d(128->16, k3) -> BN, with
  **no** nonlinearity; the 16 x 10 output is flattened to a 160-d token (3 s at 1 kHz -> 30 tokens).
- :func:`sinusoidal_embedding`: fixed sine / cosine time embedding (base 1e4) added to the tokens; the encoder takes
  any number of tokens (4-s pre-training crops: 40; 3-s epochs: 30), the classifier's flattening head the number
  it was built for.
- :class:`PostLNBlock`: post-LN Transformer block (``x = LN(x + attn(x))``, ``x = LN(x + ffn(x))``) with 8 heads of
  64 (inner width 512 projected back to 160), attention dropout 0.2, FFN 160 -> 320 -> 160 with ReLU and dropout
  0.2 after the hidden layer.
- :class:`DuinClassifier` (registered as ``duin``): encoder, then flatten (30 x 160) -> 128 -> ReLU -> classes;
  ``bounded_logits=True`` passes the logits through a sigmoid as the original does (cross-entropy on [0, 1]
  "logits"), false gives plain logits.

Parameter count at the paper's sizes (10 channels, 1 subject, 61 words): encoder 3,558,368 (subject layer
176, tokenizer 95,024, 8 blocks 3,463,168) + head 622,397 = 4,180,765. The paper's 4.38 M also counts
parts the classifier carries with a loss weight of 0 (the vector quantiser, 167,136 with its 2048 x 64
codebook, and a contrastive block we do not build); see the tests.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DuinSubjectLayer(nn.Module):
    """Per-subject ``n_channels -> d_out`` linear map with bias, chosen by subject index."""

    def __init__(self, n_channels: int, n_subjects: int, d_out: int = 16) -> None:
        super().__init__()
        weight = torch.empty(n_subjects, n_channels, d_out)
        self.weight = nn.Parameter(nn.init.trunc_normal_(weight, std=0.02, a=-0.04, b=0.04))
        self.bias = nn.Parameter(torch.zeros(n_subjects, d_out))

    def forward(self, x: torch.Tensor, subject_index: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, T]`` -> ``[B, T, d_out]``; ``C`` may be below ``n_channels`` (a batch of subjects with fewer
        channels than the data's largest montage, which the batch is not padded to): the first ``C`` rows apply."""
        if x.shape[1] > self.weight.shape[1]:
            raise ValueError(f"the subject layer was built for {self.weight.shape[1]} channels, got {x.shape[1]}")
        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)
        index = subject_index.long()
        return torch.einsum("bct,bcd->btd", x, self.weight[index][:, :x.shape[1]]) + self.bias[index][:, None, :]


class PatchTokenizer(nn.Module):
    """``[B, T, C]`` -> ``[B, T // patch, d_token]``: each ``patch``-sample segment tokenised on its own."""

    def __init__(self, in_channels: int = 16, patch: int = 100, filters: tuple[int, int, int] = (128, 128, 16),
                 kernels: tuple[int, int, int] = (19, 3, 3), strides: tuple[int, int, int] = (10, 1, 1)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, length = in_channels, patch
        for out, k, s in zip(filters, kernels, strides):
            layers += [nn.Conv1d(channels, out, k, stride=s, padding=k // 2), nn.BatchNorm1d(out)]
            length = (length + 2 * (k // 2) - k) // s + 1
            channels = out
        self.net = nn.Sequential(*layers)
        self.patch = patch
        self.d_token = channels * length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, n_times, channels = x.shape
        n_tokens = n_times // self.patch
        if n_tokens < 1:
            raise ValueError(f"the window has {n_times} samples, fewer than one patch of {self.patch}")
        patches = x[:, :n_tokens * self.patch].reshape(batch * n_tokens, self.patch, channels).transpose(1, 2)
        return self.net(patches).reshape(batch, n_tokens, self.d_token)


def sinusoidal_embedding(n_tokens: int, dim: int, base: float = 1e4) -> torch.Tensor:
    """``[n_tokens, dim]`` fixed embedding: sin on even, cos on odd features, frequencies ``base ** (-2i / dim)``."""
    position = torch.arange(n_tokens, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    out = torch.zeros(n_tokens, dim)
    out[:, 0::2] = torch.sin(position * freq)
    out[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return out


def time_embedding(table: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """The first ``n_tokens`` rows of a :func:`sinusoidal_embedding` ``table``, extended when the sequence is
    longer than the table was built for (the embedding is fixed, so any length is the same function)."""
    if n_tokens <= table.shape[0]:
        return table[:n_tokens]
    return sinusoidal_embedding(n_tokens, table.shape[1]).to(table.device)


class PostLNBlock(nn.Module):
    """Post-LN Transformer block with ``n_heads x d_head`` attention (inner width need not equal ``dim``)."""

    def __init__(self, dim: int = 160, n_heads: int = 8, d_head: int = 64, d_ff: int = 320,
                 attn_dropout: float = 0.2, ff_dropout: float = 0.2) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_head
        self.qkv = nn.Linear(dim, 3 * n_heads * d_head)
        self.proj = nn.Linear(n_heads * d_head, dim)
        self.attn_dropout = attn_dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, d_ff), nn.ReLU(), nn.Dropout(ff_dropout), nn.Linear(d_ff, dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, n, 3, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(batch, n, self.n_heads * self.d_head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.ffn(x))


class DuinEncoder(nn.Module):
    """Subject layer -> patch tokenizer -> + time embedding -> post-LN Transformer: ``[B, N, d_token]``."""

    time_embedding: torch.Tensor

    def __init__(self, n_channels: int, n_subjects: int, n_times: int, d_subject: int = 16, patch: int = 100,
                 depth: int = 8, n_heads: int = 8, d_head: int = 64, d_ff: int = 320, attn_dropout: float = 0.2,
                 ff_dropout: float = 0.2) -> None:
        super().__init__()
        self.subject = DuinSubjectLayer(n_channels, n_subjects, d_subject)
        self.tokenizer = PatchTokenizer(d_subject, patch)
        self.n_tokens = n_times // patch
        dim = self.tokenizer.d_token
        self.register_buffer("time_embedding", sinusoidal_embedding(max(self.n_tokens, 1), dim), persistent=False)
        self.blocks = nn.ModuleList([PostLNBlock(dim, n_heads, d_head, d_ff, attn_dropout, ff_dropout)
                                     for _ in range(depth)])

    def tokens(self, brain: torch.Tensor, subject_index: torch.Tensor,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """The patch tokens ``[B, N, d_token]`` before the time embedding and the Transformer; ``N`` is the
        window's length // ``patch``, which may differ from :attr:`n_tokens` (the length the encoder was built
        for): Du-IN pre-trains on 4-s crops (40 tokens) and classifies 3-s epochs (30 tokens) with one encoder."""
        return self.tokenizer(self.subject(brain, subject_index, mask))

    def contextualise(self, tokens: torch.Tensor) -> torch.Tensor:
        """Time embedding then the Transformer blocks: ``[B, N, d_token]`` -> ``[B, N, d_token]`` (any ``N``)."""
        x = tokens + time_embedding(self.time_embedding, tokens.shape[1]).to(tokens.dtype)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.contextualise(self.tokens(brain, subject_index, mask))


class DuinClassifier(nn.Module):
    """Du-IN's classifier: :class:`DuinEncoder`, flatten -> ``hidden`` -> ReLU -> ``out_channels`` classes."""

    inputs: tuple[str, ...] = ("brain", "subject_index", "mask")
    per_sample = False  # one vector per window [B, K]: classification only
    data_kwargs: tuple[str, ...] = ("n_channels", "n_times")

    def __init__(self, out_channels: int, n_subjects: int, n_channels: int, n_times: int, hidden: int = 128,
                 bounded_logits: bool = False, d_subject: int = 16, patch: int = 100, depth: int = 8,
                 n_heads: int = 8, d_head: int = 64, d_ff: int = 320, attn_dropout: float = 0.2,
                 ff_dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = DuinEncoder(n_channels, n_subjects, n_times, d_subject, patch, depth, n_heads, d_head, d_ff,
                                   attn_dropout, ff_dropout)
        flat = self.encoder.n_tokens * self.encoder.tokenizer.d_token
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, out_channels))
        self.bounded_logits = bounded_logits

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.encoder(brain, subject_index, mask)
        if tokens.shape[1] != self.encoder.n_tokens:  # the flattening head fixes the number of tokens
            raise ValueError(f"the classifier was built for {self.encoder.n_tokens} tokens "
                             f"({self.encoder.n_tokens * self.encoder.tokenizer.patch} samples), got "
                             f"{tokens.shape[1]} (window of {brain.shape[-1]} samples): the window length changed")
        logits = self.head(tokens)
        return torch.sigmoid(logits) if self.bounded_logits else logits


__all__ = ["DuinClassifier", "DuinEncoder", "DuinSubjectLayer", "PatchTokenizer", "PostLNBlock",
           "sinusoidal_embedding", "time_embedding"]
