"""Du-IN's classifier recipe on sEEG from any BIDS dataset: a small iEEG fixture written by mne-bids, read by the
generic ``bids`` study with bipolar re-referencing, through the real ``dora run`` (tiny Du-IN model)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.studies.fixtures_bids_seeg import OPTIONS, write_seeg_bids

from ._cli import cli_env, dora_run

pytestmark = pytest.mark.slow

TINY_DUIN = ["model=duin", "model.duin.depth=1", "model.duin.patch=10", "model.duin.n_heads=2", "model.duin.d_head=8",
             "model.duin.d_ff=32", "optim.batch_size=8", "optim.epochs=2", "optim.warmup=0", "num_threads=1",
             "preprocess.sample_rate=100"]


def test_duin_classifier_on_bipolar_bids_seeg(tmp_path):
    root = tmp_path / "seeg-words"
    write_seeg_bids(root, repeats=10)
    out, folder, history = dora_run(
        cli_env(tmp_path), "recipe=duin_classifier", *TINY_DUIN, "dset.selections=[bids]",
        f"paths.studies.bids={root}", "studies.bids.name=seeg-words", "studies.bids.bipolar=true", *OPTIONS)
    assert "| top-1 |" in out and len(history) == 2
    test = history[-1]["test"]
    assert test["n_items"] == 3 and abs(test["chance_top1"] - 1 / 3) < 1e-6, test  # 10 trials per word: 8 / 1 / 1
    assert json.loads((folder / "vocabulary.json").read_text()) == ["hua", "ma", "shu"]
    spec = torch.load(folder / "checkpoint.th", weights_only=True)["model_spec"]
    # 3 bipolar channels (A1-A2, A2-A3, A3-A4: B2 is bad), 3-s windows at 100 Hz
    assert spec["name"] == "duin" and spec["kwargs"]["n_channels"] == 3 and spec["kwargs"]["n_times"] == 300
