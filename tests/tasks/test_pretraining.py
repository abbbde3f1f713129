"""The pretraining task: test metrics are the objective's terms averaged over windows, weighted by batch size."""

from __future__ import annotations

import json

import pytest
import torch

from bm2.objectives import Objective
from bm2.tasks import get_task


class _Data(torch.utils.data.Dataset):
    def __init__(self, values):
        self.values = values

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return {"brain": torch.full((1, 4), float(self.values[i])), "subject_index": torch.tensor(0),
                "mask": torch.ones(1, dtype=torch.bool)}


class _Identity(torch.nn.Module):
    inputs = ("brain",)

    def forward(self, brain):
        return {"output": brain}


class _MeanObjective(Objective):
    terms = ("mean", "logged")

    def forward(self, batch, outputs):
        value = outputs["output"].mean()
        return {"mean": value, "logged": value * 10}


def test_pretraining_task_averages_the_objective_terms_over_windows(tmp_path, monkeypatch):
    import bm2.data

    monkeypatch.setattr(bm2.data, "collate", torch.utils.data.default_collate)
    task = get_task("pretraining")
    assert task.targets == ("label",) and not task.per_sample and task.best == ("loss", "min")
    # batches of 2 and 1: the mean over windows (1 + 2 + 6) / 3 = 3, not the mean of batch means (1.5 + 6) / 2
    result = task.evaluate(_Identity(), _Data([1, 2, 6]), None, objective=_MeanObjective(), batch_size=2,
                           ks=(1, 5), train=None)
    assert result.metrics == pytest.approx({"loss": 3.0, "mean": 3.0, "logged": 30.0, "n_items": 3.0})
    result.save(tmp_path, meta={"xp": "x"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "pretraining" and summary["metrics"]["mean"] == 3.0
    assert "| mean | 3.0000 |" in task.table(result.metrics)
    with pytest.raises(ValueError, match="objective"):
        task.evaluate(_Identity(), _Data([1]), None)
