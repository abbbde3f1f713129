"""Explorers: which metrics ``dora grid`` shows for each task family (files starting with ``_`` are not grids)."""

from __future__ import annotations

import typing as tp

import treetable as tt
from dora import Explorer

RETRIEVAL = ("top1_segment", "top10_segment", "top1_word", "top10_word")
# Headline test metrics of every task (those absent from an XP's history stay blank).
HEADLINES = RETRIEVAL + ("accuracy", "balanced_accuracy", "f1_macro", "pcc")
# Classification and speech detection (Du-IN, LibriBrain, lee2024): top-k where the task reports it (detection does
# not), balanced accuracy, F1-macro (the LibriBrain competition's metric).
CLASSIFICATION = ("top1", "top5", "top10", "balanced_accuracy", "f1_macro")
# Reconstruction (Neural Speech Decoding): correlations and STOI as they are, beside the trial-shuffled null.
RECONSTRUCTION = ("pcc", "pcc_null_mean", "pcc_trial", "pcc_trial_null_mean", "stoi")


def _summary(history: list[dict], test_keys: tp.Sequence[str], scale: float = 100.0) -> dict[str, tp.Any]:
    if not history:
        return {}
    # a stacking XP (stack.bases) has one entry without training: its row shows the test metrics only
    train = {"epoch": len(history), "loss": history[-1]["train"]["loss"]} if "train" in history[-1] else {}
    valid_losses = [h["valid"]["loss"] for h in history if "valid" in h]
    valid = {"loss": valid_losses[-1], "best": min(valid_losses)} if valid_losses else {}
    out: dict[str, tp.Any] = {"train": train, "valid": valid}
    test = history[-1].get("test")
    if test:
        out["test"] = {k: scale * test[k] for k in test_keys if k in test}
        if "chance_top10_segment" in test:
            out["test"]["chance10"] = 100 * test["chance_top10_segment"]
    return out


class _MetricsExplorer(Explorer):
    """Losses (last train / valid, best valid) and the test metrics ``TEST`` (times ``SCALE``, shown as ``FORMAT``);
    blank where an XP does not report one."""

    TEST: tp.ClassVar[tuple[str, ...]] = ()
    EXTRA: tp.ClassVar[tuple[str, ...]] = ()  # columns _summary adds (e.g. chance10)
    SCALE: tp.ClassVar[float] = 100.0
    FORMAT: tp.ClassVar[str] = ".1f"

    def get_grid_metrics(self) -> list:
        return [
            tt.group("train", [tt.leaf("epoch"), tt.leaf("loss", ".3f")], align=">"),
            tt.group("valid", [tt.leaf("loss", ".3f"), tt.leaf("best", ".3f")], align=">"),
            tt.group("test", [tt.leaf(k, self.FORMAT) for k in self.TEST + self.EXTRA], align=">"),
        ]

    def process_history(self, history: list[dict]) -> dict[str, tp.Any]:
        """Summarise a history: last train / valid loss, best valid loss, the test metrics."""
        return _summary(history, self.TEST, scale=self.SCALE)


class ClipExplorer(_MetricsExplorer):
    """Speech retrieval (brainmagick): losses, best valid, and test top-1 / top-10 in percent beside chance."""

    TEST = RETRIEVAL
    EXTRA = ("chance10",)


class TaskExplorer(_MetricsExplorer):
    """Any task (grids mixing retrieval, classification, detection, reconstruction): losses and the headline
    test metrics in percent, blank where a task does not report them."""

    TEST = HEADLINES


class ClassificationExplorer(_MetricsExplorer):
    """Classification and speech-detection grids: losses, and test top-1 / top-5 / top-10, balanced accuracy and
    F1-macro in percent (blank where a task does not report them, e.g. top-k for detection)."""

    TEST = CLASSIFICATION


class ReconstructionExplorer(_MetricsExplorer):
    """Reconstruction grids (Neural Speech Decoding): losses, and the test PCC (per bin and per trial) beside its
    trial-shuffled null, and STOI, as they are (not in percent)."""

    TEST = RECONSTRUCTION
    SCALE = 1.0
    FORMAT = ".3f"
