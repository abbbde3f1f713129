"""Regression losses (MSE / L1) between brain-derived estimates and speech features."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class RegressionLoss(nn.Module):
    """Element-wise regression loss averaged over everything: ``kind="mse"`` (default) or ``"l1"``."""

    KINDS = ("mse", "l1")

    def __init__(self, kind: str = "mse") -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown regression loss kind {kind!r}; valid: {list(self.KINDS)}")
        self.kind = kind

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss between ``estimate`` and ``target`` of the same shape."""
        if estimate.shape != target.shape:
            raise ValueError(f"estimate and target shapes differ: {tuple(estimate.shape)} vs {tuple(target.shape)}")
        if self.kind == "mse":
            return F.mse_loss(estimate, target)
        return F.l1_loss(estimate, target)

    def scores(self, estimate: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Negative mean distance of each estimate ``[B, ...]`` to each candidate ``[O, ...]``: ``[B, O]``.

        Gives regression models the same ranking interface as ``ClipLoss.scores`` for retrieval metrics.
        """
        est, cand = estimate.flatten(1), candidates.flatten(1)
        if est.shape[1] != cand.shape[1]:
            raise ValueError(f"estimate and candidates differ in size: {tuple(estimate.shape)} vs "
                             f"{tuple(candidates.shape)}")
        if self.kind == "mse":
            # ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2 without materialising a [B, O, D] difference tensor.
            dist = (est.pow(2).sum(1)[:, None] - 2 * est @ cand.T + cand.pow(2).sum(1)[None, :]).clamp(min=0)
        else:
            dist = torch.cdist(est[None], cand[None], p=1)[0]
        return -dist / est.shape[1]
