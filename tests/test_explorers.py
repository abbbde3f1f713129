"""What `dora grid` shows per task family (grids/_explorers.py)."""

from __future__ import annotations

import pytest

from grids._explorers import ClassificationExplorer, ClipExplorer, ReconstructionExplorer, TaskExplorer

HISTORY = [{"train": {"loss": 2.0}, "valid": {"loss": 1.5}},
           {"train": {"loss": 1.0}, "valid": {"loss": 1.8},
            "test": {"top1": 0.25, "top10": 0.5, "f1_macro": 0.2, "balanced_accuracy": 0.3, "pcc": 0.8,
                     "pcc_null_mean": 0.1, "top1_segment": 0.05}}]


def _leaves(explorer) -> list[str]:
    return [leaf.key for group in explorer.get_grid_metrics() for leaf in group.groups]


@pytest.mark.parametrize("cls, expected", [
    (ClassificationExplorer, {"top1": 25.0, "top10": 50.0, "balanced_accuracy": 30.0, "f1_macro": 20.0}),
    (ReconstructionExplorer, {"pcc": 0.8, "pcc_null_mean": 0.1}),
    (ClipExplorer, {"top1_segment": 5.0}),
])
def test_each_family_shows_its_own_metrics(cls, expected):
    explorer = cls(lambda launcher: None)
    summary = explorer.process_history(HISTORY)
    assert summary["train"] == {"epoch": 2, "loss": 1.0} and summary["valid"] == {"loss": 1.8, "best": 1.5}
    assert summary["test"] == pytest.approx(expected)
    assert set(summary["test"]) <= set(_leaves(explorer))  # every value has a column


def test_classification_columns_are_not_retrieval_ones():
    assert not any(k.endswith(("_segment", "_word")) for k in _leaves(ClassificationExplorer(lambda launcher: None)))
    assert "top10_segment" in _leaves(TaskExplorer(lambda launcher: None))  # mixed-task grids keep every headline


def test_retrieval_shows_its_chance_level():
    history = [{**HISTORY[-1], "test": {"top10_segment": 0.3, "chance_top10_segment": 0.02}}]
    summary = ClipExplorer(lambda launcher: None).process_history(history)
    assert summary["test"] == pytest.approx({"top10_segment": 30.0, "chance10": 2.0})
    assert "chance10" in _leaves(ClipExplorer(lambda launcher: None))
