"""The generic solver: a run on tiny data, the split manifest, and no resume on other data."""

import json

import pytest

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
from bm2.features import FeatureStack, WordOnset
from bm2.models import build_model
from bm2.objectives import build_objective
from bm2.preprocessing import PreprocessParams
from bm2.solvers.base import CheckpointError, LocalLink
from bm2.solvers.solver import OptimParams, Solver
from bm2.tasks import get_task


def _datasets(array_recording, tmp_path, seed):
    recs = [array_recording(seed=seed, subject="01"), array_recording(seed=seed + 1, subject="02")]
    return build_datasets(recs, Cache(tmp_path / "cache"), PreprocessParams(sample_rate=50.0),
                          FeatureStack([WordOnset()]), WindowParams(tmin=-0.5, tmax=1.5, stride=0.5),
                          SplitParams(0.0, 0.0), NormParams())


def _solver(folder, datasets, **optim):
    model = build_model("simpleconv", out_channels=datasets.feature_dim, n_subjects=datasets.n_subjects,
                        merger_channels=8, merger_pos_dim=32, hidden=8, depth=1, head_hidden=8)
    params = OptimParams(epochs=2, batch_size=4, patience=None, **optim)
    return Solver(folder, LocalLink(), model, build_objective("mse"), datasets, get_task("retrieval"), params)


def test_train_valid_and_manifest_then_refuse_resume_on_other_data(array_recording, tmp_path, monkeypatch):
    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train  # tiny data: no blocks to spare for a valid split
    solver = _solver(tmp_path / "xp", datasets, ema=0.9, scheduler="cosine", scheduler_per_step=True, warmup=0.5)
    # train and valid only (the retrieval test needs word windows this toy split does not have)
    monkeypatch.setattr(Solver, "test_stage", lambda self: {"done": 1.0})
    last = solver.run()
    assert len(solver.history) == 2 and last["test"] == {"done": 1.0}
    assert "mse" not in last["train"] and last["train"]["loss"] > 0
    manifest = (tmp_path / "xp" / "split.csv").read_text().splitlines()
    assert manifest[0].startswith("split,study,subject") and len(manifest) == 1 + len(datasets.train) * 2
    other = _datasets(array_recording, tmp_path, seed=10)
    other.valid = other.train
    again = _solver(tmp_path / "xp", other, ema=0.9, scheduler="cosine", scheduler_per_step=True, warmup=0.5)
    with pytest.raises(CheckpointError, match="trained on other data.*studies.bids.name"):
        again.restore()
    same = _solver(tmp_path / "xp", _datasets(array_recording, tmp_path, seed=0), ema=0.9, scheduler="cosine",
                   scheduler_per_step=True, warmup=0.5)
    assert same.restore() and len(same.history) == 2
    assert json.loads(json.dumps(same.extra_checkpoint["data"]))["n_recordings"] == 2


def test_best_metric_must_be_a_validation_metric(array_recording, tmp_path):
    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    solver = _solver(tmp_path / "xp2", datasets, best_metric="bogus", best_mode="max")
    solver.train_stage()
    with pytest.raises(KeyError, match="not a validation metric"):
        solver.valid_stage()


def test_bf16_autocast_only_where_native_and_losses_stay_float32(array_recording, tmp_path, monkeypatch):
    import torch

    from bm2.utils import precision

    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert _solver(tmp_path / "a", datasets, amp_cpu=True).amp_dtype is None  # not assumed: fp32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert _solver(tmp_path / "b", datasets).amp_dtype is None  # off unless asked (optim.amp_cpu)
    solver = _solver(tmp_path / "c", datasets, amp_cpu=True)
    assert solver.amp_dtype == torch.bfloat16
    batch = next(iter(solver._loader("train", shuffle=False)))
    seen = {}
    def record(module, inputs, output):
        seen["dtype"] = output.dtype

    hook = solver.model.head.register_forward_hook(record)
    terms = solver._terms(batch, solver.model)
    hook.remove()
    assert seen["dtype"] == torch.bfloat16  # the forward ran in bf16
    assert all(v.dtype == torch.float32 for v in terms.values())  # the loss in float32
    assert precision.autocast_dtype("cuda", cuda=True) == torch.bfloat16
    assert precision.autocast_dtype("cpu", cpu=False) is None


def test_resume_refused_when_a_default_or_recipe_changed_under_the_same_signature(array_recording, tmp_path,
                                                                                  monkeypatch):
    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    monkeypatch.setattr(Solver, "test_stage", lambda self: {"done": 1.0})
    config = {"optim": {"lr": 3e-4, "epochs": 2}, "paths": {"data": "/a"}, "dset": {"label": {"top_n": 10}}}
    solver = _solver(tmp_path / "xp", datasets)
    solver.extra_checkpoint["config"] = config
    solver.run()
    moved = _solver(tmp_path / "xp", datasets)  # data elsewhere, a key added since: same XP
    moved.ignore_config = ("paths.*",)
    moved.extra_checkpoint["config"] = {**config, "paths": {"data": "/b"}, "optim": {**config["optim"], "ema": 0.0}}
    assert moved.restore()
    changed = _solver(tmp_path / "xp", datasets)
    changed.ignore_config = ("paths.*",)
    changed.extra_checkpoint["config"] = {**config, "optim": {"lr": 1e-3, "epochs": 2}}
    with pytest.raises(CheckpointError, match=r"another configuration.*optim.lr: 0.0003 -> 0.001.*--clear"):
        changed.restore()


def test_swa_averages_epoch_end_weights_and_is_evaluated(array_recording, tmp_path, monkeypatch):
    import torch

    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    monkeypatch.setattr(Solver, "test_stage", lambda self: {"done": 1.0})
    solver = _solver(tmp_path / "swa", datasets, swa=True, swa_start=1)
    assert solver.eval_model() is solver.model  # nothing averaged yet
    snapshots = []
    original = solver.train_stage

    def train_and_snapshot():
        out = original()
        snapshots.append({k: v.detach().clone() for k, v in solver.model.state_dict().items()})
        return out

    monkeypatch.setattr(solver, "train_stage", train_and_snapshot)
    monkeypatch.setattr(solver, "load_best_state", lambda state: None)  # keep the final average to check it
    solver.run()
    assert int(solver.swa.n_averaged) == 2 and solver.eval_model() is solver.swa.module
    key = "head.0.weight"
    # the average of the two epoch-end weights, exactly
    average = (snapshots[0][key] + snapshots[1][key]) / 2
    torch.testing.assert_close(solver.swa.module.state_dict()[key], average)
    with pytest.raises(ValueError, match="choose one"):
        _solver(tmp_path / "both", datasets, swa=True, ema=0.9)


@pytest.mark.parametrize("structured", [False, True])
def test_threaded_loader_trains_exactly_as_torch_dataloader(array_recording, tmp_path, structured):
    import numpy as np
    import torch

    from bm2.data.loader import BatchLoader
    from bm2.data.samplers import ClassStructuredBatchSampler

    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    weights = {}
    for loader, workers in (("threads", 2), ("threads", 0), ("processes", 0)):
        torch.manual_seed(0)
        model = build_model("simpleconv", out_channels=datasets.feature_dim, n_subjects=datasets.n_subjects,
                            merger_channels=8, merger_pos_dim=32, hidden=8, depth=1, head_hidden=8)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        # dset.batches.strategy=class_structured: batches of 2 windows of an anchor class + 1 of each other class
        sampler = ClassStructuredBatchSampler(np.arange(len(datasets.train)) % 3, [0, 1, 2], positives=2,
                                              negatives=1, seed=1) if structured else None
        solver = Solver(tmp_path / f"xp_{loader}{workers}", LocalLink(), model, build_objective("mse"), datasets,
                        get_task("retrieval"), OptimParams(epochs=1, batch_size=4, patience=None),
                        num_workers=workers, loader=loader, batch_sampler=sampler)
        made = solver._loader("train", shuffle=True)
        assert isinstance(made, BatchLoader) == (loader == "threads")
        if loader == "threads":
            assert made.pool is solver._loader("valid", shuffle=False).pool  # one pool for the run
        if structured:
            first = next(iter(made))["index"].tolist()
            assert first == next(iter(sampler))  # the sampler's batches, not shuffled ones
        solver.train_stage()
        weights[(loader, workers)] = {k: v.clone() for k, v in model.state_dict().items()}
        assert not all(torch.equal(initial[k], v) for k, v in weights[(loader, workers)].items())  # it trained
    reference = weights[("processes", 0)]
    for key, state in weights.items():
        assert all(torch.equal(state[k], reference[k]) for k in reference), key
    with pytest.raises(ValueError, match="loader='fibers'"):
        Solver(tmp_path / "bad", LocalLink(), model, build_objective("mse"), datasets, get_task("retrieval"),
               loader="fibers")


def test_a_resumed_run_continues_the_random_draws_of_an_uninterrupted_one(array_recording, tmp_path):
    """Killed after epoch 1 and resumed (with the RNG disturbed in between) = two epochs in one go."""
    import random

    import numpy as np
    import torch

    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train

    def solver(folder, epochs):
        torch.manual_seed(0)
        model = build_model("simpleconv", out_channels=datasets.feature_dim, n_subjects=datasets.n_subjects,
                            merger_channels=8, merger_pos_dim=32, hidden=8, depth=1, head_hidden=8,
                            conv_dropout=0.5)
        return Solver(folder, LocalLink(), model, build_objective("mse"), datasets, get_task("retrieval"),
                      OptimParams(epochs=epochs, batch_size=4, patience=None))

    def train(s):
        while not s.should_stop():
            s.history.append({"train": s.train_stage(), "valid": s.valid_stage()})
            s.save_checkpoint()
        return {k: v.clone() for k, v in s.model.state_dict().items()}

    straight = train(solver(tmp_path / "straight", epochs=2))
    first = solver(tmp_path / "resumed", epochs=1)
    train(first)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # a new process starts from other states
    resumed = solver(tmp_path / "resumed", epochs=2)
    assert resumed.restore() and len(resumed.history) == 1
    weights = train(resumed)
    assert all(torch.equal(weights[k], straight[k]) for k in straight)
    assert np.random.get_state()[1].dtype == np.uint32  # numpy's state came back in its own form


@pytest.mark.slow
# dynamo reads .grad of non-leaf tensors while it inspects the module (a warning of torch's own, not of bm2's)
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf:UserWarning")
def test_compile_trains_through_torch_compile_with_the_eager_numbers(array_recording, tmp_path, monkeypatch):
    """optim.compile: the training forward is compiled (inductor), the saved model is the plain one, and one epoch
    gives the eager epoch's loss (to float32 reordering)."""
    import torch

    datasets = _datasets(array_recording, tmp_path, seed=0)
    datasets.valid = datasets.train
    monkeypatch.setattr(Solver, "test_stage", lambda self: {"done": 1.0})
    import torch._inductor.config

    # inductor draws dropout masks with its own generator unless told to use eager's (the same masks here)
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    losses = {}
    for compile_ in (False, True):
        torch.manual_seed(0)
        solver = _solver(tmp_path / f"xp{compile_}", datasets, compile=compile_)
        assert (solver.train_model is not solver.ddp_model) == compile_
        losses[compile_] = solver.run()["train"]["loss"]
        if compile_:
            assert isinstance(solver.train_model, torch._dynamo.eval_frame.OptimizedModule)
            assert solver.train_model._orig_mod is solver.model
            saved = torch.load(solver.checkpoint_path, weights_only=False)  # the plain module's keys
            keys = [k for state in (saved["states"]["model"], saved["best_state"]) for k in state]
            assert keys and not any("_orig_mod" in k for k in keys)
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
