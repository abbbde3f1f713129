"""InfoNCE to a learnable class codebook (Lee et al. 2024), from the description of the released code.

The model gives the CLS embedding ``z`` and the codebook ``e [K, D]`` (:class:`bm2.models.inr.INRDecoder`). With
cosines ``s_j = cos(z, e_j) / tau`` (``tau`` = 1, fixed, as the original's ``FixedCosineInfoNCE``) and the label y,
the cosine InfoNCE ``-s_y + log sum_j exp(s_j)`` is split as the original splits it:

- ``align`` = ``-s_y``;
- ``uniform`` = ``logsumexp_{j != y} s_j`` (the denominator leaves the positive out);
- ``codebook_uniform`` = ``logsumexp_{j != y} cos(e_y, e_j) / tau``: the original's "reverse" term, which only
  spreads the codebook apart (it is not a codebook -> brain InfoNCE).

Each is a class-balanced mean over the batch (:func:`class_balanced_weights`, beta 0.999, weights of the labels).
``decorrelation`` is the mean ``|cos(e_i, e_j)|`` over the ``K x K`` matrix with its diagonal zeroed.

Warm-up (epochs ``<= warmup_epochs``, 10; bm2 counts epochs from 1): the codebook takes gradients **only** from
``decorrelation`` (the InfoNCE terms see a detached codebook) while the encoder trains on the InfoNCE terms; the
training loss is ``align + uniform + codebook_uniform + decorrelation``. After it: ``align + uniform +
codebook_uniform``, and ``decorrelation`` is only logged. ``accuracy`` (top-1 by cosine) is logged.
The solver tells the epoch through :meth:`CodebookInfoNCE.set_epoch` and the training class counts through
:meth:`CodebookInfoNCE.set_class_counts` (the builder).
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch
from torch.nn import functional as F

from ..targets import UNKNOWN
from . import OBJECTIVES, Objective


def class_balanced_weights(counts: tp.Sequence[int] | np.ndarray, beta: float = 0.999) -> torch.Tensor:
    """Class weights from the effective number of samples (Cui et al. 2019): ``w_c = (1 - beta) / (1 - beta ** n_c)``,
    normalised to sum to the number of classes. A class without samples counts as one (its weight stays finite).

    Raises ``ValueError`` for ``beta`` outside [0, 1) or an empty ``counts``.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(np.asarray(counts, dtype=np.float64)).clamp(min=1)
    if n.numel() == 0:
        raise ValueError("class-balanced weights need at least one class")
    weights = (1 - beta) / (1 - beta ** n) if beta > 0 else torch.ones_like(n)
    return (weights / weights.sum() * len(n)).float()


def _logsumexp_others(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``logsumexp_{j != label} scores[:, j]`` per row (``scores [B, K]``)."""
    own = F.one_hot(label, scores.shape[1]).bool()
    return torch.logsumexp(scores.masked_fill(own, float("-inf")), dim=1)


class CodebookInfoNCE(Objective):
    """Cosine InfoNCE of the CLS embedding to a class codebook with class-balanced weights (module docstring).

    Parameters
    ----------
    tau : temperature (1.0, fixed).
    beta : class-balanced beta (0.999).
    warmup_epochs : epochs during which the codebook learns only from ``decorrelation`` (10).
    weights : term weights (``align``, ``uniform``, ``codebook_uniform`` 1; ``decorrelation`` counted in warm-up
        only; ``accuracy`` logged).
    """

    terms = ("align", "uniform", "codebook_uniform", "decorrelation", "accuracy")

    def __init__(self, tau: float = 1.0, beta: float = 0.999, warmup_epochs: int = 10,
                 weights: dict[str, float] | None = None) -> None:
        given = dict(weights or {})
        super().__init__({"uniform": 1.0, "codebook_uniform": 1.0, **given})
        if tau <= 0:
            raise ValueError(f"loss.codebook.tau must be > 0, got {tau}")
        self.tau, self.beta, self.warmup_epochs = float(tau), float(beta), int(warmup_epochs)
        self.decorrelation_weight = float(given.get("decorrelation", 1.0))
        self.epoch = 1
        self.class_weights: torch.Tensor | None = None

    def set_class_counts(self, counts: tp.Sequence[int] | np.ndarray) -> None:
        """Training windows per class (vocabulary order): sets the class-balanced weights."""
        self.class_weights = class_balanced_weights(counts, self.beta)

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to run (1-based); warm-up while ``epoch <= warmup_epochs``."""
        self.epoch = int(epoch)

    @property
    def warming_up(self) -> bool:
        """Whether the codebook learns only from the decorrelation loss now."""
        return self.epoch <= self.warmup_epochs

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted InfoNCE terms, plus ``decorrelation`` during warm-up only."""
        loss = sum((self.weights[k] * terms[k] for k in ("align", "uniform", "codebook_uniform")),
                   terms["align"].new_zeros(()))
        if self.warming_up:
            loss = loss + self.decorrelation_weight * terms["decorrelation"]
        return loss

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        codebook = F.normalize(outputs["codebook"].float(), dim=-1)
        sim = codebook @ codebook.T
        decorrelation = (sim - torch.diag_embed(torch.diagonal(sim))).abs().mean()
        used = codebook.detach() if self.warming_up else codebook
        z = F.normalize(outputs["embedding"].float(), dim=-1)
        label = batch["label"].to(z.device)
        known = label != UNKNOWN
        z, label = z[known], label[known]
        if not len(label):
            zero = z.sum() * 0.0 + used.sum() * 0.0
            return {"align": zero, "uniform": zero, "codebook_uniform": zero, "decorrelation": decorrelation,
                    "accuracy": zero.detach()}
        n_classes = len(codebook)
        if self.class_weights is None:
            weights = torch.ones(n_classes, device=z.device)
        elif len(self.class_weights) != n_classes:
            raise ValueError(f"{len(self.class_weights)} class weights (set_class_counts) for a codebook of "
                             f"{n_classes} entries")
        else:
            weights = self.class_weights.to(z.device)
        w = weights[label]
        scores = z @ used.T / self.tau  # [B, K]
        align = -scores.gather(1, label[:, None])[:, 0]
        uniform = _logsumexp_others(scores, label)
        code_scores = used[label] @ used.T / self.tau
        codebook_uniform = _logsumexp_others(code_scores, label)
        accuracy = (scores.argmax(dim=1) == label).float().mean()
        return {"align": (w * align).mean(), "uniform": (w * uniform).mean(),
                "codebook_uniform": (w * codebook_uniform).mean(), "decorrelation": decorrelation,
                "accuracy": accuracy.detach()}


OBJECTIVES["codebook"] = CodebookInfoNCE

__all__ = ["CodebookInfoNCE", "class_balanced_weights"]
