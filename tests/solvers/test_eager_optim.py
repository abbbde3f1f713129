"""The optimisers of build_optimizer: the updates of torch's, without importing torch._dynamo at start-up."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from bm2.solvers import optim
from bm2.solvers.optim import build_optimizer, eager_optimizer_class


def _train(opt_cls: type, steps: int = 5, **kwargs) -> tuple[list[torch.Tensor], dict, int]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = opt_cls([{"params": list(model[0].parameters()), "lr": 1e-2},
                   {"params": list(model[2].parameters()), "lr": 3e-3}], **kwargs)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append(1))
    x, y = torch.randn(16, 6), torch.randn(16, 3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt.state_dict(), len(calls)


@pytest.mark.parametrize("dynamo", [False, True], ids=["direct", "torch-wrappers"])
@pytest.mark.parametrize("cls, kwargs", [(torch.optim.Adam, {"betas": (0.0, 0.99)}),
                                         (torch.optim.AdamW, {"weight_decay": 0.1}),
                                         (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})])
def test_same_updates_hooks_and_state_as_torch(cls, kwargs, dynamo, monkeypatch):
    # both paths: torch._dynamo not imported (the functions torch wraps, called directly) and imported
    monkeypatch.setattr(optim, "_dynamo_imported", lambda: dynamo)
    eager = eager_optimizer_class(cls)
    assert eager is not cls and issubclass(eager, cls) and eager.__name__ == cls.__name__
    ours, our_state, our_calls = _train(eager, **kwargs)
    theirs, their_state, their_calls = _train(cls, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert our_calls == their_calls == 5  # step hooks run once per step, as torch's
    assert our_state["param_groups"] == their_state["param_groups"]
    for k, v in their_state["state"].items():
        assert all(torch.equal(v[n], our_state["state"][k][n]) for n in v)
    # a checkpoint of torch's optimizer (moments, step counts) resumes in ours with the same next updates
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(torch.nn.Linear(6, 8))
    x = torch.randn(4, 6)
    plain = cls(models[0].parameters(), **({"lr": 1e-2} | kwargs))
    for _ in range(3):
        plain.zero_grad()
        models[0](x).pow(2).mean().backward()
        plain.step()
    models[1].load_state_dict(models[0].state_dict())
    resumed = eager(models[1].parameters(), **({"lr": 1e-2} | kwargs))
    resumed.load_state_dict(copy.deepcopy(plain.state_dict()))  # as read back from a checkpoint file
    for model, opt in zip(models, (plain, resumed)):
        for _ in range(2):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters()))


def test_grad_mode_restored_after_step(monkeypatch):
    monkeypatch.setattr(optim, "_dynamo_imported", lambda: False)  # the direct path (pytest may have imported it)
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer([{"params": list(model.parameters())}])
    model(torch.randn(2, 3)).sum().backward()
    with torch.enable_grad():
        opt.step()
        assert torch.is_grad_enabled()
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()


def test_unknown_optimizer_lists_the_names():
    with pytest.raises(KeyError, match="adamw"):
        build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))]}], name="lamb")


TRAIN = """
import json, sys, torch
from bm2.solvers.optim import build_optimizer
model = torch.nn.Linear(4, 2)
opt = build_optimizer([{"params": list(model.parameters())}], name=sys.argv[1], weight_decay=0.01)
for _ in range(3):
    opt.zero_grad()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
opt.load_state_dict(opt.state_dict())
before = "torch._dynamo" in sys.modules
import torch._dynamo  # noqa: E402  anything may import it later: torch's own wrappers take over
opt.zero_grad()
model(torch.randn(8, 4)).pow(2).mean().backward()
opt.step()
print(json.dumps({"dynamo_before": before, "finite": bool(torch.isfinite(model.weight).all())}))
"""


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_training_steps_do_not_import_dynamo(name):
    proc = subprocess.run([sys.executable, "-c", TRAIN, name], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"dynamo_before": False, "finite": True}


def test_optimisers_pickle_and_other_wrappings_fall_back_to_torch():
    import pickle

    opt = build_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))]}], name="adamw", weight_decay=0.1)
    assert type(opt) is optim.EagerAdamW and type(opt).__name__ == "AdamW"
    again = pickle.loads(pickle.dumps(opt))
    assert type(again) is optim.EagerAdamW and again.state_dict()["param_groups"] == opt.state_dict()["param_groups"]

    class Custom(torch.optim.Adam):  # overrides a method torch wraps: left as it is
        def zero_grad(self, set_to_none: bool = True) -> None:
            super().zero_grad(set_to_none)

    assert eager_optimizer_class(Custom) is Custom
