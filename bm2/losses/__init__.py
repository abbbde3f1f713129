"""Training losses: a name -> class registry and a builder."""

from __future__ import annotations

from typing import Any

from torch import nn

from .clip import ClipLoss
from .regression import RegressionLoss

LOSSES: dict[str, type[nn.Module]] = {"clip": ClipLoss, "mse": RegressionLoss}

__all__ = ["LOSSES", "ClipLoss", "RegressionLoss", "build_loss"]


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate registered loss ``name`` with ``kwargs`` (unknown name: error listing valid names)."""
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}; valid names: {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
