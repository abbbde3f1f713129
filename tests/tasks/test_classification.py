"""Classification metrics against hand-computed values on 6 scored windows of 3 classes (+ 1 unseen)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bm2.tasks import QuickResult, get_task
from bm2.tasks.classification import chance_metrics, classification_metrics, core_metrics

from .fakes import Echo, FakeDataset, segments

# true classes 0 0 0 0 1 2 and one window (-1) whose class was not in training;
# argmax predictions 0 0 0 1 1 0 (2 for the unseen one); the second choice of window 3 is its true class 0,
# that of window 5 (true 2) is class 1
LOGITS = np.array([[3, 1, 0], [3, 0, 1], [2, 1, 0], [1, 2, 0], [0, 3, 1], [2, 1, 0], [0, 0, 3]], dtype=np.float32)
LABELS = np.array([0, 0, 0, 0, 1, 2, -1])
VOCAB = ["ba", "da", "ga"]
# accuracy 4/6; recall per class 3/4, 1/1, 0/1; precision 3/4, 1/2, 0 (class 2 never predicted)
ACCURACY = 4 / 6
BALANCED = (3 / 4 + 1 + 0) / 3
F1 = (0.75 + 2 * 0.5 * 1 / 1.5 + 0) / 3


def test_metrics_by_hand():
    m = classification_metrics(LOGITS, LABELS, ks=(1, 2), n_boot=0)
    assert m["top1"] == m["accuracy"] == pytest.approx(ACCURACY)
    assert m["top2"] == pytest.approx(5 / 6)
    assert m["top5"] == 1.0  # k >= K
    assert m["balanced_accuracy"] == pytest.approx(BALANCED)
    assert m["f1_macro"] == pytest.approx(F1)
    assert m["n_unseen"] == 1 and m["n_scored"] == 6 and m["n_items"] == 7 and m["n_classes"] == 3
    from sklearn.metrics import balanced_accuracy_score

    seen = LABELS >= 0
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(LABELS[seen], LOGITS[seen].argmax(1)))


def test_chance_levels_by_hand():
    m = chance_metrics(LABELS[LABELS >= 0], 3, ks=(1, 2, 5))
    assert m["chance_top1"] == pytest.approx(1 / 3) and m["chance_top2"] == pytest.approx(2 / 3)
    assert m["chance_top5"] == 1.0 and m["chance_balanced_accuracy"] == pytest.approx(1 / 3)
    # uniform guessing, test frequencies 4/6, 1/6, 1/6: F1 = 2p / (1 + 3p) per class
    assert m["chance_f1_macro"] == pytest.approx((4 / 9 + 2 / 9 + 2 / 9) / 3)
    # majority (test) class 0: accuracy 4/6; its F1 is 2 * (4/6) / (1 + 4/6) = 0.8, the others 0
    assert m["chance_majority"] == pytest.approx(4 / 6)
    assert m["chance_majority_f1_macro"] == pytest.approx(0.8 / 3)
    # Binomial(6, 1/3): P(X <= 3) = 656/729 < 0.95 <= P(X <= 4) = 716/729, so 4 of 6 must be exceeded
    assert m["chance_adjusted"] == pytest.approx(4 / 6)
    # with training counts, the majority class is the most frequent training class (1 here)
    trained = chance_metrics(LABELS[LABELS >= 0], 3, prior=np.array([1, 5, 2]))
    assert trained["chance_majority"] == pytest.approx(1 / 6)
    assert trained["chance_majority_f1_macro"] == pytest.approx(2 * (1 / 6) / (1 + 1 / 6) / 3)
    # P(X >= 4) = (60 + 12 + 1) / 729 under p = 1/3
    assert classification_metrics(LOGITS, LABELS, n_boot=0)["top1_p_value"] == pytest.approx(73 / 729)


def test_classes_absent_from_the_test_set():
    # 4 classes, class 3 absent from the labels but predicted once: the means run over classes 0, 1, 2
    m = core_metrics(np.array([3, 1, 2, 0]), np.array([0, 1, 2, 0]))
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 + 1) / 3)


def _dataset(pooled_time: bool = False) -> FakeDataset:
    brain = LOGITS
    if pooled_time:  # [K, T]: class 0 wins at t=0 and loses at t=1; the mean over time is the logits again
        brain = LOGITS[:, :, None] + np.array([[[5.0, -5.0]], [[0.0, 0.0]], [[0.0, 0.0]]]).reshape(1, 3, 2)
    names = [VOCAB[i] if i >= 0 else "zu" for i in LABELS]
    seg = segments(7, subject=["01"] * 3 + ["02"] * 4, label=LABELS, label_name=names)
    return FakeDataset(list(brain), seg, targets={"label": LABELS}, vocabulary=VOCAB)


@pytest.mark.parametrize("pooled_time", [False, True])
def test_task_evaluates_and_saves(tmp_path, pooled_time):
    task = get_task("classification")
    data = _dataset(pooled_time)
    train = FakeDataset([LOGITS[0]] * 4, segments(4, label=[1, 1, 2, -1]), vocabulary=VOCAB)
    result = task.evaluate(Echo(), data, None, ks=(1, 2), batch_size=3, train=train, n_boot=200)
    m = result.metrics
    assert m["top1"] == pytest.approx(ACCURACY) and m["top2"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx(BALANCED) and m["f1_macro"] == pytest.approx(F1)
    assert m["chance_majority"] == pytest.approx(1 / 6)  # training majority: class 1
    assert m["top1_ci_low"] <= ACCURACY <= m["top1_ci_high"]
    result.save(tmp_path, {"sig": "abc"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["meta"] == {"sig": "abc"}
    assert summary["metrics"]["f1_macro"] == pytest.approx(F1) and summary["metrics"]["n_unseen"] == 1
    # per subject: "01" is all right; "02" has 0 1 2 predicted 1 1 0
    assert summary["groups"]["subject"]["01"]["top1"] == 1.0
    assert summary["groups"]["subject"]["02"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert summary["groups"]["subject"]["02"]["f1_macro"] == pytest.approx((2 / 3) / 3)
    items = pd.read_csv(tmp_path / "items.csv", keep_default_na=False, na_values={"p_true": [""]},
                        dtype={"subject": str})
    assert items["index"].tolist() == list(range(7))
    assert items["prediction"].tolist() == [0, 0, 0, 1, 1, 0, 2]
    assert items["prediction_name"].tolist() == ["ba", "ba", "ba", "da", "da", "ba", "ga"]
    assert items["label_name"].tolist() == ["ba", "ba", "ba", "ba", "da", "ga", "zu"]
    assert items["correct"].tolist() == ["True", "True", "True", "False", "True", "False", ""]
    assert items["p_true"][0] == pytest.approx(np.exp(3) / (np.exp(3) + np.exp(1) + 1), rel=1e-5)
    assert np.isnan(items["p_true"][6]) and items["subject"].tolist()[:4] == ["01", "01", "01", "02"]
    probs = np.load(tmp_path / "probs.npy")
    assert probs.shape == (7, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the pooled logits themselves, row-aligned with items.csv (what stacking reads)
    assert np.allclose(np.load(tmp_path / "logits.npy"), LOGITS, atol=1e-5)
    confusion = pd.read_csv(tmp_path / "confusion.csv", index_col=0)
    assert confusion.to_numpy().tolist() == [[3, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert confusion.index.tolist() == VOCAB and confusion.columns.tolist() == VOCAB
    per_class = pd.read_csv(tmp_path / "per_class.csv")
    assert per_class["support"].tolist() == [4, 1, 1] and per_class["predicted"].tolist() == [4, 2, 0]
    assert per_class["precision"].tolist() == pytest.approx([0.75, 0.5, 0.0])
    assert per_class["recall"].tolist() == pytest.approx([0.75, 1.0, 0.0])
    assert per_class["train_count"].tolist() == [0, 2, 1]
    table = task.table(m)
    assert "| top-1 | 66.7 | 33.3 |" in table and "| F1-macro | 47.2 |" in table
    assert "| adjusted chance (binomial, p < 0.05) | – | 66.7 |" in table
    assert "left out: 1 windows of a class unseen" in table


def test_quick_metrics_and_accumulator():
    task = get_task("classification")
    data = _dataset()
    quick = task.evaluate(Echo(), data, quick=True, batch_size=4)
    assert isinstance(quick, QuickResult)
    assert quick.metrics["accuracy"] == pytest.approx(ACCURACY)
    assert quick.metrics["balanced_accuracy"] == pytest.approx(BALANCED)
    assert quick.metrics["f1_macro"] == pytest.approx(F1) and quick.metrics["n_unseen"] == 1
    with pytest.raises(ValueError, match="quick=False"):
        quick.save("nowhere")
    acc = task.accumulator(data)  # what a solver feeds with the batches of its validation loop
    for start in (0, 2, 5):
        rows = list(range(start, {0: 2, 2: 5, 5: 7}[start]))
        batch = data.__getitems__(rows)
        acc.update(batch, {"output": batch["brain"].to(torch.bfloat16)})
    assert acc.compute()["f1_macro"] == pytest.approx(F1)


def test_errors_name_the_problem():
    task = get_task("classification")
    data = _dataset()
    data.vocabulary = ["ba", "da"]
    with pytest.raises(ValueError, match="vocabulary has 2 classes"):
        task.evaluate(Echo(), data)
    with pytest.raises(TypeError, match="unexpected arguments"):
        task.evaluate(Echo(), _dataset(), n_nul=3)
