"""bm2.tasks.evaluate: an XP folder with a checkpoint is evaluated with the task of its config and saved."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from bm2.solvers.base import CHECKPOINT_VERSION
from bm2.tasks import evaluate as E

from . import test_classification
from .fakes import Echo


def _xp_folder(root: Path, task: str = "classification") -> Path:
    folder = root / "xps" / "0123abcd"
    folder.mkdir(parents=True)
    config = {"dset": {"selections": ["toy"], "features": ["mel"], "split": {"test": 0.2}},
              "loss": {"name": "ce"}, "model": {"name": "echo"}, "seed": 3, "paths": {"data": "/old", "cache": "/c"},
              "test": {"task": task, "ks": [1, 2]}}
    torch.save({"version": CHECKPOINT_VERSION, "model_spec": {"name": "echo"}, "config": config,
                "history": [{}, {}], "best_state": None, "states": {}}, folder / "checkpoint.th")
    (folder / ".argv.json").write_text(json.dumps([f"test.task={task}"]))
    return folder


def test_evaluate_checkpoint_of_a_folder(tmp_path, monkeypatch):
    folder = _xp_folder(tmp_path)
    seen = {}

    def rebuild(ckpt, cfg, device, addons=()):
        seen["cfg"] = cfg
        test = test_classification._dataset()
        return E.Rebuilt(Echo(), types.SimpleNamespace(train=test, test=test), {"train": test})

    monkeypatch.setattr(E, "rebuild", rebuild)
    monkeypatch.setenv("BM2_DATA", str(tmp_path / "data"))
    result = E.evaluate_checkpoint(folder, device="cpu", batch_size=4)
    assert seen["cfg"].paths.data == str(tmp_path / "data")  # data paths from the current environment
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    assert summary["task"] == "classification" and summary["metrics"]["top2"] == pytest.approx(5 / 6)
    assert summary["meta"] == {"sig": "0123abcd", "argv": ["test.task=classification"], "selections": ["toy"],
                               "features": ["mel"], "loss": "ce", "model": "echo", "seed": 3, "epochs_trained": 2,
                               "split": "test"}
    assert (folder / "eval" / "confusion.csv").exists()
    assert E.describe(result.task, result.metrics).startswith("classification: top1 66.7% (chance 33.3%)")
    extra = E.describe("classification", {"top1": 0.5, "top10": 0.9, "chance_top10": 0.114, "top5": 0.7})
    assert extra.startswith("classification: top1 50.0%, top5 70.0%, top10 90.0% (chance 11.4%)")


def test_evaluate_checkpoint_of_the_validation_split(tmp_path, monkeypatch):
    """``split="valid"`` evaluates the validation split into ``eval/valid/`` (logits included, what stacking
    reads), leaves ``eval/`` (the test split's) alone, and ``paths`` replaces the data paths."""
    from omegaconf import OmegaConf

    folder = _xp_folder(tmp_path)
    seen = {}

    def rebuild(ckpt, cfg, device, addons=()):
        seen["cfg"] = cfg
        valid = test_classification._dataset()
        return E.Rebuilt(Echo(), types.SimpleNamespace(train=valid, valid=valid, test=[]), {"train": valid})

    monkeypatch.setattr(E, "rebuild", rebuild)
    paths = OmegaConf.create({"data": str(tmp_path / "elsewhere"), "cache": str(tmp_path / "cache")})
    E.evaluate_checkpoint(folder, device="cpu", batch_size=4, split="valid", paths=paths)
    assert seen["cfg"].paths.data == str(tmp_path / "elsewhere")
    out = folder / "eval" / "valid"
    assert json.loads((out / "summary.json").read_text())["meta"]["split"] == "valid"
    logits, probs = np.load(out / "logits.npy"), np.load(out / "probs.npy")
    assert np.allclose(logits, test_classification.LOGITS) and not (folder / "eval" / "summary.json").exists()
    assert np.allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-6)
    with pytest.raises(E.EvalError, match="its test split is empty"):
        E.evaluate_checkpoint(folder, device="cpu", split="test")
    with pytest.raises(ValueError, match="split must be train, valid or test"):
        E.evaluate_checkpoint(folder, device="cpu", split="holdout")


def test_evaluation_errors_name_the_fix(tmp_path, monkeypatch):
    (tmp_path / "untrained").mkdir()
    with pytest.raises(E.EvalError, match=r"Train it first \(`dora run -f untrained`\)"):
        E.evaluate_checkpoint(tmp_path / "untrained")
    folder = _xp_folder(tmp_path)
    empty = types.SimpleNamespace(train=[], test=[])
    monkeypatch.setattr(E, "rebuild", lambda ckpt, cfg, device, addons=(): E.Rebuilt(Echo(), empty, {}))
    with pytest.raises(E.EvalError, match="its test split is empty.*dset.split.test"):
        E.evaluate_checkpoint(folder, device="cpu")


def test_bm2_never_imports_scripts():
    root = Path(__file__).resolve().parents[2] / "bm2"
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if re.search(r"^\s*(from scripts\b|import scripts\b)", p.read_text(), re.MULTILINE)]
    assert offenders == []


def test_every_task_takes_the_same_call():
    """The solver's test stage calls every task alike: retrieval ignores ``train``, the others ``scorer``."""
    import numpy as np

    from bm2.tasks import TASKS

    from .fakes import FakeDataset, segments

    feats = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    words = FakeDataset(list(feats), segments(4, segment_uid=list("abcd"), word=["x", "y", "x", "z"]),
                        targets={"features": feats})
    retrieval = TASKS["retrieval"].evaluate(Echo(), words, None, ks=(1,), n_boot=10, train=words)
    assert retrieval.metrics["top1_segment"] == 1.0  # each window is its own best candidate
    quick = TASKS["retrieval"].evaluate(Echo(), words, None, quick=True)  # valid metrics: fewer bootstraps
    assert quick.metrics["top1_segment"] == 1.0
    data = test_classification._dataset()
    scorer = TASKS["retrieval"]  # anything: the other tasks never use it
    result = TASKS["classification"].evaluate(Echo(), data, scorer, ks=(1,), n_boot=10, train=data)
    assert result.metrics["top1"] == pytest.approx(4 / 6)
    for name in ("classification", "detection", "reconstruction"):
        task = TASKS[name]
        assert task.best[1] == "max" and task.main_metric in task.headline and task.best[0] in task.headline
