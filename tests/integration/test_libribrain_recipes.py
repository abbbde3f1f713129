"""The LibriBrain recipes run through the real ``dora run`` on a tiny synthetic LibriBrain-like study (1 epoch):
each trains, evaluates with its task on the named 2025 test run and prints its table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm2.tasks.evaluate import evaluate_checkpoint

from ._cli import DORA, ROOT, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow
TINY_LIBRI = ["studies.libribrain_synthetic.n_train_runs=2", "studies.libribrain_synthetic.run_seconds=30"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("libribrain")
    return dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"), BM2_XP_DIR=str(base / "xps"),
                BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize("recipe, keys, table", [
    ("libribrain_phoneme", ("top1", "balanced_accuracy", "f1_macro"), "| F1-macro |"),
    ("libribrain_speech", ("f1_macro", "roc_auc"), "| F1-macro |"),
])
def test_libribrain_recipe_trains_and_evaluates(env, recipe, keys, table):
    proc = subprocess.run([DORA, "run", *TINY_MODEL_ARGS, *TINY_LIBRI, "optim.epochs=1", f"recipe={recipe}"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert table in proc.stdout and "norm.pooled: per-channel mean / std from 2 training recordings" in proc.stdout
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    test = json.loads((folder / "history.json").read_text())[-1]["test"]
    for key in keys:
        assert key in test and 0.0 <= test[key] <= 1.0, (key, test)
    manifest = (folder / "split.csv").read_text().splitlines()
    header = manifest[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in manifest[1:]]
    by_split = {(r["split"], r["session"]) for r in rows}
    assert by_split == {("train", "1"), ("train", "2"), ("valid", "11"), ("test", "12")}


def test_libribrain_phoneme_with_grouping(env, monkeypatch):
    """``dset.grouping.k=5``: training and evaluation items average 5 same-phoneme windows; items.csv holds one row
    per test group with its members."""
    proc = subprocess.run([DORA, "run", *TINY_MODEL_ARGS, *TINY_LIBRI, "optim.epochs=1", "recipe=libribrain_phoneme",
                           "dset.grouping.k=5", "dset.grouping.dynamic=true"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "| F1-macro |" in proc.stdout
    assert "dset.grouping: train split averages 5 same-label windows per item" in proc.stdout
    assert "redrawn every epoch" in proc.stdout
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    test = json.loads((folder / "history.json").read_text())[-1]["test"]
    assert 0.0 <= test["f1_macro"] <= 1.0
    monkeypatch.setenv("BM2_DATA", env["BM2_DATA"])
    monkeypatch.setenv("BM2_CACHE", env["BM2_CACHE"])
    evaluate_checkpoint(folder, device="cpu", keep_probs=False)  # rebuilds the grouped test split from the config
    items = pd.read_csv(folder / "eval" / "items.csv")
    sizes = items.group_size.to_numpy()
    assert (sizes >= 1).all() and (sizes <= 5).all() and (sizes == 5).any()
    assert [len(str(m).split()) for m in items.members] == sizes.tolist()
    manifest = pd.read_csv(folder / "split.csv")
    n_test = int((manifest.split == "test").sum())
    assert sizes.sum() == n_test  # every test window is in exactly one group
    assert len(items) < n_test


@pytest.mark.parametrize("recipe, columns", [
    ("libribrain_phoneme", ["segment_idx"] + [f"phoneme_{i}" for i in range(1, 40)]),
    ("libribrain_speech", ["idx", "speech_prob"]),
])
def test_submission_file_from_a_trained_xp(env, tmp_path, recipe, columns):
    """``scripts/libribrain_submission.py`` on a trained tiny XP: the competition's columns, one row per test
    segment (phonemes) or per sample of the test run (speech), probabilities in [0, 1]."""
    proc = subprocess.run([DORA, "run", *TINY_MODEL_ARGS, *TINY_LIBRI, "optim.epochs=1", f"recipe={recipe}"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    out = tmp_path / "submission.csv"
    proc = subprocess.run([sys.executable, "-m", "scripts.libribrain_submission", str(folder), "--out", str(out)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    table = pd.read_csv(out)
    assert list(table.columns) == columns
    manifest = pd.read_csv(folder / "split.csv")
    values = table[columns[1:]].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    if recipe == "libribrain_phoneme":
        assert len(table) == int((manifest.split == "test").sum())
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    else:
        assert table.idx.tolist() == list(range(len(table))) and len(table) > 1000  # every sample of the run
