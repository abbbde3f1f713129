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

Evaluation
----------
:meth:`Task.evaluate` scores a model on a split and returns a result whose ``save`` writes per-item outputs and
``summary.json`` (``task``, ``meta``, ``metrics``, ``groups``) atomically. ``evaluate(..., quick=True)`` runs the
same pass but keeps only the cheap metrics and writes nothing (for the validation stage); a solver that already
runs the model on its validation batches feeds them to :meth:`Task.accumulator` instead, at no extra cost.
"""

from __future__ import annotations

import json
import os
import typing as tp
from pathlib import Path

import numpy as np
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


def atomic_write(path: str | Path, write: tp.Callable[[tp.BinaryIO], object]) -> None:
    """Write ``path`` through ``write(binary file)`` into a temporary file renamed into place (no torn file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: two writers never share a temporary
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind


def write_probs(folder: str | Path, probs: np.ndarray | None) -> None:
    """Write ``probs.npy`` (float32) atomically when ``probs`` is given, else remove an older one (it would not
    match the items written next to it)."""
    if probs is None:
        (Path(folder) / "probs.npy").unlink(missing_ok=True)
        return
    values = probs.astype(np.float32)
    atomic_write(Path(folder) / "probs.npy", lambda f: np.save(f, values))


def write_summary(folder: str | Path, task: str, meta: dict[str, tp.Any] | None, metrics: dict[str, float],
                  groups: dict[str, tp.Any]) -> None:
    """Write ``summary.json`` (``task``, ``meta``, ``metrics``, ``groups``) atomically (NaN as ``NaN``, like
    Python's json module, which reads it back)."""
    summary = {"task": task, "meta": meta or {}, "metrics": metrics, "groups": groups}
    atomic_write(Path(folder) / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))


def model_outputs(model: torch.nn.Module, dataset: tp.Any, batch_size: int = 128,
                  device: str | torch.device = "cpu", num_workers: int = 0, runner: tp.Callable | None = None
                  ) -> tp.Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """``(batch, outputs)`` for every batch of ``dataset`` in order, the model in eval mode without gradients.

    ``runner(model, batch, device)`` replaces :func:`run_model` (e.g. :class:`bm2.tasks.inference.InferenceAddOns`:
    denoising, test-time augmentation). The model's train / eval mode is restored when the iteration ends (or is
    abandoned).
    """
    from ..data import collate

    if len(dataset) == 0:
        raise ValueError("the split is empty: nothing to evaluate (check dset.split and the selections)")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                                         num_workers=num_workers)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                yield batch, (runner or run_model)(model, batch, device)
    finally:
        model.train(was_training)


class Accumulator(tp.Protocol):
    """Streaming metrics: fed ``(batch, outputs)`` batch by batch, then :meth:`compute` gives the metrics."""

    def update(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Add one batch (outputs may be on any device and in any float dtype)."""

    def compute(self) -> dict[str, float]:
        """The metrics of everything added so far."""


class QuickResult:
    """The result of ``evaluate(..., quick=True)``: metrics only, nothing to save."""

    def __init__(self, task: str, metrics: dict[str, float]) -> None:
        self.task = task
        self.metrics = metrics

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Always fails: a quick evaluation keeps no per-item outputs."""
        raise ValueError(f"a quick {self.task} evaluation has no per-item outputs to save: evaluate with "
                         "quick=False")


class TaskResult(tp.Protocol):
    """What :meth:`Task.evaluate` returns: the ``task`` name, ``metrics`` and a ``save`` that writes per-item
    outputs."""

    metrics: dict[str, float]

    @property
    def task(self) -> str:
        """The task's name (the ``task`` of ``summary.json``)."""

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write per-item outputs and ``summary.json`` (with ``task``, ``meta``, ``metrics``) into ``folder``."""


class Task:
    """A task family: which targets its batches carry, how a trained model is scored, and its headline metrics.

    Subclasses set :attr:`name`, :attr:`targets` (batch keys the dataset must provide), :attr:`headline`
    (metrics shown in tables; :attr:`main_metric`, the first by default, is the one of the main results
    table), :attr:`best` (default ``(metric, "min" | "max")`` used to select the best epoch when the
    configuration does not choose) and implement :meth:`evaluate` and :meth:`table`; tasks with cheap
    validation metrics also implement :meth:`accumulator`.
    """

    name: tp.ClassVar[str]
    # Whether the task needs an output per brain sample ([B, D, T]); window classifiers ([B, K]) cannot serve it.
    per_sample: tp.ClassVar[bool] = True
    # Validation metrics the best epoch can be selected on (besides ``loss`` and the objective's terms).
    valid_metrics: tp.ClassVar[tuple[str, ...]] = ()

    def selection_metrics(self, ks: tp.Sequence[int] = (1, 5, 10)) -> tuple[str, ...]:
        """Names ``optim.best_metric`` may take for this task (``ks``: the configured top-k)."""
        return self.valid_metrics

    targets: tp.ClassVar[tuple[str, ...]] = ()
    headline: tp.ClassVar[tuple[str, ...]] = ()
    best: tp.ClassVar[tuple[str, str]] = ("loss", "min")

    #: the metric of the main results table (``scripts.make_tables``' default); empty: the first headline metric
    main_metric: tp.ClassVar[str] = ""

    def accumulator(self, dataset: tp.Any, **kwargs: tp.Any) -> Accumulator:
        """A streaming accumulator of this task's cheap metrics over batches of ``dataset``."""
        raise NotImplementedError(f"the {self.name} task has no streaming validation metrics")

    def quick_metrics(self, model: torch.nn.Module, dataset: tp.Any, batch_size: int = 128,
                      device: str | torch.device = "cpu", num_workers: int = 0, **kwargs: tp.Any
                      ) -> dict[str, float]:
        """The :meth:`accumulator` metrics of ``model`` on ``dataset`` (one pass, nothing written)."""
        acc = self.accumulator(dataset, **kwargs)
        for batch, outputs in model_outputs(model, dataset, batch_size, device, num_workers):
            acc.update(batch, outputs)
        return acc.compute()

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None,
                 **kwargs: tp.Any) -> TaskResult:
        """Evaluate ``model`` on ``dataset`` (a split); returns a result with ``metrics`` and ``save``.

        ``scorer`` is the trained objective's scoring function (retrieval ranks candidates with it; the other
        tasks ignore it). Every task takes the keywords ``ks``, ``keep_probs``, ``batch_size``, ``device``,
        ``num_workers`` and ``n_boot``; all but retrieval also ``quick`` (metrics only, nothing to save) and
        ``train`` (the training split, for priors).
        """
        raise NotImplementedError

    def table(self, metrics: dict[str, float]) -> str:
        """A markdown table of the headline test metrics next to their chance levels."""
        raise NotImplementedError
