"""DeMEGa's multi-task objective (``loss.name=demega``), rebuilt from a written description (ANCHORS_WAVE2 §1.3;
the original code is CC BY-NC and was not used).

Terms (weights by default in brackets; ``loss.weights`` overrides them):
- ``classification`` [1]: ``focal_mix * focal + (1 - focal_mix) * cross_entropy`` (0.8 / 0.2), where
- ``focal`` [0, logged]: class-balanced focal loss (:func:`focal_loss`), gamma 2, smoothed targets (1 - eps on the
  true class, eps / (K - 1) on the others, eps 0.12), per-sample losses averaged within each true class, then over
  the classes present in the batch;
- ``cross_entropy`` [0, logged]: :func:`torch.nn.functional.cross_entropy` with ``label_smoothing`` eps (PyTorch
  spreads eps / K over every class);
- ``supcon`` [0.5]: supervised contrastive loss (:func:`supcon_loss`, tau 0.03) on ``outputs["projection"]``;
- ``ipa`` [0.2]: BCE-with-logits of ``outputs["ipa"]`` against the 14 phonological features of the true class
  (:mod:`bm2.objectives.ipa`; the class names come from the label vocabulary, see :meth:`set_vocabulary`);
- ``accuracy`` [0, logged].
Windows labelled -1 (a class outside the training vocabulary) are left out of every term. Differences from the
description of the original: validation reports the weighted total (the original validated on the
classification term only; bm2 selects the best epoch on validation F1-macro anyway), and SupCon is computed on
each process' batch (no gathering across processes).
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch.nn import functional as F

from ..targets import UNKNOWN
from . import OUTPUT, Objective, class_logits
from .ipa import IPA_CLASSES, ipa_targets


def focal_loss(logits: torch.Tensor, label: torch.Tensor, gamma: float = 2.0, smoothing: float = 0.0,
               class_balanced: bool = True, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss of ``logits [B, K]`` against class ids ``label [B]`` (all valid).

    Per sample ``-sum_j t_j * alpha_j * (1 - p_j) ** gamma * log p_j`` with ``p = softmax`` clamped to
    ``[1e-8, 1 - 1e-8]`` and targets ``t`` = 1 - smoothing on the true class, smoothing / (K - 1) elsewhere.
    ``class_balanced``: mean within each true class, then mean over the classes present; else the plain mean.
    """
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1).clamp(1e-8, 1 - 1e-8)
    target = torch.full_like(probs, smoothing / max(n_classes - 1, 1))
    target.scatter_(1, label[:, None], 1.0 - smoothing)
    weight = (1 - probs) ** gamma
    if alpha is not None:
        weight = weight * alpha.to(probs)[None]
    per_sample = -(target * weight * probs.log()).sum(dim=1)
    if not class_balanced:
        return per_sample.mean()
    sums = per_sample.new_zeros(n_classes).index_add(0, label, per_sample)
    counts = per_sample.new_zeros(n_classes).index_add(0, label, torch.ones_like(per_sample))
    present = counts > 0
    return (sums[present] / counts[present]).mean()


def supcon_loss(projection: torch.Tensor, label: torch.Tensor, tau: float = 0.03) -> torch.Tensor:
    """Supervised NT-Xent on L2-normalised ``projection [B, D]``: for each anchor with at least one positive
    (another item of its class), ``-log(sum_pos exp(s / tau) / sum_{k != anchor} exp(s / tau))`` with ``s`` the
    cosine similarity; the mean over those anchors (0, keeping the graph, when no anchor has a positive)."""
    z = F.normalize(projection.float(), dim=1)
    sim = z @ z.T / tau
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    positive = (label[:, None] == label[None, :]) & ~eye
    has_positive = positive.any(dim=1)
    if not has_positive.any():
        return projection.sum() * 0.0
    others = sim.masked_fill(eye, -math.inf)
    numerator = torch.logsumexp(sim.masked_fill(~positive, -math.inf), dim=1)
    loss = torch.logsumexp(others, dim=1) - numerator
    return loss[has_positive].mean()


class DeMEGaObjective(Objective):
    """The weighted multi-task loss of the module docstring, on a model returning ``output``, ``ipa`` and
    ``projection`` (:class:`bm2.models.demega.DeMEGa`).

    Args:
        gamma, smoothing, focal_mix, class_balanced: the focal / cross-entropy classification term.
        tau: SupCon temperature.
        classes: ARPABET class name of each label id (the IPA targets); None: the 39 classes in
            :data:`bm2.objectives.ipa.IPA_CLASSES` order. The solver's builder replaces it with the training
            vocabulary through :meth:`set_vocabulary`.
        weights: term weights over the defaults ``classification 1, supcon 0.5, ipa 0.2``.
    """

    terms = ("classification", "supcon", "ipa", "focal", "cross_entropy", "accuracy")
    ipa_table: torch.Tensor
    DEFAULT_WEIGHTS: tp.ClassVar[dict[str, float]] = {"classification": 1.0, "supcon": 0.5, "ipa": 0.2}

    def __init__(self, gamma: float = 2.0, smoothing: float = 0.12, focal_mix: float = 0.8,
                 class_balanced: bool = True, tau: float = 0.03, classes: list[str] | None = None,
                 weights: dict[str, float] | None = None) -> None:
        super().__init__({**self.DEFAULT_WEIGHTS, **(weights or {})})
        if not 0.0 <= focal_mix <= 1.0:
            raise ValueError(f"focal_mix must be in [0, 1], got {focal_mix}")
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.gamma, self.smoothing, self.focal_mix = gamma, smoothing, focal_mix
        self.class_balanced, self.tau = class_balanced, tau
        self.register_buffer("ipa_table", torch.empty(0, 14), persistent=False)
        self.set_vocabulary(list(classes) if classes is not None else list(IPA_CLASSES))

    def set_vocabulary(self, classes: tp.Sequence[str]) -> None:
        """Use ARPABET ``classes`` (label id -> name) for the IPA targets; ``ValueError`` for unknown names."""
        self.classes = [str(c) for c in classes]
        self.ipa_table = torch.from_numpy(ipa_targets(self.classes)).to(self.ipa_table.device)

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = class_logits(outputs[OUTPUT].float())
        if logits.shape[1] != len(self.ipa_table):
            raise ValueError(f"{logits.shape[1]} class logits but {len(self.ipa_table)} IPA rows: the objective's "
                             "classes must be the label vocabulary (set_vocabulary)")
        label = batch["label"].to(logits.device)
        known = label != UNKNOWN
        if not known.any():  # a batch of unseen labels only: zeros that keep the graph
            zero = logits.sum() * 0.0
            return {name: zero for name in self.terms}
        logits, label = logits[known], label[known]
        focal = focal_loss(logits, label, self.gamma, self.smoothing, self.class_balanced)
        ce = F.cross_entropy(logits, label, label_smoothing=self.smoothing)
        terms = {"classification": self.focal_mix * focal + (1 - self.focal_mix) * ce}
        terms["supcon"] = supcon_loss(outputs["projection"][known], label, self.tau)
        terms["ipa"] = F.binary_cross_entropy_with_logits(outputs["ipa"][known].float(), self.ipa_table[label])
        terms.update(focal=focal.detach(), cross_entropy=ce.detach(),
                     accuracy=(logits.argmax(dim=1) == label).float().mean().detach())
        return terms
