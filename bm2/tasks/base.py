"""What every decoding task shares: the batch spec, how a model is called on a batch, and the Task interface.

The batch (one dict for every task; :func:`bm2.data.collate` builds it)
------------------------------------------------------------------------
``brain``          float ``[B, C, T]``, or ``[B, C, F, T]`` for time-frequency inputs (e.g. superlet spectra)
``mask``           bool ``[B, C]``, True where a sensor is present (montages of a batch are padded to the largest)
``positions``      float ``[B, C, 2]``, sensor layout positions in [0, 1]
``subject_index``  long ``[B]``, the subject's index among the XP's subjects
``index``          long ``[B]``, row of the split's ``segments`` table
and the targets the task asks for (:attr:`Task.targets`):
``features``       float ``[B, D, T']``, dense speech features (retrieval, reconstruction)
``label``          long ``[B]``, class id of the window's anchor event (classification; vocabulary from training)
``speech``         float ``[B, T']``, 1 where speech is heard at that brain sample, else 0 (detection)

Models
------
A model declares the batch keys its ``forward`` takes as keyword arguments in a class attribute ``inputs``
(default :data:`DEFAULT_INPUTS`), and returns a tensor or a dict of named tensors; :func:`run_model` calls it
and always returns a dict (a tensor becomes ``{"output": tensor}``).
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import torch

DEFAULT_INPUTS = ("brain", "subject_index", "positions", "mask")
OUTPUT = "output"


def model_inputs(model: torch.nn.Module) -> tuple[str, ...]:
    """The batch keys ``model.forward`` takes (its ``inputs`` attribute; DDP wrappers are looked through)."""
    inner = getattr(model, "module", model)
    return tuple(getattr(inner, "inputs", DEFAULT_INPUTS))


def run_model(model: torch.nn.Module, batch: dict[str, torch.Tensor],
              device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """Call ``model`` with the batch keys it declares (moved to ``device``); returns named outputs.

    Raises ``KeyError`` naming the missing key when the batch lacks an input the model declares.
    """
    kwargs = {}
    for key in model_inputs(model):
        if key not in batch:
            raise KeyError(f"{type(getattr(model, 'module', model)).__name__} takes {key!r} but the batch has only "
                           f"{sorted(batch)}")
        value = batch[key]
        kwargs[key] = value.to(device) if device is not None and isinstance(value, torch.Tensor) else value
    out = model(**kwargs)
    if isinstance(out, torch.Tensor):
        return {OUTPUT: out}
    if not isinstance(out, dict):
        raise TypeError(f"a model must return a tensor or a dict of tensors, got {type(out).__name__}")
    return out


class TaskResult(tp.Protocol):
    """What :meth:`Task.evaluate` returns: headline ``metrics`` and a ``save`` that writes per-item outputs."""

    metrics: dict[str, float]

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write per-item outputs and ``summary.json`` (with ``task``, ``meta``, ``metrics``) into ``folder``."""


class Task:
    """A task family: which targets its batches carry, how a trained model is scored, and its headline metrics.

    Subclasses set :attr:`name`, :attr:`targets` (batch keys the dataset must provide), :attr:`headline`
    (metrics shown in tables), :attr:`best` (default ``(metric, "min" | "max")`` used to select the best
    epoch when the configuration does not choose) and implement :meth:`evaluate` and :meth:`table`.
    """

    name: tp.ClassVar[str]
    targets: tp.ClassVar[tuple[str, ...]] = ()
    headline: tp.ClassVar[tuple[str, ...]] = ()
    best: tp.ClassVar[tuple[str, str]] = ("loss", "min")

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, **kwargs: tp.Any) -> TaskResult:
        """Evaluate ``model`` on ``dataset`` (a split); returns a result with ``metrics`` and ``save``."""
        raise NotImplementedError

    def table(self, metrics: dict[str, float]) -> str:
        """A markdown table of the headline test metrics next to their chance levels."""
        raise NotImplementedError
