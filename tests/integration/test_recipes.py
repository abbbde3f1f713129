"""Every recipe, a braindecode model and a causal SimpleConv run through the real ``dora run`` on the tiny
synthetic study: each trains, evaluates with its task, prints its table and writes its manifest."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from grids._tiny import TINY_STUDY, as_overrides

from ._cli import DORA, ROOT, TINY_ARGS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipes")
    return dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"), BM2_XP_DIR=str(base / "xps"),
                BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")


def _run(env, *args, base=TINY_ARGS):
    proc = subprocess.run([DORA, "run", *base, "optim.epochs=2", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    return proc.stdout, folder, json.loads((folder / "history.json").read_text())


@pytest.mark.parametrize("recipe, keys, table", [
    ("word_classification", ("top1", "balanced_accuracy", "f1_macro", "chance_accuracy"), "| top-1 |"),
    ("phoneme_classification", ("top1", "balanced_accuracy", "f1_macro"), "| balanced accuracy |"),
    ("speech_detection", ("f1_macro", "roc_auc"), "| F1-macro |"),
])
def test_recipe_trains_evaluates_and_prints_its_table(env, recipe, keys, table):
    out, folder, history = _run(env, f"recipe={recipe}")
    assert table in out
    test = history[-1]["test"]
    for key in keys:
        assert key in test and 0.0 <= test[key] <= 1.0, (key, test)
    assert {"loss", "f1_macro"} <= set(history[0]["valid"])  # the task's metrics at every validation
    manifest = (folder / "split.csv").read_text().splitlines()
    assert manifest[0].startswith("split,") and {line.split(",")[0] for line in manifest[1:]} == {"train", "valid",
                                                                                                 "test"}
    if "classification" in recipe:
        vocabulary = json.loads((folder / "vocabulary.json").read_text())
        assert vocabulary == sorted(vocabulary) and len(vocabulary) >= 2


def test_braindecode_model_trains_through_the_adapter(env):
    # the tiny study without TINY_MODEL's model.simpleconv.* keys (absent from a braindecode model's config)
    out, _, history = _run(env, "model=eegnet", "recipe=word_classification", "optim.batch_size=16", "num_threads=1",
                           base=as_overrides(TINY_STUDY))
    assert "| top-1 |" in out and "balanced_accuracy" in history[-1]["test"]


def test_causal_simpleconv_trains(env):
    out, folder, history = _run(env, "model.simpleconv.causal=true")
    assert "| segment |" in out
    import torch

    spec = torch.load(folder / "checkpoint.th", weights_only=True)["model_spec"]
    assert spec["kwargs"]["causal"] is True
