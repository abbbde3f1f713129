"""``dora run recipe=demega`` on a tiny synthetic LibriBrain-like study (1 epoch, tiny DeMEGa): trains with the
multi-task objective, selects on validation F1-macro and prints the classification table."""

from __future__ import annotations


import pytest

from ._cli import cli_env, dora_run

pytestmark = pytest.mark.slow
TINY_LIBRI = ["studies.libribrain_synthetic.n_train_runs=2", "studies.libribrain_synthetic.run_seconds=30"]
TINY_DEMEGA = ["model.demega.dim=16", "model.demega.n_layers=1", "model.demega.n_heads=2", "model.demega.ff_dim=32",
               "model.demega.embed_hidden=16", "model.demega.embed_dim=16", "model.demega.ipa_hidden=8",
               "model.demega.proj_dim=16", "optim.batch_size=32", "num_threads=1", "optim.epochs=1"]


def test_demega_recipe_trains_and_evaluates(tmp_path):
    out, _, history = dora_run(cli_env(tmp_path), "recipe=demega", *TINY_LIBRI, *TINY_DEMEGA)
    assert "| F1-macro |" in out
    assert len(history) == 1
    epoch = history[-1]
    train = epoch["train"]
    for term in ("classification", "supcon", "ipa", "focal", "cross_entropy"):
        assert term in train and train[term] == train[term] and train[term] >= 0.0, (term, train)
    assert 0.0 <= epoch["valid"]["f1_macro"] <= 1.0
    for key in ("top1", "balanced_accuracy", "f1_macro"):
        assert 0.0 <= epoch["test"][key] <= 1.0, (key, epoch["test"])
