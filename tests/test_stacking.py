"""Stacking over base classifiers (bm2/stacking.py, bm2/stacking_mlp.py): both meta-learners on hand-made logits,
the MLP's architecture, seeding and seed selection (validation only), alignment of items across base XPs, the errors,
XP folders as ``evaluate_checkpoint`` writes them, ``scripts.stack``'s plan, and SLURM dependencies on several
stages."""

from __future__ import annotations

import dataclasses
import inspect
import json
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bm2 import stacking as S
from bm2 import stacking_mlp as M
from bm2.solvers.base import CHECKPOINT_VERSION
from bm2.tasks.classification import evaluate_classification

NAMES = ["aa", "b", "d", "iy"]
#: a smaller, quicker MLP meta-learner for the tests that are not about it (the defaults are tested below)
QUICK = {"hidden": 64, "seeds": 3, "keep": 2, "folds": 3, "epochs": 40}


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


@pytest.mark.parametrize("meta", ["mlp", "logistic"])
def test_stack_beats_each_base_model(meta):
    """One base is informative for classes 0-1 only, the other for 2-3 only: each alone is right on about 3/4 of
    the items (a coin flip on the other half), the stack on nearly all: the MLP meta-learner with its defaults
    (the original's 512 units, 5 seeds, best 3), and the logistic one."""
    bases = _bases()
    result = S.stack(bases["valid"], bases["test"], levels=[5, 10], labels=["demega", "demega"], meta=meta)
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
    described = S.describe_meta(result.meta)
    assert described["meta"] == meta
    if meta == "mlp":
        assert described["seeds"] == [0, 1, 2, 3, 4] and len(described["kept"]) == 3 and described["folds"] == 5
        assert "meta-learner: MLP, seeds " in md and "kept of 5 by 5-fold cross-validated F1-macro" in md
    else:
        assert described == {"meta": "logistic", "C": 1.0} and "meta-learner: logistic regression (C = 1)" in md


def test_mlp_meta_learner_is_the_originals_network():
    """BatchNorm -> Linear(39M -> 512) -> SiLU -> BatchNorm -> Dropout(0.5) -> Linear(512 -> 39)."""
    net = M.MetaMLP(39 * 5, 39)
    kinds = [type(m).__name__ for m in net.net]
    assert kinds == ["BatchNorm1d", "Linear", "SiLU", "BatchNorm1d", "Dropout", "Linear"]
    assert net.net[0].num_features == 195 and net.net[1].out_features == 512 and net.net[3].num_features == 512
    assert net.net[4].p == 0.5 and net.net[5].out_features == 39
    assert net(torch.randn(7, 195)).shape == (7, 39)


def test_mlp_meta_learner_is_reproducible_with_its_seed():
    """The same seed gives the same probabilities (and leaves the caller's RNG and thread count alone), another
    seed other ones; the folds are stratified and shared by all seeds."""
    bases = _bases()
    valid, test = S.align(bases["valid"]), S.align(bases["test"])
    x, y, xt = S.features(valid), valid[0].labels, S.features(test)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.no_grad():  # scripts.stack disables gradients globally: the fit must still train
        first = M.fit_mlp_meta_learner(x, y, 4, seed=7, **QUICK)
    assert torch.equal(torch.rand(3), expected) and torch.get_num_threads() == threads
    again = M.fit_mlp_meta_learner(x, y, 4, seed=7, **QUICK)
    other = M.fit_mlp_meta_learner(x, y, 4, seed=8, **QUICK)
    assert first.seeds == [7, 8, 9] and other.seeds == [8, 9, 10]
    assert np.array_equal(first.predict_proba(xt), again.predict_proba(xt)) and first.kept == again.kept
    assert not np.allclose(first.predict_proba(xt), other.predict_proba(xt))
    assert first.predict_proba(xt).shape == (400, 4) and np.allclose(first.predict_proba(xt).sum(axis=1), 1)
    # stratified folds: each class spread evenly (100 items per class, 3 folds: 33 or 34 each)
    counts = pd.crosstab(first.folds, y).to_numpy()
    assert counts.min() >= 33 and counts.max() <= 34
    assert np.array_equal(first.folds, M.stratified_folds(y, 3, 7))


def test_mlp_seed_selection_never_reads_test_labels():
    """The best seeds are chosen by out-of-fold F1-macro on validation: shuffling the test labels (or dropping
    them) changes neither the seeds kept nor the stack's test probabilities; only the scores move."""
    bases = _bases()
    aligned = S.align(bases["test"])
    permuted = np.random.default_rng(5).permutation(aligned[0].labels)  # the same wrong labels for every base
    blind = [dataclasses.replace(t, labels=permuted) for t in aligned]
    results = [S.stack(bases["valid"], test, mlp=QUICK) for test in (bases["test"], blind)]
    kept = [r.meta.kept for r in results]
    probs = [S.meta_probs(r.meta, S.features(S.align(bases["test"])), 4) for r in results]
    assert kept[0] == kept[1] and np.array_equal(probs[0], probs[1])
    assert np.array_equal(results[0].result.probs, results[1].result.probs)
    assert results[0].result.metrics["f1_macro"] > 0.95 > results[1].result.metrics["f1_macro"]
    # the kept seeds are the best by the validation scores the learner records
    meta = results[0].meta
    order = sorted(range(len(meta.seeds)), key=lambda i: (-meta.scores[i], meta.losses[i], i))
    assert meta.kept == [meta.seeds[i] for i in order[:QUICK["keep"]]]
    # the fit itself is given no test data at all
    assert "test" not in " ".join(inspect.signature(M.fit_mlp_meta_learner).parameters)


def test_meta_learner_choices_and_errors():
    x, y = np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(S.StackError, match=r"unknown meta-learner stack.meta='tree': use one of mlp, logistic"):
        S.fit_meta(x, y, 2, meta="tree")
    with pytest.raises(S.StackError, match="at least two classes"):
        S.fit_meta(x, np.array([1, 1, 1, 1, 1, -1]), 2)
    with pytest.raises(S.StackError, match=r"6 labelled validation items cannot make 10 folds.*stack.meta=logistic"):
        S.fit_meta(x, y, 2, mlp={"folds": 10})
    with pytest.raises(S.StackError, match="stack.mlp.keep=4 must be between 1 and stack.mlp.seeds=3"):
        S.fit_meta(x, y, 2, mlp={"seeds": 3, "keep": 4})


def test_config_stack_section_matches_the_meta_learners():
    """``conf/config.yaml``'s ``stack`` section: MLP by default, its ``stack.mlp`` keys are exactly the keyword
    arguments of ``fit_mlp_meta_learner`` (with the same defaults), the seed is the XP's."""
    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml")
    options = S.meta_options(conf)
    assert options["meta"] == "mlp" and options["C"] == 1.0 and options["seed"] == int(conf.seed)
    params = inspect.signature(M.fit_mlp_meta_learner).parameters
    defaults = {k: p.default for k, p in params.items() if k not in ("x", "y", "n_classes", "seed")}
    assert options["mlp"] == defaults
    legacy = OmegaConf.create({"seed": 3, "stack": {"bases": ["a"], "C": 0.5}})  # a config from before stack.meta
    assert S.meta_options(legacy) == {"meta": "mlp", "C": 0.5, "seed": 3, "mlp": {}}


def test_script_plan_takes_each_stacks_own_meta_learner():
    from omegaconf import OmegaConf

    from scripts.stack import plan

    def xp(sig, stack, seed=0):
        cfg = OmegaConf.create({"seed": seed, "paths": {}, "stack": stack})
        return types.SimpleNamespace(sig=sig, folder=f"/xps/{sig}", cfg=cfg)

    own = xp("s1", {"bases": ["b1", "b2"], "meta": "logistic", "C": 0.1, "mlp": {}}, seed=9)
    ((name, folders, options, _),) = plan([own], C=1.0, meta="mlp")
    assert name == "s1" and [f.name for f in folders] == ["b1", "b2"]
    assert options == {"meta": "logistic", "C": 0.1, "seed": 9, "mlp": {}}
    plain = [xp("b1", {"bases": [], "meta": "mlp", "C": 1.0, "mlp": {"folds": 4}}, seed=777), xp("b2", {"bases": []})]
    ((name, _, options, _),) = plan(plain, C=2.0, meta="logistic")
    assert name == "stack_b1_b2" and options == {"meta": "logistic", "C": 2.0, "seed": 777, "mlp": {"folds": 4}}
    ((_, _, options, _),) = plan(plain, seed=5)
    assert options["meta"] == "mlp" and options["seed"] == 5


def test_alignment_uses_item_identity_not_row_order():
    bases = _bases(shuffle=True)
    aligned = S.align(bases["test"])
    assert list(aligned[1].keys) == list(aligned[0].keys)
    assert np.array_equal(aligned[1].labels, aligned[0].labels)
    # the same stack as without shuffling
    plain = _bases(shuffle=False)
    result = S.stack(bases["valid"], bases["test"], mlp=QUICK)
    f1 = result.result.metrics["f1_macro"]
    assert "| base 2 |  | bbbb0002 |" in result.markdown()  # no levels given: the K column stays empty
    assert f1 == pytest.approx(S.stack(plain["valid"], plain["test"], mlp=QUICK).result.metrics["f1_macro"])


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
        result.save(out, {"sig": sig, "split": split, "epochs_trained": len(history)})
    return folder


def test_stack_of_xp_folders(tmp_path):
    bases = _bases()
    folders = [_xp(tmp_path, b.sig, {"valid": v, "test": b}, k)
               for v, b, k in zip(bases["valid"], bases["test"], (5, 10))]
    loaded = S.load_split_logits(folders[1], "valid")
    assert loaded.names == NAMES and np.allclose(loaded.logits, bases["valid"][1].logits, atol=1e-5)
    result = S.stack_folders(folders, evaluate=False, mlp=QUICK)
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


def test_logits_of_an_older_checkpoint_or_an_override_are_evaluated_again(tmp_path):
    import json as _json

    from bm2.stacking import _current_logits

    out = tmp_path / "eval" / "valid"
    out.mkdir(parents=True)
    ckpt = {"history": [{}, {}, {}]}
    assert not _current_logits(out, ckpt)  # nothing evaluated yet
    np.save(out / "logits.npy", np.zeros((2, 3), dtype=np.float32))
    for meta, current in (({"epochs_trained": 3}, True), ({"epochs_trained": 2}, False),
                          ({"epochs_trained": 3, "overrides": ["dset.selections=[other]"]}, False)):
        (out / "summary.json").write_text(_json.dumps({"meta": meta}))
        assert _current_logits(out, ckpt) is current, meta


def test_a_result_without_logits_removes_the_older_file(tmp_path):
    from bm2.tasks.base import write_probs

    np.save(tmp_path / "probs.npy", np.ones(3))
    write_probs(tmp_path, None)
    assert not (tmp_path / "probs.npy").exists()
