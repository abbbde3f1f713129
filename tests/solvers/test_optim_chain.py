"""Optimisation pieces and chained XPs: parameter groups, schedules, EMA, loading a parent's best state."""

import math

import pytest
import torch
from torch import nn

from bm2.solvers.chain import ChainError, load_from_parent, parent_state, rename_keys
from bm2.solvers.optim import WarmupCosine, build_ema, build_optimizer, build_scheduler, param_groups


class _Net(nn.Module):
    def __init__(self, out=3):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.head = nn.Linear(8, out)

    def forward(self, x):
        return self.head(self.encoder(x))


def test_param_groups_default_is_one_group_in_module_order():
    net = _Net()
    groups = param_groups({"": net}, lr=1e-3, weight_decay=0.0)
    assert len(groups) == 1 and [id(p) for p in groups[0]["params"]] == [id(p) for p in net.parameters()]


def test_lr_mult_and_no_decay_on_norms_and_biases():
    net = _Net()
    groups = param_groups({"": net}, lr=1e-3, weight_decay=0.1, lr_mult={"encoder": 0.1}, no_decay_norm_bias=True)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_param[id(net.encoder[0].weight)] == pytest.approx((1e-4, 0.1))
    assert by_param[id(net.encoder[0].bias)] == pytest.approx((1e-4, 0.0))
    assert by_param[id(net.encoder[1].weight)] == pytest.approx((1e-4, 0.0))  # BatchNorm weight
    assert by_param[id(net.head.weight)] == pytest.approx((1e-3, 0.1))
    with pytest.raises(KeyError, match="match no trainable parameter"):
        param_groups({"": net}, 1e-3, 0.0, lr_mult={"decoder": 0.1})
    opt = build_optimizer(groups, "adamw", 1e-3, (0.9, 0.999), 0.1)
    assert isinstance(opt, torch.optim.AdamW)


def test_warmup_cosine_shape_and_equivalence_with_cosine_annealing():
    net = _Net()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = WarmupCosine(opt, total=10, warmup=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1 / 3) and lrs[1] == pytest.approx(2 / 3) and lrs[2] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    # without warm-up, per epoch: the schedule brainmagick used (CosineAnnealingLR)
    opt2 = torch.optim.SGD(net.parameters(), lr=1.0)
    assert isinstance(build_scheduler(opt2, "cosine", 5, 100), torch.optim.lr_scheduler.CosineAnnealingLR)
    assert build_scheduler(opt2, None, 5, 100) is None


def test_ema_tracks_an_average_of_the_weights():
    net = nn.Linear(2, 1, bias=False)
    ema = build_ema(net, 0.5)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema.module.weight.data.fill_(0.0)
    for value in (1.0, 1.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update_parameters(net)
    # the first update copies the weights (AveragedModel), the second averages: 0.5 * 1 + 0.5 * 1
    torch.testing.assert_close(ema.module.weight, torch.ones(1, 2))
    assert build_ema(net, 0.0) is None
    with pytest.raises(ValueError):
        build_ema(net, 1.5)


def _checkpoint(path, model, finished=True):
    from bm2.solvers.base import CHECKPOINT_VERSION

    history = [{"train": {"loss": 1.0}, "valid": {"loss": 1.0}}]
    if finished:
        history[-1]["test"] = {"accuracy": 0.5}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path.mkdir(parents=True)
    torch.save({"version": CHECKPOINT_VERSION, "history": history, "best_state": state,
                "states": {"model": state}}, path / "checkpoint.th")


def test_child_loads_the_parent_encoder_but_not_a_head_of_another_size(tmp_path):
    parent = _Net(out=5)
    _checkpoint(tmp_path / "parent", parent)
    ckpt = parent_state(tmp_path / "parent", "parent")
    child = _Net(out=3)
    loaded = load_from_parent(child, ckpt, "parent", exclude=["head"])
    assert loaded and all(k.startswith("encoder.") for k in loaded)
    torch.testing.assert_close(child.encoder[0].weight, parent.encoder[0].weight)
    assert not torch.equal(child.head.weight[:3], parent.head.weight[:3])
    with pytest.raises(ChainError, match="shapes differ.*head"):
        load_from_parent(_Net(out=3), ckpt, "parent")
    with pytest.raises(ChainError, match="selects no weight"):
        load_from_parent(_Net(out=3), ckpt, "parent", modules=["decoder"])


def test_unfinished_or_missing_parent_is_refused_with_the_command(tmp_path):
    _checkpoint(tmp_path / "half", _Net(), finished=False)
    with pytest.raises(ChainError, match="has not finished.*dora run -f half"):
        parent_state(tmp_path / "half", "half")
    with pytest.raises(ChainError, match="dora run -f nope"):
        parent_state(tmp_path / "nope", "nope")


class _Wrapped(nn.Module):
    """A parent whose encoder lives under another prefix (``stage1.encoder``), next to a ``stage1.decoder``."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Module()
        self.stage1.encoder = _Net().encoder
        self.stage1.decoder = nn.Linear(8, 4)


def test_rename_moves_a_parent_prefix_onto_the_child_module(tmp_path):
    parent = _Wrapped()
    _checkpoint(tmp_path / "p", parent)
    ckpt = parent_state(tmp_path / "p", "p")
    child = _Net(out=3)
    loaded = load_from_parent(child, ckpt, "p", modules=["encoder"], rename={"stage1.encoder": "encoder"})
    assert sorted(loaded) == sorted(k for k in child.state_dict() if k.startswith("encoder."))
    torch.testing.assert_close(child.encoder[0].weight, parent.stage1.encoder[0].weight)
    torch.testing.assert_close(child.encoder[1].running_var, parent.stage1.encoder[1].running_var)
    # without the rename nothing is under `encoder`: the error lists the parent's prefixes, nested ones included
    with pytest.raises(ChainError, match=r"selects no weight.*'stage1', 'stage1.decoder', 'stage1.encoder'"):
        load_from_parent(_Net(out=3), ckpt, "p", modules=["encoder"])
    with pytest.raises(ChainError, match=r"prefix 'stage1.enc' matches no weight.*'stage1.encoder'"):
        load_from_parent(_Net(out=3), ckpt, "p", modules=["encoder"], rename={"stage1.enc": "encoder"})


def test_rename_rules_longest_prefix_strip_and_collisions():
    source = {"a.b.w": 1, "a.c.w": 2, "x.w": 3}
    assert rename_keys(source, {"a": "z", "a.b": "y"}) == {"y.w": 1, "z.c.w": 2, "x.w": 3}
    assert rename_keys(source, {"a": ""}) == {"b.w": 1, "c.w": 2, "x.w": 3}
    assert rename_keys(source, None) == source
    with pytest.raises(ChainError, match=r"maps both 'a.b.w' and 'x.w'.*'x.w'"):
        rename_keys({"a.b.w": 1, "x.w": 3}, {"a.b": "x"}, "p")


def test_vqvae_only_ablation_starts_the_duin_classifier_from_the_vqvae_encoder(tmp_path):
    from bm2.models.duin import DuinClassifier
    from bm2.models.duin_vq import DuinVQVAE

    tiny = dict(patch=10, depth=1, n_heads=2, d_head=8, d_ff=32)
    vqvae = DuinVQVAE(out_channels=1, n_subjects=2, n_channels=3, n_times=300, n_codes=16, d_code=8,
                      decoder_depth=1, **tiny)
    _checkpoint(tmp_path / "vq", vqvae)
    ckpt = parent_state(tmp_path / "vq", "vq")
    classifier = DuinClassifier(out_channels=6, n_subjects=2, n_channels=3, n_times=300, **tiny)
    head = classifier.head[1].weight.clone()
    loaded = load_from_parent(classifier, ckpt, "vq", modules=["encoder"], rename={"vqvae.encoder": "encoder"})
    assert sorted(loaded) == sorted(k for k in classifier.state_dict() if k.startswith("encoder."))
    for key in loaded:
        torch.testing.assert_close(classifier.state_dict()[key], vqvae.state_dict()[f"vqvae.{key}"])
    assert torch.equal(classifier.head[1].weight, head)  # the head stays as initialised
