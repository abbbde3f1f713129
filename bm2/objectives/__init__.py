"""Objectives: ``(batch, outputs) -> named loss terms``, summed with weights by the solver.

An objective is an ``nn.Module`` (it may hold parameters, e.g. CLIP's learned temperature) whose ``forward``
returns a dict of scalar terms; :attr:`Objective.weights` gives each term's weight in the training loss. A
weight of 0 means the term is computed and logged but not trained on. Every term is computed in float32, whatever
the autocast precision of the model's forward.

Registered objectives (``loss.name``): ``clip`` and ``mse`` (dense features: brainmagick), ``cross_entropy``
(a class per window), ``bce`` (speech / silence per sample), ``nsd_a2a`` / ``nsd_e2a`` (Neural Speech Decoding).
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..losses import ClipLoss, RegressionLoss
from ..targets import UNKNOWN

OUTPUT = "output"


def class_logits(output: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` class logits from a model output ``[B, K]`` or ``[B, K, T]`` (averaged over time: global
    average pooling of per-time logits, so a sequence encoder such as SimpleConv becomes a classifier)."""
    if output.dim() == 3:
        return output.mean(dim=-1)
    if output.dim() != 2:
        raise ValueError(f"class logits must be [B, K] or [B, K, T], got shape {tuple(output.shape)}")
    return output


def sample_logits(output: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` per-sample logits from a model output ``[B, T]`` or ``[B, 1, T]``."""
    if output.dim() == 3 and output.shape[1] == 1:
        return output[:, 0]
    if output.dim() != 2:
        raise ValueError(f"per-sample logits must be [B, T] or [B, 1, T], got shape {tuple(output.shape)}")
    return output


class Objective(nn.Module):
    """Base class: ``forward(batch, outputs)`` returns named scalar terms; ``weights`` weighs them.

    ``terms`` is the list of term names (the first is the main one, weight 1 unless overridden).
    """

    terms: tp.ClassVar[tuple[str, ...]] = ("loss",)

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        super().__init__()
        unknown = sorted(set(weights or {}) - set(self.terms))
        if unknown:
            raise KeyError(f"{type(self).__name__} has terms {list(self.terms)}; unknown weights for {unknown}")
        self.weights = {name: 1.0 if i == 0 else 0.0 for i, name in enumerate(self.terms)}
        self.weights.update({k: float(v) for k, v in (weights or {}).items()})

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss: ``sum(weight * term)`` over terms with a non-zero weight."""
        trained = [self.weights[k] * v for k, v in terms.items() if self.weights.get(k, 0.0)]
        if not trained:
            raise ValueError(f"every term of {type(self).__name__} has weight 0: nothing to train")
        return torch.stack(trained).sum()


class TermMeans:
    """Window-weighted means of an objective's ``loss`` (its weighted total) and terms over batches (validation, the
    pre-training task's test metrics). ``every_term=False`` keeps ``loss`` alone for one-term objectives."""

    def __init__(self, objective: Objective, every_term: bool = True) -> None:
        self.objective, self.every_term = objective, every_term
        self.sums: dict[str, float] = {}
        self.count = 0

    def update(self, terms: dict[str, torch.Tensor], n: int) -> None:
        """Add the terms of a batch of ``n`` windows."""
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(self.objective.total(terms)) * n
        if self.every_term or len(terms) > 1:
            for name, value in terms.items():
                self.sums[name] = self.sums.get(name, 0.0) + float(value) * n
        self.count += n

    def compute(self) -> dict[str, float]:
        """The means (over windows) of everything added."""
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class FeatureObjective(Objective):
    """A dense-feature loss (:class:`bm2.losses.ClipLoss` or :class:`bm2.losses.RegressionLoss`) between the model
    output ``[B, D, T]`` and ``batch["features"]``; term ``clip`` or ``mse``. ``scores`` is the CLIP scorer used
    by retrieval (absent for MSE)."""

    def __init__(self, name: str, loss: nn.Module, weights: dict[str, float] | None = None) -> None:
        self.terms = (name,)  # type: ignore[misc]
        super().__init__(weights)
        self.loss = loss

    def scores(self, estimate: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """The loss's ``[B, O]`` retrieval scores of estimates ``[B, D, T]`` against candidates ``[O, D, T]``."""
        return tp.cast(tp.Any, self.loss).scores(estimate, candidates)

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = batch["features"].to(outputs[OUTPUT].device)
        return {self.terms[0]: self.loss(outputs[OUTPUT].float(), features)}


class CrossEntropyObjective(Objective):
    """Cross-entropy between class logits (:func:`class_logits`) and ``batch["label"]``; labels -1 are ignored.

    ``label_smoothing`` as in :func:`torch.nn.functional.cross_entropy`; term ``cross_entropy``, plus ``accuracy``
    (weight 0: logged only).
    """

    terms = ("cross_entropy", "accuracy")

    def __init__(self, label_smoothing: float = 0.0, weights: dict[str, float] | None = None) -> None:
        super().__init__(weights)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = class_logits(outputs[OUTPUT].float())
        label = batch["label"].to(logits.device)
        known = label != UNKNOWN
        if not known.any():  # a batch of unseen labels only: a zero that keeps the graph
            return {"cross_entropy": logits.sum() * 0.0, "accuracy": logits.new_zeros(())}
        loss = F.cross_entropy(logits, label, ignore_index=UNKNOWN, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(dim=1)[known] == label[known]).float().mean()
        return {"cross_entropy": loss, "accuracy": accuracy.detach()}


class BCEObjective(Objective):
    """Binary cross-entropy between per-sample logits (:func:`sample_logits`) and ``batch["speech"]`` (0 / 1).

    ``pos_weight`` weighs speech samples (e.g. the silence / speech ratio of an unbalanced set); term ``bce``.
    """

    terms = ("bce",)

    def __init__(self, pos_weight: float | None = None, weights: dict[str, float] | None = None) -> None:
        super().__init__(weights)
        self.pos_weight = pos_weight

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = sample_logits(outputs[OUTPUT].float())
        target = batch["speech"].to(logits.device).float()
        if target.shape != logits.shape:
            raise ValueError(f"per-sample logits {tuple(logits.shape)} and speech target {tuple(target.shape)} "
                             "differ: the model must keep the time length")
        pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        return {"bce": F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)}


def build_objective(name: str, weights: dict[str, float] | None = None, **kwargs: tp.Any) -> Objective:
    """The objective registered as ``name`` with its keyword arguments; the error lists the valid names."""
    if name == "clip":
        return FeatureObjective("clip", ClipLoss(**kwargs), weights)
    if name == "mse":
        return FeatureObjective("mse", RegressionLoss(**kwargs), weights)
    if name in OBJECTIVES:
        return OBJECTIVES[name](weights=weights, **kwargs)
    raise KeyError(f"unknown loss {name!r}; valid names: {sorted(['clip', 'mse', *OBJECTIVES])}")


OBJECTIVES: dict[str, type[Objective]] = {"cross_entropy": CrossEntropyObjective, "bce": BCEObjective}

__all__ = ["BCEObjective", "CrossEntropyObjective", "FeatureObjective", "OBJECTIVES", "Objective", "build_objective",
           "class_logits", "sample_logits"]

from .demega import DeMEGaObjective  # noqa: E402  (it imports the names above)

OBJECTIVES["demega"] = DeMEGaObjective
from . import duin as _duin  # noqa: E402,F401  (registers duin_vqvae and duin_mae)
from . import codebook as _codebook  # noqa: E402,F401  (registers codebook)
from . import nsd as _nsd  # noqa: E402,F401  (registers nsd_a2a and nsd_e2a)
