"""Detection: window probabilities averaged onto the sample timeline, against hand-computed metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bm2.tasks import get_task
from bm2.tasks.detection import detection_metrics, random_f1_macro

from .fakes import Echo, FakeDataset, FakeRecording, segments

# recording 0 (10 samples): speech at samples 3..6; window A covers samples 2..5, window B samples 4..7, so
# samples 4 and 5 are averaged: (0.9 + 0.05) / 2 = 0.475 (silence: a miss) and (0.3 + 0.8) / 2 = 0.55 (speech)
# recording 1 (6 samples): window C covers samples 1..4, all right
TRUTH = [np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 0]), np.array([1, 1, 0, 0, 1, 1])]
PROBS = [[0.2, 0.6, 0.9, 0.3], [0.05, 0.8, 0.7, 0.65], [0.9, 0.2, 0.3, 0.8]]
SPANS = [(0, 2, 4), (0, 4, 4), (1, 1, 4)]


def _dataset(channel_axis: bool = False) -> FakeDataset:
    logits = [torch.logit(torch.tensor(p, dtype=torch.float64)).numpy() for p in PROBS]
    if channel_axis:
        logits = [x[None] for x in logits]  # [1, T']
    seg = segments(3, recording=[0, 0, 1], subject=["01", "01", "02"])
    return FakeDataset(logits, seg, targets={"speech": [TRUTH[r][f:f + n] for r, f, n in SPANS]},
                       recordings=[FakeRecording("aa11", 50.0), FakeRecording("bb22", 50.0)], spans=SPANS,
                       timelines=TRUTH)


def test_metrics_by_hand():
    # recording 0 covered samples 2..7: truth 0 1 1 1 1 0, mean probabilities 0.2 0.6 0.475 0.55 0.7 0.65
    truth = np.array([0, 1, 1, 1, 1, 0])
    prob = np.array([0.2, 0.6, 0.475, 0.55, 0.7, 0.65])
    m = detection_metrics(truth, prob)
    # speech: TP 3, FN 1, FP 1 -> F1 6/8; silence: TP 1, FN 1, FP 1 -> F1 2/4
    assert m["f1_speech"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((0.75 + 0.5) / 2)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # AUC: of the 8 (speech, silence) pairs, 0.2 is below every speech sample, 0.65 only below 0.7
    assert m["roc_auc"] == pytest.approx(5 / 8)
    assert m["speech_prior"] == pytest.approx(4 / 6) and m["chance_f1_macro"] == pytest.approx(0.5)
    # majority (speech) everywhere: F1 speech 2 * (4/6) / (1 + 4/6) = 0.8, silence 0
    assert m["chance_majority_f1_macro"] == pytest.approx(0.4)
    assert random_f1_macro(0.5, 0.5) == pytest.approx(0.5)
    assert random_f1_macro(0.2, 0.0) == pytest.approx(0.8 / 1.8)  # never guessing speech: the majority class


@pytest.mark.parametrize("channel_axis", [False, True])
def test_task_averages_windows_on_the_timeline(tmp_path, channel_axis):
    task = get_task("detection")
    result = task.evaluate(Echo(), _dataset(channel_axis), None, batch_size=2)
    m = result.metrics
    # pooled over both recordings (10 covered samples): speech TP 5, FN 1, FP 1; silence TP 3, FN 1, FP 1
    assert m["f1_macro"] == pytest.approx((10 / 12 + 6 / 8) / 2)
    assert m["n_samples"] == 10 and m["n_recordings"] == 2 and m["n_windows"] == 3
    assert m["chance_f1_macro"] == pytest.approx(0.5)
    assert m["chance_majority_f1_macro"] == pytest.approx((2 * 0.6 / 1.6) / 2)
    result.save(tmp_path, {"sig": "det"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "detection"
    assert summary["groups"]["recording"]["aa11"]["f1_macro"] == pytest.approx(0.625)
    assert summary["groups"]["recording"]["bb22"]["f1_macro"] == pytest.approx(1.0)
    assert summary["groups"]["subject"]["02"]["balanced_accuracy"] == pytest.approx(1.0)
    timelines = np.load(tmp_path / "timelines.npz")
    prob = timelines["prob_aa11"]
    assert np.isnan(prob[[0, 1, 8, 9]]).all()
    assert prob[2:8] == pytest.approx([0.2, 0.6, 0.475, 0.55, 0.7, 0.65], abs=1e-6)
    assert timelines["truth_bb22"].tolist() == TRUTH[1].tolist()
    recordings = pd.read_csv(tmp_path / "recordings.csv")
    assert recordings["n_covered"].tolist() == [6, 4] and recordings["sample_rate"].tolist() == [50.0, 50.0]
    items = pd.read_csv(tmp_path / "items.csv")
    assert items["speech_fraction"].tolist() == pytest.approx([0.75, 0.75, 0.5])
    assert items["prob_mean"][0] == pytest.approx(np.mean(PROBS[0]))
    table = task.table(m)
    assert "| F1-macro | 79.2 | 50.0 |" in table and "60.0 % speech" in table


def test_quick_and_shape_errors():
    task = get_task("detection")
    quick = task.evaluate(Echo(), _dataset(), quick=True, batch_size=3)
    assert quick.metrics["f1_macro"] == pytest.approx((10 / 12 + 6 / 8) / 2)
    data = _dataset()
    data.spans = [(0, 2, 5), *SPANS[1:]]
    with pytest.raises(ValueError, match="one logit per target sample"):
        task.evaluate(Echo(), data)
    data.spans = [(0, 8, 4), *SPANS[1:]]
    with pytest.raises(ValueError, match="outside recording 0"):
        task.evaluate(Echo(), data)
