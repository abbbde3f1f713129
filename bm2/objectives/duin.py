"""Du-IN's pre-training objectives (:mod:`bm2.models.duin_vq`).

``duin_vqvae`` (stage 1): ``reconstruction``, the mean squared error between the model's reconstruction
``output [B, C, T']`` and ``batch["brain"][..., :T']`` (the scaled signal the model read) over the channels present
(``batch["mask"]``), plus ``commitment`` (weight 1: beta), ``perplexity`` and ``dead_codes`` (weight 0, logged).

``duin_mae`` (stage 2): ``cross_entropy`` between the logits ``output [B, N, n_codes]`` and the frozen tokenizer's
codes ``codes [B, N]`` over every token, and ``accuracy`` (weight 0, logged).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from . import OBJECTIVES, OUTPUT, Objective


def masked_mse(output: torch.Tensor, brain: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of ``output [B, C, T']`` against ``brain[..., :T']`` over channels where ``mask``
    ``[B, C]`` is True (all when None)."""
    target = brain[..., :output.shape[-1]].to(output.device, output.dtype)
    if target.shape != output.shape:
        raise ValueError(f"reconstruction {tuple(output.shape)} does not fit the brain signal {tuple(brain.shape)}")
    error = (output - target).pow(2).mean(dim=-1)  # [B, C]
    if mask is None:
        return error.mean()
    weight = mask.to(output.device, output.dtype)
    return (error * weight).sum() / weight.sum().clamp(min=1.0)


class DuinVQVAEObjective(Objective):
    """Stage 1: masked reconstruction MSE + beta x commitment (beta: ``loss.weights.commitment``, 1)."""

    terms = ("reconstruction", "commitment", "perplexity", "dead_codes")

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__({"commitment": 1.0, **(weights or {})})

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output = outputs[OUTPUT].float()
        return {"reconstruction": masked_mse(output, batch["brain"], batch.get("mask")),
                "commitment": outputs["commitment"].float(),
                "perplexity": outputs["perplexity"].detach().float(),
                "dead_codes": outputs["dead_codes"].detach().float()}


class DuinMAEObjective(Objective):
    """Stage 2: cross-entropy of every token's logits against its code from the frozen tokenizer."""

    terms = ("cross_entropy", "accuracy")

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = outputs[OUTPUT].float()
        codes = outputs["codes"].to(logits.device).long()
        flat = logits.reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, codes.reshape(-1))
        accuracy = (flat.argmax(dim=1) == codes.reshape(-1)).float().mean()
        return {"cross_entropy": loss, "accuracy": accuracy.detach()}


OBJECTIVES.update(duin_vqvae=DuinVQVAEObjective, duin_mae=DuinMAEObjective)

__all__ = ["DuinMAEObjective", "DuinVQVAEObjective", "masked_mse"]
