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


def test_demega_recipe_reports_the_inference_addons(tmp_path):
    """TTA and db4 denoising switched on: the table and the history give each variant next to the plain test; the
    offline evaluation switches TTA on for the trained XP (with an override) and writes its variant's outputs."""
    import json
    import subprocess
    import sys

    from ._cli import ROOT

    env = cli_env(tmp_path)
    out, folder, history = dora_run(env, "recipe=demega", *TINY_LIBRI, *TINY_DEMEGA, "test.tta.enabled=true",
                                    "test.denoise.enabled=true")
    assert "| inference add-on | top-1 % | balanced accuracy % | F1-macro % |" in out
    for row in ("| none |", "| wavelet denoising |", "| test-time augmentation |",
                "| wavelet denoising + test-time augmentation |"):
        assert row in out, row
    test = history[-1]["test"]
    for suffix in ("", "_denoise", "_tta", "_denoise_tta"):
        for key in ("f1_macro", "balanced_accuracy"):
            assert 0.0 <= test[key + suffix] <= 1.0, (key + suffix, test)
    assert history[-1]["test_settings"]["tta"]["shifts"] == [2, 4, 6]
    assert history[-1]["test_settings"]["denoise"]["wavelet"] == "db4"
    proc = subprocess.run([sys.executable, "-m", "scripts.run_eval_probs", folder.name, "--tta",
                           "--override", "test.tta.shifts=[]", "--override", "test.tta.noise=0",
                           "--override", "test.tta.channel_dropout=0", "--override", "test.denoise.enabled=false"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:]
    summary = json.loads((folder / "eval" / "summary.json").read_text())["metrics"]
    assert summary["f1_macro"] == test["f1_macro"]
    assert summary["f1_macro_tta"] == summary["f1_macro"]  # only the original view is left
    assert "f1_macro_denoise" not in summary
    assert (folder / "eval" / "tta" / "probs.npy").exists()
