"""Du-IN's pre-training stages (Zheng et al., NeurIPS 2024), written for bm2 from the paper's description.

Stage 1, :class:`DuinVQVAE` (registered as ``duin_vqvae``): the Du-IN encoder (:class:`bm2.models.duin.DuinEncoder`)
gives one token per 100-ms patch; Linear -> Tanh -> Linear projects each token to ``d_code`` (64), which is
L2-normalised and quantised by :class:`CosineEMACodebook` (2048 x 64 unit codes, nearest by cosine, updated by
exponential moving averages with decay 0.99, initialised by cosine k-means on the first training batch, counts
and sums summed across processes when :mod:`torch.distributed` is initialised). The quantised tokens go back to
the token width (LayerNorm -> Linear), through a post-LN Transformer decoder (``decoder_depth`` blocks, 4) and
:class:`ReconstructionHead` (transposed convolutions, then a per-subject linear map back to the subject's
channels): the reconstruction of the (scaled) brain signal ``[B, C, N * patch]``. Outputs: ``output``
(reconstruction), ``codes`` ``[B, N]``, ``commitment`` (``MSE(z, sg(e))`` over tokens and code dimensions; its
weight in the objective is beta, 1), ``perplexity`` (of the batch's code usage) and ``dead_codes`` (fraction of
codes whose moving-average count fell below 1e-3).

Stage 2, :class:`DuinMAE` (registered as ``duin_mae``): a fresh encoder whose patch tokens are masked in two
complementary views (:func:`complementary_masks`: each view hides half of the tokens, the other view the other
half, replaced by a learned mask token), each view through the Transformer, and a linear head predicting, for
every masked token, the code index the frozen stage-1 tokenizer (``vqvae``, loaded from the parent XP with
``chain.modules=[vqvae]``, never trained here) gives it. Since the views are complementary, each token is
predicted exactly once: ``output`` ``[B, N, n_codes]`` holds the logits of every token from the view that masked
it, ``codes`` ``[B, N]`` the targets. Stage 3 (the ``duin`` classifier) starts from ``encoder`` of this model.

Both keep the stage-1 model under the top-level name ``vqvae``, so that the chain copies it by name.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from .duin import DuinEncoder, PostLNBlock, sinusoidal_embedding, time_embedding


def _all_reduce(*tensors: torch.Tensor) -> None:
    """Sum ``tensors`` in place across processes (nothing when torch.distributed is not initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for t in tensors:
            torch.distributed.all_reduce(t)


def _broadcast(tensor: torch.Tensor) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(tensor, src=0)


class UntrainedTokenizerError(RuntimeError):
    """The Du-IN MAE was given a VQ-VAE tokenizer that was never trained (no parent XP)."""


class CosineEMACodebook(nn.Module):
    """``n_codes`` unit vectors of ``dim``; tokens (L2-normalised) take the code of highest cosine similarity.

    In training mode each call updates the codebook from the batch: with ``counts[k]`` tokens assigned to code k
    and ``sums[k]`` their sum (both summed over processes), ``cluster_size = decay * cluster_size + (1 - decay) *
    counts`` and ``embed_sum = decay * embed_sum + (1 - decay) * sums``; a code used by the batch becomes
    ``normalise(embed_sum)``, an unused code stays exactly as it was. The first training batch initialises the
    codebook by cosine k-means (``kmeans_iters`` iterations; the starting codes are drawn on process 0).
    """

    embed: torch.Tensor
    embed_sum: torch.Tensor
    cluster_size: torch.Tensor
    initialised: torch.Tensor

    def __init__(self, n_codes: int = 2048, dim: int = 64, decay: float = 0.99, kmeans_iters: int = 10) -> None:
        super().__init__()
        self.n_codes, self.dim, self.decay, self.kmeans_iters = n_codes, dim, decay, kmeans_iters
        embed = F.normalize(torch.randn(n_codes, dim), dim=-1)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("cluster_size", torch.zeros(n_codes))
        self.register_buffer("initialised", torch.tensor(False))

    def _assign(self, z: torch.Tensor, codes_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = torch.bincount(codes_of, minlength=self.n_codes).to(z.dtype)
        sums = torch.zeros(self.n_codes, self.dim, dtype=z.dtype, device=z.device).index_add_(0, codes_of, z)
        _all_reduce(counts, sums)
        return counts, sums

    @torch.no_grad()
    def kmeans_init(self, z: torch.Tensor) -> None:
        """Cosine k-means on the unit tokens ``z [M, dim]``: codes, counts and sums of the final assignment."""
        n = z.shape[0]
        pick = torch.randperm(n, device=z.device)[:self.n_codes] if n >= self.n_codes else \
            torch.randint(n, (self.n_codes,), device=z.device)
        centroids = z[pick].clone()
        _broadcast(centroids)
        counts = torch.zeros(self.n_codes, dtype=z.dtype, device=z.device)
        for _ in range(max(1, self.kmeans_iters)):
            counts, sums = self._assign(z, (z @ centroids.T).argmax(dim=1))
            centroids = torch.where(counts[:, None] > 0, F.normalize(sums, dim=-1), centroids)
        self.embed.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centroids * counts.clamp(min=1.0)[:, None])
        self.initialised.fill_(True)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One moving-average step from unit tokens ``z [M, dim]`` assigned to ``codes [M]``; returns the counts."""
        counts, sums = self._assign(z, codes)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        used = counts > 0
        self.embed[used] = F.normalize(self.embed_sum[used], dim=-1)
        return counts

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z [..., dim]`` -> ``quantized`` (straight-through, unit norm), ``codes [...]``, ``commitment``
        (mean squared error of the unit tokens against their codes), ``perplexity`` and ``dead_codes``."""
        shape = z.shape[:-1]
        flat = F.normalize(z.float().reshape(-1, self.dim), dim=-1)
        if self.training and not bool(self.initialised):
            self.kmeans_init(flat.detach())
        with torch.no_grad():
            codes = (flat @ self.embed.T).argmax(dim=1)
        quantized = self.embed[codes]  # the codes before this batch's update
        if self.training:
            counts = self.ema_update(flat.detach(), codes)
        else:
            counts = torch.bincount(codes, minlength=self.n_codes).float()
        commitment = F.mse_loss(flat, quantized.detach())
        with torch.no_grad():
            p = counts / counts.sum().clamp(min=1.0)
            perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())
            dead = (self.cluster_size < 1e-3).float().mean()
        straight = flat + (quantized - flat).detach()
        return {"quantized": straight.reshape(*shape, self.dim), "codes": codes.reshape(shape),
                "commitment": commitment, "perplexity": perplexity, "dead_codes": dead}


class ReconstructionHead(nn.Module):
    """Decoded tokens ``[B, N, dim]`` -> signal ``[B, C, N * patch]``, with no nonlinearity: a chain of transposed
    convolutions over the token sequence, dim -> 128 (k3) -> 128 (k3) -> 128 (k = s = L, the tokenizer's length per
    token: 10 for 100-sample patches) -> 128 (k9) -> ``d_subject`` (k19, stride 10), then Linear(d_subject ->
    d_subject) and the subject's linear map back to its ``n_channels`` (with bias). ``patch`` must be ``10 * L``."""

    def __init__(self, n_channels: int, n_subjects: int, dim: int, token_length: int, patch: int,
                 d_subject: int = 16, hidden: int = 128) -> None:
        super().__init__()
        if patch != 10 * token_length:
            raise ValueError(f"the reconstruction head needs patch = 10 x the tokenizer's length per token "
                             f"({token_length}), got patch={patch}: use a multiple of 10")
        self.convs = nn.Sequential(
            nn.ConvTranspose1d(dim, hidden, 3, padding=1),
            nn.ConvTranspose1d(hidden, hidden, 3, padding=1),
            nn.ConvTranspose1d(hidden, hidden, token_length, stride=token_length),
            nn.ConvTranspose1d(hidden, hidden, 9, padding=4),
            nn.ConvTranspose1d(hidden, d_subject, 19, stride=10, padding=5, output_padding=1))
        self.linear = nn.Linear(d_subject, d_subject)
        weight = torch.empty(n_subjects, d_subject, n_channels)
        self.weight = nn.Parameter(nn.init.trunc_normal_(weight, std=0.02, a=-0.04, b=0.04))
        self.bias = nn.Parameter(torch.zeros(n_subjects, n_channels))

    def forward(self, x: torch.Tensor, subject_index: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.convs(x.transpose(1, 2)).transpose(1, 2))  # [B, N * patch, d_subject]
        index = subject_index.long()
        return torch.einsum("btd,bdc->bct", y, self.weight[index]) + self.bias[index][:, :, None]


class DuinVQ(nn.Module):
    """The stage-1 tokenizer: encoder -> Linear -> Tanh -> Linear -> codebook -> decoder -> signal."""

    time_embedding: torch.Tensor

    def __init__(self, n_channels: int, n_subjects: int, n_times: int, n_codes: int = 2048, d_code: int = 64,
                 decay: float = 0.99, kmeans_iters: int = 10, decoder_depth: int = 4, d_subject: int = 16,
                 patch: int = 100, depth: int = 8, n_heads: int = 8, d_head: int = 64, d_ff: int = 320,
                 attn_dropout: float = 0.2, ff_dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = DuinEncoder(n_channels, n_subjects, n_times, d_subject, patch, depth, n_heads, d_head, d_ff,
                                   attn_dropout, ff_dropout)
        dim = self.encoder.tokenizer.d_token
        self.project = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, d_code))
        self.codebook = CosineEMACodebook(n_codes, d_code, decay, kmeans_iters)
        self.expand = nn.Sequential(nn.LayerNorm(d_code), nn.Linear(d_code, dim))
        n_tokens = self.encoder.n_tokens
        self.register_buffer("time_embedding", sinusoidal_embedding(max(n_tokens, 1), dim), persistent=False)
        self.decoder = nn.ModuleList([PostLNBlock(dim, n_heads, d_head, d_ff, attn_dropout, ff_dropout)
                                      for _ in range(decoder_depth)])
        token_channels = int(self.encoder.tokenizer.net[-1].num_features)  # type: ignore[arg-type]
        self.head = ReconstructionHead(n_channels, n_subjects, dim, dim // token_channels, patch, d_subject)

    def quantize(self, brain: torch.Tensor, subject_index: torch.Tensor,
                 mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The codebook's outputs for the encoder's tokens (``quantized [B, N, d_code]``, ``codes [B, N]`` ...)."""
        return self.codebook(self.project(self.encoder(brain, subject_index, mask)))

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.quantize(brain, subject_index, mask)
        quantized = out.pop("quantized")
        x = self.expand(quantized) + time_embedding(self.time_embedding, quantized.shape[1]).to(quantized.dtype)
        for block in self.decoder:
            x = block(x)
        # the batch's channels: those of its largest montage, which may be fewer than n_channels
        out["output"] = self.head(x, subject_index)[:, :brain.shape[1]]
        return out


class DuinVQVAE(nn.Module):
    """Stage 1 (``duin_vqvae``): :class:`DuinVQ` under the name ``vqvae``; outputs ``output`` ``[B, C, N*patch]``,
    ``codes``, ``commitment``, ``perplexity``, ``dead_codes`` (objective ``duin_vqvae``, task ``pretraining``)."""

    inputs: tuple[str, ...] = ("brain", "subject_index", "mask")
    per_sample = False  # reconstructs the brain signal, not speech features
    pretraining = True  # its output is not a decoding output (task ``pretraining``)
    data_kwargs: tuple[str, ...] = ("n_channels", "n_times")

    def __init__(self, out_channels: int, n_subjects: int, n_channels: int, n_times: int, **kwargs: tp.Any) -> None:
        super().__init__()
        self.vqvae = DuinVQ(n_channels, n_subjects, n_times, **kwargs)

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.vqvae(brain, subject_index, mask)


def complementary_masks(batch: int, n_tokens: int, device: torch.device | str | None = None,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two bool masks ``[batch, n_tokens]`` (True = masked): per row the first hides ``n_tokens // 2`` tokens
    drawn at random, the second every other token, so that each token is masked in exactly one view."""
    order = torch.rand(batch, n_tokens, generator=generator).argsort(dim=1)
    first = order < n_tokens // 2
    first = first.to(device) if device is not None else first
    return first, ~first


class DuinMAE(nn.Module):
    """Stage 2 (``duin_mae``): masked code prediction with two complementary views and a frozen ``vqvae``.

    Training draws new masks at each step; in eval mode they come from :attr:`eval_seed`, so that the validation
    loss that selects the best epoch does not depend on the draw. ``vqvae`` holds the keyword arguments of the
    stage-1 tokenizer that differ from this encoder's (e.g. ``n_codes``, ``d_code``, ``decoder_depth``); it must
    match the parent XP that ``chain.modules=[vqvae]`` loads.
    """

    inputs: tuple[str, ...] = ("brain", "subject_index", "mask")
    per_sample = False
    pretraining = True  # its output is not a decoding output (task ``pretraining``)
    data_kwargs: tuple[str, ...] = ("n_channels", "n_times")
    #: seed of the masks in eval mode (validation and test losses are then deterministic)
    eval_seed = 0

    def __init__(self, out_channels: int, n_subjects: int, n_channels: int, n_times: int, d_subject: int = 16,
                 patch: int = 100, depth: int = 8, n_heads: int = 8, d_head: int = 64, d_ff: int = 320,
                 attn_dropout: float = 0.2, ff_dropout: float = 0.2, vqvae: dict | None = None) -> None:
        super().__init__()
        sizes: dict[str, tp.Any] = dict(d_subject=d_subject, patch=patch, depth=depth, n_heads=n_heads,
                                        d_head=d_head, d_ff=d_ff, attn_dropout=attn_dropout, ff_dropout=ff_dropout)
        self.encoder = DuinEncoder(n_channels, n_subjects, n_times, **sizes)
        self.vqvae = DuinVQ(n_channels, n_subjects, n_times, **{**sizes, **(vqvae or {})})
        self.vqvae.requires_grad_(False)  # the targets: never trained here
        dim = self.encoder.tokenizer.d_token
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.empty(dim), std=0.02, a=-0.04, b=0.04))
        self.head = nn.Linear(dim, self.vqvae.codebook.n_codes)

    def train(self, mode: bool = True) -> DuinMAE:
        super().train(mode)
        self.vqvae.eval()  # the frozen tokenizer: no dropout, no codebook update
        return self

    def forward(self, brain: torch.Tensor, subject_index: torch.Tensor,
                mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not bool(self.vqvae.codebook.initialised):
            # an untrained tokenizer gives arbitrary codes: the MAE would learn to predict noise without a word
            raise UntrainedTokenizerError(
                "the Du-IN MAE predicts the codes of a trained VQ-VAE tokenizer, but its tokenizer was never "
                "trained: start from a duin_vqvae XP with chain.parent=<its signature> chain.modules=[vqvae] "
                "chain.freeze=[vqvae] (grids/duin/ chains them)")
        with torch.no_grad():
            codes = self.vqvae.quantize(brain, subject_index, mask)["codes"]
        tokens = self.encoder.tokens(brain, subject_index, mask)
        batch, n_tokens, _ = tokens.shape
        generator = None if self.training else torch.Generator().manual_seed(self.eval_seed)
        first, second = complementary_masks(batch, n_tokens, tokens.device, generator)
        views = torch.cat([first, second])[..., None]
        x = torch.where(views, self.mask_token.to(tokens.dtype), torch.cat([tokens, tokens]))
        logits = self.head(self.encoder.contextualise(x))
        output = torch.where(first[..., None], logits[:batch], logits[batch:])
        return {"output": output, "codes": codes}


__all__ = ["CosineEMACodebook", "DuinMAE", "DuinVQ", "DuinVQVAE", "ReconstructionHead", "UntrainedTokenizerError",
           "complementary_masks"]
