"""Self-supervised pre-training (e.g. Du-IN's VQ-VAE and MAE stages): no decoding target, the model is judged by its
own objective.

The models read no target (the batches carry the window's class label only so that a stratified split puts the
same trials in each split as the classifier that follows, see :attr:`PretrainingTask.targets`); the best epoch is
chosen on the validation loss, and the test metrics are the objective's terms and weighted ``loss`` averaged over
the test windows (the model in eval mode).
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import torch

from .base import QuickResult, Task, model_outputs, write_summary


class PretrainingResult:
    """The objective's terms on a split; ``save`` writes ``summary.json``."""

    task = "pretraining"

    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_summary(folder, self.task, meta, self.metrics, {})


def objective_metrics(model: torch.nn.Module, dataset: tp.Any, objective: tp.Any, batch_size: int = 128,
                      device: str | torch.device = "cpu", num_workers: int = 0) -> dict[str, float]:
    """``loss`` (the weighted training loss) and every term of ``objective``, averaged over the windows."""
    from ..objectives import TermMeans

    means = TermMeans(objective)
    for batch, outputs in model_outputs(model, dataset, batch_size, device, num_workers):
        means.update(objective(batch, outputs), len(batch["brain"]))
    return {**means.compute(), "n_items": float(means.count)}


class PretrainingTask(Task):
    """``pretraining``: a model trained on its own objective (no target); test metrics are the objective's terms."""

    name = "pretraining"
    per_sample = False
    # The labels only let the window-level split (stratified, as the classifier's) put the same trials in each
    # split as the stage that follows; pre-training models never read them (their ``inputs`` exclude ``label``).
    targets = ("label",)
    # The objective's terms are neither percentages nor comparable across methods: no headline metric, so the
    # report's tables (bm2.results) leave pre-training XPs out; their stage-3 classifiers carry the results.
    headline = ()
    best = ("loss", "min")

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None, *,
                 objective: tp.Any = None, batch_size: int = 128, device: str | torch.device = "cpu",
                 num_workers: int = 0, quick: bool = False, **kwargs: tp.Any) -> PretrainingResult | QuickResult:
        """The objective's terms of ``model`` on ``dataset``; ``ks``, ``train``, ``keep_probs`` and ``n_boot`` are
        ignored. Raises ``ValueError`` without ``objective`` (the solver passes its own)."""
        for key in ("ks", "train", "keep_probs", "n_boot"):
            kwargs.pop(key, None)
        if kwargs:
            raise TypeError(f"unexpected arguments for the pretraining task: {sorted(kwargs)}")
        if objective is None:
            raise ValueError("the pretraining task scores a model by its objective: pass objective=")
        metrics = objective_metrics(model, dataset, objective, batch_size, device, num_workers)
        return QuickResult(self.name, metrics) if quick else PretrainingResult(metrics)

    def table(self, metrics: dict[str, float]) -> str:
        rows = [f"| {name} | {value:.4f} |" for name, value in metrics.items() if name != "n_items"
                and not name.startswith("chance")]
        return "\n".join(["| pre-training term (test) | value |", "|---|---|", *rows])


__all__ = ["PretrainingResult", "PretrainingTask", "objective_metrics"]
