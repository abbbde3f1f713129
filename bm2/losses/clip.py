"""Contrastive (CLIP-style) loss between brain-derived estimates and speech-feature candidates."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .. import distrib


def _normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Divide each item of ``x[N, C, T]`` by ``eps + `` its L2 norm over channels and time jointly."""
    norm = x.flatten(1).norm(dim=1)
    return x / (eps + norm)[:, None, None]


class ClipLoss(nn.Module):
    """CLIP loss as published: scores ``<est_b, cand_o> / ||cand_o||``, cross-entropy against the diagonal.

    Defaults reproduce the paper (brain->speech direction, no temperature, only candidates normalised).
    ``symmetric`` averages with the speech->brain direction, ``learn_temperature`` multiplies the scores by
    a learned ``exp(log_scale)`` (starting at 1), ``normalize_estimate`` also L2-normalises the estimates.

    ``gather_candidates``: under distributed training, negatives are by default the other items of the
    same per-process batch (as published), so the objective depends on the number of GPUs. With this
    option, candidates (and estimates, for the symmetric term) of all processes are gathered, each process
    scores its local estimates against the whole global batch, and gradients flow back to the process
    that owns each item: the objective no longer depends on the world size.
    """

    def __init__(self, symmetric: bool = False, learn_temperature: bool = False,
                 normalize_estimate: bool = False, eps: float = 1e-8, max_scale: float = 100.0,
                 gather_candidates: bool = False) -> None:
        super().__init__()
        self.gather_candidates = gather_candidates
        self.symmetric = symmetric
        self.normalize_estimate = normalize_estimate
        self.eps = eps
        self.max_scale = max_scale
        # log(1) = 0: with a learned temperature, training starts exactly from the published loss.
        self.log_scale = nn.Parameter(torch.zeros(())) if learn_temperature else None

    def scores(self, estimate: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Score every estimate ``[B, C, T]`` against every candidate ``[O, C, T]``: returns ``[B, O]``.

        Each candidate is normalised on its own, so scoring candidates in chunks and concatenating the
        columns gives exactly the same result as scoring them all at once (useful at evaluation).
        """
        if estimate.dim() != 3 or candidates.dim() != 3 or estimate.shape[1:] != candidates.shape[1:]:
            raise ValueError(f"estimate [B, C, T] and candidates [O, C, T] must share C and T, got "
                             f"{tuple(estimate.shape)} and {tuple(candidates.shape)}")
        candidates = _normalise(candidates, self.eps)
        if self.normalize_estimate:
            estimate = _normalise(estimate, self.eps)
        # Flatten (C, T) into one axis: a single matmul instead of an einsum over two dims.
        scores = estimate.flatten(1) @ candidates.flatten(1).T
        if self.log_scale is not None:
            # Clamp as in CLIP so the learned scale cannot blow up and destabilise training.
            scores = scores * self.log_scale.clamp(max=math.log(self.max_scale)).exp()
        return scores

    def forward(self, estimate: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy where candidate ``b`` is the right match of estimate ``b`` (needs O == B)."""
        if estimate.shape[0] != candidates.shape[0]:
            raise ValueError(f"forward needs as many candidates as estimates, got {estimate.shape[0]} and "
                             f"{candidates.shape[0]}; use scores() to rank against other candidates")
        offset = 0
        all_estimates = estimate
        if self.gather_candidates and distrib.is_distributed():
            offset = distrib.rank() * estimate.shape[0]
            candidates = distrib.all_gather_with_grad(candidates)
            if self.symmetric:
                all_estimates = distrib.all_gather_with_grad(estimate)
        scores = self.scores(estimate, candidates)  # local rows against every candidate
        target = torch.arange(scores.shape[0], device=scores.device) + offset
        loss = F.cross_entropy(scores, target)
        if self.symmetric:
            # Speech->brain: each local candidate picks its estimate among the (global) batch.
            local = candidates[offset:offset + estimate.shape[0]]
            reverse = self.scores(all_estimates, local).T
            loss = 0.5 * (loss + F.cross_entropy(reverse, target))
        return loss
