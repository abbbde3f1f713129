"""Training and evaluation on LibriBrain's grouped h5 files through the real ``dora run``: the recipe's spine with
``dset.grouped.k``, on fixture files in the published format whose classes carry an evoked field."""

from __future__ import annotations

import pandas as pd
import pytest

from bm2.tasks.evaluate import evaluate_checkpoint

from ..data.fixtures_grouped import write_level
from ._cli import TINY_MODEL_ARGS, cli_env, dora_run

pytestmark = pytest.mark.slow


def test_phoneme_recipe_on_grouped_files(tmp_path):
    env = cli_env(tmp_path)
    write_level(tmp_path / "data" / "libribrain2025" / "grouped", 5, {"train": 390, "valid": 39, "test": 78},
                signal=1.0)
    out, folder, history = dora_run(env, *TINY_MODEL_ARGS, "recipe=libribrain_phoneme", "dset.grouped.k=5",
                                    "optim.epochs=4")
    assert "| F1-macro |" in out and "grouped_5/test_grouped.h5 (78 groups of K=5, 306 x 125)" in out
    test = history[-1]["test"]
    assert test["n_scored"] == 78 and test["n_classes"] == 39
    assert test["top1"] > test["chance_adjusted"], test  # the evoked fields are learnt through the spine
    split = pd.read_csv(folder / "split.csv")
    assert split.groupby("split").size().to_dict() == {"test": 78, "train": 390, "valid": 39}
    result = evaluate_checkpoint(folder)
    items = pd.read_csv(folder / "eval" / "items.csv")
    assert len(items) == 78 and items.group_size.eq(5).all() and items.members[0] == "0 1 2 3 4"
    assert result.metrics["top1"] == pytest.approx(test["top1"])
