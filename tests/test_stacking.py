"""Stacking over base classifiers (bm2/stacking.py): the meta-learner on hand-made logits, alignment of items across
base XPs, the errors, XP folders as ``evaluate_checkpoint`` writes them, and SLURM dependencies on several stages."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest
import torch

from bm2 import stacking as S
from bm2.solvers.base import CHECKPOINT_VERSION
from bm2.tasks.classification import evaluate_classification

NAMES = ["aa", "b", "d", "iy"]


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 4)


def _logits(labels: np.ndarray, knows: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A base model that tells apart the two classes of ``knows`` and, for the other two, only knows that the item
    is one of them (it picks one at random)."""
    others = [c for c in range(4) if c not in knows]
    out = rng.normal(0, 0.5, (len(labels), 4))
    for i, y in enumerate(labels):
        if y in knows:
            out[i, y] += 3
        else:
            out[i, others] += 2
    return out


def _split(sig: str, split: str, labels: np.ndarray, logits: np.ndarray, names=NAMES) -> S.SplitLogits:
    n = len(labels)
    items = pd.DataFrame({"index": np.arange(n), "recording_uid": "rec", "start": np.arange(n) * 0.5,
                          "members": [f"{i} {i + 1000}" for i in range(len(labels))], "label": labels})
    return S.SplitLogits(sig, split, logits, labels, S.item_keys(items), items, list(names))


def _bases(seed: int = 0, shuffle: bool = True):
    """Validation and test splits of two complementary bases (the second's rows shuffled: aligned by item)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("valid", 400), ("test", 400)):
        y = _labels(n, rng)
        a = _split("aaaa0001", split, y, _logits(y, (0, 1), rng))
        b = _split("bbbb0002", split, y, _logits(y, (2, 3), rng))
        out[split] = [a, b.take(rng.permutation(n)) if shuffle else b]
    return out


def test_stack_beats_each_base_model():
    """One base is informative for classes 0-1 only, the other for 2-3 only: each alone is right on about 3/4 of
    the items (a coin flip on the other half), the stack on nearly all."""
    bases = _bases()
    result = S.stack(bases["valid"], bases["test"], levels=[5, 10], labels=["demega", "demega"])
    table = result.table.set_index("model", drop=False)
    base_f1 = result.table["test_f1_macro"].iloc[:2].to_numpy()
    assert np.all((base_f1 > 0.6) & (base_f1 < 0.85)), result.table
    stack_f1 = result.result.metrics["f1_macro"]
    assert stack_f1 > 0.95 and stack_f1 > base_f1.max() + 0.15, result.table
    assert table.loc["stack", "test_f1_macro"] == stack_f1
    assert result.table["k"].iloc[:2].tolist() == [5, 10] and result.table["sig"].iloc[:2].tolist() == [
        "aaaa0001", "bbbb0002"]
    assert result.result.metrics["balanced_accuracy"] > 0.95 and result.result.metrics["n_scored"] == 400
    md = result.markdown()
    assert "| demega | 5 | aaaa0001 |" in md and "| stack |" in md and "| chance | | | | " in md
    assert "400 test items, 400 validation items" in md


def test_alignment_uses_item_identity_not_row_order():
    bases = _bases(shuffle=True)
    aligned = S.align(bases["test"])
    assert list(aligned[1].keys) == list(aligned[0].keys)
    assert np.array_equal(aligned[1].labels, aligned[0].labels)
    # the same stack as without shuffling
    plain = _bases(shuffle=False)
    result = S.stack(bases["valid"], bases["test"])
    f1 = result.result.metrics["f1_macro"]
    assert "| base 2 |  | bbbb0002 |" in result.markdown()  # no levels given: the K column stays empty
    assert f1 == pytest.approx(S.stack(plain["valid"], plain["test"]).result.metrics["f1_macro"])


def test_misaligned_bases_are_errors():
    a, b = _bases()["test"]
    other = b.take(np.arange(len(b.keys)))
    other.keys = other.keys.copy()
    other.keys[3] = "rec|1.5|3 4 5"  # another grouping of the evaluation split
    with pytest.raises(S.StackError, match=r"items of XPs aaaa0001 .* and bbbb0002 .* differ.*valid_k / test_k"):
        S.align([a, other])
    with pytest.raises(S.StackError, match="differ"):
        S.align([a, b.take(np.arange(len(b.keys) - 1))])  # one item fewer
    relabelled = S.SplitLogits(b.sig, b.split, b.logits, (b.labels + 1) % 4, b.keys, b.items, b.names)
    with pytest.raises(S.StackError, match="labels differ"):
        S.align([a, relabelled])
    renamed = S.SplitLogits(b.sig, b.split, b.logits, b.labels, b.keys, b.items, ["x", "y", "z", "w"])
    with pytest.raises(S.StackError, match="different classes"):
        S.align([a, renamed])
    with pytest.raises(S.StackError, match="at least two classes"):
        S.fit_meta_learner(np.zeros((3, 2)), np.array([1, 1, -1]))


def _xp(root, sig: str, split_logits: dict[str, S.SplitLogits] | None, k: int, finished: bool = True):
    """An XP folder as a finished run and ``evaluate_checkpoint`` leave it."""
    folder = root / sig
    folder.mkdir()
    history = [{"train": {"loss": 1.0}, "valid": {"f1_macro": 0.5}}]
    if finished:
        history[-1]["test"] = {"f1_macro": 0.5}
    config = {"test": {"task": "classification"}, "dset": {"grouping": {"k": k}}, "model": {"name": "demega"}}
    torch.save({"version": CHECKPOINT_VERSION, "history": history, "config": config}, folder / "checkpoint.th")
    (folder / "vocabulary.json").write_text(json.dumps(NAMES))
    for split, data in (split_logits or {}).items():
        out = folder / "eval" if split == "test" else folder / "eval" / split
        result = evaluate_classification(data.logits, data.labels, data.items.drop(columns=["label"]), NAMES,
                                         n_boot=0)
        result.save(out, {"sig": sig, "split": split})
    return folder


def test_stack_of_xp_folders(tmp_path):
    bases = _bases()
    folders = [_xp(tmp_path, b.sig, {"valid": v, "test": b}, k)
               for v, b, k in zip(bases["valid"], bases["test"], (5, 10))]
    loaded = S.load_split_logits(folders[1], "valid")
    assert loaded.names == NAMES and np.allclose(loaded.logits, bases["valid"][1].logits, atol=1e-5)
    result = S.stack_folders(folders, evaluate=False)
    assert result.table["k"].iloc[:2].tolist() == [5, 10] and result.table["model"].tolist() == [
        "demega", "demega", "stack"]
    assert result.result.metrics["f1_macro"] > result.table["test_f1_macro"].iloc[:2].max() + 0.15
    out = tmp_path / "stack"
    result.save(out, {"sig": "stack"})
    assert pd.read_csv(out / "stack.csv")["model"].tolist() == ["demega", "demega", "stack"]
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert summary["metrics"]["f1_macro"] == pytest.approx(result.result.metrics["f1_macro"])
    probs = np.load(out / "eval" / "probs.npy")
    assert np.allclose(probs, S.meta_probs(result.meta, S.features(S.align([
        S.load_split_logits(f, "test") for f in folders])), 4), atol=1e-5)
    assert not (out / "eval" / "logits.npy").exists()  # a stack is not stacked again
    with pytest.raises(S.StackError, match="is a stacking XP"):
        S.check_finished(out)


def test_unfinished_or_missing_bases_are_named(tmp_path):
    bases = _bases()
    done = _xp(tmp_path, "done0001", {"valid": bases["valid"][0], "test": bases["test"][0]}, 5)
    running = _xp(tmp_path, "runs0002", None, 10, finished=False)
    with pytest.raises(S.StackError, match=r"runs0002 has not finished \(1 epochs, not tested yet\).*dora run -f "
                                           r"runs0002"):
        S.stack_folders([done, running])
    with pytest.raises(S.StackError, match=r"base XP gone0003: no folder .*dora run -f gone0003"):
        S.stack_folders([done, tmp_path / "gone0003"])
    (tmp_path / "nockpt04").mkdir()
    with pytest.raises(S.StackError, match=r"nockpt04 has not finished.*dora run -f nockpt04"):
        S.stack_folders([done, tmp_path / "nockpt04"])
    bare = _xp(tmp_path, "bare0005", None, 10)
    with pytest.raises(S.StackError, match=r"bare0005: logits.npy, items.csv, summary.json missing .*"
                                           r"run_eval_probs bare0005 --split valid"):
        S.stack_folders([done, bare], evaluate=False)
    with pytest.raises(S.StackError, match="at least two base XPs"):
        S.stack_folders([done])


def test_a_stage_waits_for_every_unfinished_stage(monkeypatch):
    """``grids/_chain.py``: a stage ``after`` several stages depends on the jobs of those still pending or
    running (``afterok:J1:J3``), none when all finished."""
    import dora.shep

    from grids import _chain

    jobs = {"a": ("11", "RUNNING"), "b": ("12", "COMPLETED"), "c": ("13", "PENDING"), "d": (None, None)}

    class Sheep:
        def __init__(self, xp):
            job_id, self._state = jobs[xp]
            self.job = None if job_id is None else types.SimpleNamespace(job_id=job_id)

        def state(self):
            return self._state

    main = types.SimpleNamespace(get_xp=lambda argv: argv[0])
    monkeypatch.setattr(dora.shep, "Sheep", Sheep)
    monkeypatch.setattr(_chain, "_STAGES", {sig: (main, [sig]) for sig in jobs})
    monkeypatch.setattr(_chain, "_PARENTS", {"stack": ["a", "b", "c", "d"], "done": ["b", "d"], "child": ["a"]})
    assert _chain.dependency_for("stack") == "afterok:11:13"
    assert _chain.dependency_for("done") is None and _chain.dependency_for("child") == "afterok:11"
    assert _chain.dependency_for("a") is None
