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
