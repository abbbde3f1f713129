"""The Du-IN classifier recipe through the real ``dora run`` on a tiny synthetic sEEG study (pickle layout, read
by the duin2024 loader): one window per 3-s trial, a stratified 80 / 10 / 10 split, every word in every split."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ._cli import DORA, ROOT, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow

#: 2 subjects x 2 runs x 6 words x 5 repeats, 6 contacts; 100 Hz model rate so that one epoch takes seconds
TINY_SEEG = ["studies.synthetic_seeg.n_subjects=2", "studies.synthetic_seeg.n_runs=2",
             "studies.synthetic_seeg.n_words=6", "studies.synthetic_seeg.repeats=5",
             "studies.synthetic_seeg.n_channels=6", "studies.synthetic_seeg.n_responsive=3",
             "preprocess.sample_rate=100", "optim.epochs=1", "optim.warmup=0"]


def test_duin_classifier_recipe_runs_one_epoch(tmp_path):
    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([DORA, "run", *TINY_MODEL_ARGS, "recipe=duin_classifier", *TINY_SEEG], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "| top-1 |" in proc.stdout
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 1
    test = history[-1]["test"]
    assert 0.0 <= test["top1"] <= 1.0 and abs(test["chance_top1"] - 1 / 6) < 1e-6, test
    assert test["n_items"] == 12 and test["n_classes_present"] == 6 and "top5" in test
    assert json.loads((folder / "vocabulary.json").read_text()) == [f"word{i:02d}" for i in range(6)]
    rows = [line.split(",") for line in (folder / "split.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    split = [r[header.index("split")] for r in rows]
    # 2 subjects x 60 trials, one window each: per subject and word 10 trials -> 8 / 1 / 1 (stratified pooled)
    assert len(rows) == 120 and split.count("valid") == split.count("test") == 12 and split.count("train") == 96


def test_duin_model_trains_through_the_recipe(tmp_path):
    """``model=duin`` (one block; 10-sample patches at the tiny study's 100 Hz) builds from the data and trains."""
    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([DORA, "run", "num_threads=1", "recipe=duin_classifier", "model=duin", "model.duin.depth=1",
                           "model.duin.patch=10", "optim.batch_size=16", *TINY_SEEG], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "| top-1 |" in proc.stdout
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    import torch

    spec = torch.load(Path(env["BM2_XP_DIR"]) / "xps" / sig / "checkpoint.th", weights_only=True)["model_spec"]
    assert spec["name"] == "duin" and spec["kwargs"]["n_channels"] == 6 and spec["kwargs"]["n_times"] == 300
