"""The Du-IN classifier recipe through the real ``dora run`` on a tiny synthetic sEEG study (pickle layout, read
by the duin2024 loader): one window per 3-s trial, a stratified 80 / 10 / 10 split, every word in every split."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._cli import DORA, ROOT, TINY_MODEL_ARGS, cli_env, dora_run

pytestmark = pytest.mark.slow

#: 2 subjects x 2 runs x 6 words x 5 repeats, 6 contacts; 100 Hz model rate so that one epoch takes seconds
TINY_SEEG = ["studies.synthetic_seeg.n_subjects=2", "studies.synthetic_seeg.n_runs=2",
             "studies.synthetic_seeg.n_words=6", "studies.synthetic_seeg.repeats=5",
             "studies.synthetic_seeg.n_channels=6", "studies.synthetic_seeg.n_responsive=3",
             "preprocess.sample_rate=100", "optim.epochs=1", "optim.warmup=0"]


def test_duin_classifier_recipe_runs_one_epoch(tmp_path):
    out, folder, history = dora_run(cli_env(tmp_path), *TINY_MODEL_ARGS, "recipe=duin_classifier", *TINY_SEEG)
    assert "| top-1 |" in out
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


def _dora(args, env, check=True):
    import re

    proc = subprocess.run([DORA, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    if check:
        assert proc.returncode == 0, out[-4000:]
    return out


def _grid_rows(out: str) -> list[tuple[str, str]]:
    """``(name, sig)`` of each row of the table printed by ``dora grid`` (in grid order)."""
    import re

    return [(m.group(1), m.group(2)) for m in re.finditer(r"^\s*\d+\s+(.*?)\s+N/A\s+([0-9a-f]{8})\s", out, re.M)]


#: the stage keys of grids duin.synthetic / duin.tiny, in grid order (grids.duin.plan: parents first)
STAGES = ["all/vqvae", "all/mae"] + [f"{s}/{n}" for s in ("001", "002") for n in
                                     ("vqvae", "mae", "cls_scratch", "cls_vqvae", "cls_mae", "cls_conformer",
                                      "cls_multi")]


def test_duin_chain_grids_sign_the_three_stages(tmp_path):
    """Per subject VQ-VAE -> MAE, the three ablations (no pre-training, VQ-VAE only through chain.rename, MAE) and
    braindecode's EEGConformer, plus the multi-subject pre-training and its per-subject classifiers; the local
    command signs the same XPs."""
    env = dict(os.environ, BM2_XP_DIR=str(tmp_path / "xps"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rows = _grid_rows(_dora(["grid", "duin.synthetic", "--dry_run", "--init"], env))
    assert len(rows) == len(STAGES) and len({sig for _, sig in rows}) == len(STAGES), rows
    name, sig = dict(zip(STAGES, (n for n, _ in rows))), dict(zip(STAGES, (s for _, s in rows)))
    assert name["all/vqvae"] == "recipe=duin_vqvae" and "dse.subjects" not in name["all/mae"]
    assert f"cha.parent={sig['all/vqvae']}" in name["all/mae"]
    for s in ("001", "002"):
        assert all(f"dse.subjects=['{s}']" in name[f"{s}/{n}"] for n in ("vqvae", "mae", "cls_scratch", "cls_multi"))
        assert name[f"{s}/vqvae"].startswith("recipe=duin_vqvae")
        mae = name[f"{s}/mae"]
        assert mae.startswith("recipe=duin_mae") and f"cha.parent={sig[f'{s}/vqvae']}" in mae
        assert "cha.freeze=['vqvae']" in mae and "cha.modules=['vqvae']" in mae
        assert name[f"{s}/cls_scratch"] == f"recipe=duin_classifier model=duin dse.subjects=['{s}']"
        assert name[f"{s}/cls_conformer"] == f"recipe=duin_classifier model=eegconformer dse.subjects=['{s}']"
        vq_only = name[f"{s}/cls_vqvae"]
        assert f"cha.parent={sig[f'{s}/vqvae']}" in vq_only and "cha.modules=['encoder']" in vq_only
        assert "cha.rename={'vqvae.encoder': 'encoder'}" in vq_only
        assert f"cha.parent={sig[f'{s}/mae']}" in name[f"{s}/cls_mae"]
        assert f"cha.parent={sig['all/mae']}" in name[f"{s}/cls_multi"]
    # one subject's whole chain, as the local command runs it: the grid's XPs, parents first
    proc = subprocess.run([sys.executable, "-m", "scripts.duin_chain", "synthetic", "--subject", "002", "--multi",
                           "--dry-run"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    local = re.findall(r"^== (\S+) \(XP ([0-9a-f]{8})\)", proc.stdout, re.M)
    assert local == [(k, sig[k]) for k in STAGES if k.startswith(("all/", "002/"))], local
    proc = subprocess.run([sys.executable, "-m", "scripts.duin_chain", "synthetic", "--subject", "009"], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 2 and "subjects ['009'] are not in grid duin.synthetic" in proc.stdout


def test_duin_tiny_chain_runs_stage_by_stage(tmp_path):
    """``dora grid duin.tiny --dry_run --init``, then ``dora run -f`` VQ-VAE, MAE and classifier in order: each
    finishes, and each child starts from its parent (the MAE's frozen tokenizer is the VQ-VAE's, exactly); the
    EEGConformer baseline tests on the same trials, and the chain table shows it as a row of its own."""
    import torch

    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rows = _grid_rows(_dora(["grid", "duin.tiny", "--dry_run", "--init"], env))
    assert len(rows) == len(STAGES), rows
    sigs = dict(zip(STAGES, (sig for _, sig in rows)))
    vq, mae, cls, vq_only = (sigs[f"001/{n}"] for n in ("vqvae", "mae", "cls_mae", "cls_vqvae"))
    folder = Path(env["BM2_XP_DIR"]) / "xps"
    early = _dora(["run", "-f", mae], env, check=False)
    assert f"parent XP {vq}" in early and f"dora run -f {vq}" in early

    out = _dora(["run", "-f", vq], env)
    assert "task pretraining" in out and "| reconstruction |" in out
    history = json.loads((folder / vq / "history.json").read_text())
    assert len(history) == 2
    assert {"reconstruction", "commitment", "perplexity", "dead_codes"} <= set(history[-1]["test"])
    assert 1.0 <= history[-1]["test"]["perplexity"] <= 32.0 and history[-1]["test"]["reconstruction"] > 0
    vq_state = torch.load(folder / vq / "checkpoint.th", weights_only=True)["best_state"]
    assert bool(vq_state["vqvae.codebook.initialised"])
    assert torch.allclose(vq_state["vqvae.codebook.embed"].norm(dim=1), torch.ones(32), atol=1e-5)

    out = _dora(["run", "-f", mae], env)
    assert f"started from parent XP {vq}" in out and "| cross_entropy |" in out
    ckpt = torch.load(folder / mae / "checkpoint.th", weights_only=True)
    assert ckpt["parent"]["sig"] == vq and ckpt["parent"]["freeze"] == ["vqvae"]
    for key, value in vq_state.items():  # frozen: the tokenizer (weights and codebook) is the parent's, unchanged
        assert torch.equal(ckpt["best_state"][key], value), key
    test = json.loads((folder / mae / "history.json").read_text())[-1]["test"]
    assert test["cross_entropy"] > 0 and 0.0 <= test["accuracy"] <= 1.0

    out = _dora(["run", "-f", cls], env)
    assert f"started from parent XP {mae}" in out and "| top-1 |" in out
    ckpt = torch.load(folder / cls / "checkpoint.th", weights_only=True)
    assert ckpt["parent"]["sig"] == mae and ckpt["parent"]["modules"] == ["encoder"]
    history = json.loads((folder / cls / "history.json").read_text())
    test = history[-1]["test"]
    # subject 001's windows only (dset.subjects): 60 trials, 8 / 1 / 1 of 20 per word pooled over both subjects
    assert abs(test["chance_top1"] - 1 / 6) < 1e-6 and 0 < test["n_items"] < 12
    assert all("top1" in h["test_epoch"] for h in history)  # test.each_epoch: the optimistic column's input
    split_text = (folder / cls / "split.csv").read_text()
    split = split_text.splitlines()
    subject = split[0].split(",").index("subject")
    assert {line.split(",")[subject] for line in split[1:]} == {"001"} and len(split) - 1 == 60

    out = _dora(["run", "-f", vq_only], env)  # the "VQ-VAE only" ablation: the encoder renamed from the VQ-VAE's
    assert f"started from parent XP {vq}" in out and "renamed vqvae.encoder -> encoder" in out
    ckpt = torch.load(folder / vq_only / "checkpoint.th", weights_only=True)
    assert ckpt["parent"]["sig"] == vq and ckpt["parent"]["rename"] == {"vqvae.encoder": "encoder"}

    conformer = sigs["001/cls_conformer"]  # braindecode's EEGConformer (tiny), no parent, the same split
    out = _dora(["run", "-f", conformer], env)
    assert "| top-1 |" in out and "started from parent" not in out
    spec = torch.load(folder / conformer / "checkpoint.th", weights_only=True)["model_spec"]
    assert spec["name"] == "eegconformer" and spec["kwargs"]["n_times"] == 300 and spec["kwargs"]["att_depth"] == 1
    assert (folder / conformer / "split.csv").read_text() == split_text
    from bm2 import results as R

    table = R.chain_table(R.load_chain([folder / s for s in (cls, vq_only, conformer)]))
    assert list(table.index) == ["EEGConformer (braindecode), no pre-training", "VQ-VAE", "VQ-VAE → MAE", "chance"]


def test_duin_vqvae_stage_trains_with_two_ddp_workers_on_cpu(tmp_path):
    """The codebook's k-means start and moving averages all-reduce across processes (gloo): two workers finish."""
    import torch

    from grids.duin.tiny import TINY_ENCODER, TINY_SEEG, TINY_VQ

    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    args = ["recipe=duin_vqvae", *(f"{k}={v}" for k, v in TINY_SEEG.items()),
            *(f"model.duin_vqvae.{k}={v}" for k, v in {**TINY_ENCODER, **TINY_VQ}.items())]
    out = _dora(["run", "-d", "--ddp_workers", "2", *args], env)
    assert "Distributed init: 0/2" in out and out.count("Test results of XP") == 1
    sig = out.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    assert "Distributed init: 1/2" in (folder / "worker_1.log").read_text()
    state = torch.load(folder / "checkpoint.th", weights_only=True)["best_state"]
    assert bool(state["vqvae.codebook.initialised"]) and float(state["vqvae.codebook.cluster_size"].sum()) > 0
    assert len(json.loads((folder / "history.json").read_text())) == 2
