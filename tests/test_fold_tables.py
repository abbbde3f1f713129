"""Cross-validation tables: ``scripts.make_tables --folds`` gives mean ± sd over the folds of one configuration."""

from __future__ import annotations

import statistics

import pytest

from bm2 import results as R
from scripts import make_tables
from tests.test_results import make_xp


def test_fold_table_mean_sd_over_folds(tmp_path, capsys):
    tops = [0.30, 0.40, 0.65]
    folders = [make_xp(tmp_path, f"f{k}", seed=0, top10=top, argv=(f"dset.split.fold={k}",))
               for k, top in enumerate(tops)]
    df = R.collect(folders, None, {"fold": "dset.split.fold"})
    assert sorted(df.fold.astype(int)) == [0, 1, 2]
    with pytest.raises(R.ResultsError, match="not seeds of one configuration"):
        R.aggregate(df)  # three XPs of seed 0: not seeds
    out = tmp_path / "tables"
    assert make_tables.main([*map(str, folders), "--folds", "--out", str(out)]) == 0
    text = (out / "table.md").read_text()
    mean, sd = 100 * statistics.mean(tops), 100 * statistics.stdev(tops)
    assert "mean ± sd over folds" in text and f"{mean:.1f} ± {sd:.1f}" in text
    stats = R.aggregate_stats(df, metric="top10_segment", over="fold")
    assert int(stats.n.iloc[0]) == 3


def _fold_xp(root, k, labels, scores, names, starts):
    """A classification XP of fold ``k``: summary.json, items.csv and logits.npy of its test trials."""
    import json

    import numpy as np
    import pandas as pd

    folder = root / "xps" / f"fold{k}"
    (folder / "eval").mkdir(parents=True)
    top1 = float(np.mean(np.argmax(scores, axis=1) == labels))
    meta = {"sig": f"fold{k}", "argv": [f"dset.split.fold={k}"], "selections": ["lee"], "features": [],
            "loss": "codebook", "model": "inr", "seed": 0, "epochs_trained": 1}
    metrics = {"top1": top1, "top2": 0.0, "chance_top1": 1 / scores.shape[1], "chance_top2": 2 / scores.shape[1]}
    (folder / "eval" / "summary.json").write_text(json.dumps({"task": "classification", "meta": meta,
                                                              "metrics": metrics}))
    pd.DataFrame({"index": range(len(labels)), "recording_uid": "rec", "start": starts, "label": labels,
                  "label_name": [names[i] for i in labels], "prediction": np.argmax(scores, axis=1)}).to_csv(
        folder / "eval" / "items.csv", index=False)
    np.save(folder / "eval" / "logits.npy", scores.astype(np.float32))
    (folder / "history.json").write_text("[]")
    return folder


def test_pooled_metrics_over_every_folds_test_predictions(tmp_path, capsys):
    """Pooled top-k = top-k of all folds' test items together (not the mean of the folds' accuracies)."""
    import numpy as np

    names = ["a", "b", "c", "d"]
    eye = np.eye(4)
    # fold 0: 1 trial, right; fold 1: 3 trials, 1 right at top-1, the 2 others second at top-2
    f0 = _fold_xp(tmp_path, 0, np.array([0]), eye[[0]] * 2, names, [0.0])
    scores1 = np.array([[0, 3, 0, 0], [2, 0, 1, 0], [0, 0, 1, 2]], dtype=float)
    f1 = _fold_xp(tmp_path, 1, np.array([1, 2, 2]), scores1, names, [1.0, 2.0, 3.0])
    pooled = R.pooled_folds([f0, f1])
    row = pooled.iloc[0]
    assert row.n_folds == 2 and row.n_items == 4
    assert row.top1 == pytest.approx(50.0)  # 2 of 4 trials; the mean over folds would say (100 + 33.3) / 2
    assert row.top2 == pytest.approx(100.0) and row.chance_top2 == pytest.approx(50.0)
    out = tmp_path / "tables"
    assert make_tables.main([str(f0), str(f1), "--folds", "--out", str(out)]) == 0
    text = (out / "pooled.md").read_text()
    assert "pooled over the test predictions of every fold" in text and "| 50.0 | 100.0 |" in text
    assert "pooled over" in capsys.readouterr().out
    # a trial in two folds' test sets, or label ids naming other classes, cannot be pooled
    f2 = _fold_xp(tmp_path, 2, np.array([0]), eye[[0]], names, [2.0])
    with pytest.raises(R.ResultsError, match="also in another fold's test set"):
        R.pooled_folds([f0, f1, f2])
    f3 = _fold_xp(tmp_path, 3, np.array([0]), eye[[0]], ["z", "b", "c", "d"], [9.0])
    with pytest.raises(R.ResultsError, match="vocabularies differ"):
        R.pooled_folds([f0, f3])
