"""``recipe=lee2024`` end to end on a tiny synthetic imagined-speech study, and its 10-fold grid (slow)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._cli import ROOT, cli_env, dora_run

TINY_LEE = ["recipe=lee2024", "studies.lee2024_synthetic.repeats=3", "studies.lee2024_synthetic.sfreq=32",
            "studies.lee2024_synthetic.fmax=12", "studies.lee2024_synthetic.n_freqs=8",
            "studies.lee2024_synthetic.order=[1,2]", "preprocess.sample_rate=32", "dset.split.n_folds=3",
            "dset.split.valid=0.5", "model.inr.depth=1", "model.inr.d_ff=64", "optim.epochs=2", "optim.warmup=1",
            "loss.codebook.warmup_epochs=1", "num_threads=1"]


@pytest.mark.slow
def test_lee2024_recipe_trains_fold_0_and_prints_top1_top10_with_chance(tmp_path):
    out, folder, history = dora_run(cli_env(tmp_path), *TINY_LEE)
    assert len(history) == 2
    assert set(history[0]["train"]) >= {"align", "uniform", "codebook_uniform", "decorrelation"}
    top1 = re.search(r"\| top-1 \| ([\d.]+) \| ([\d.]+) \|", out)
    top10 = re.search(r"\| top-10 \| ([\d.]+) \| ([\d.]+) \|", out)
    assert top1 and top10, out[-2000:]
    assert float(top1.group(2)) == pytest.approx(100 / 88, abs=0.06)  # chance 1.1 %
    assert float(top10.group(2)) == pytest.approx(1000 / 88, abs=0.06)  # chance 11.4 %
    rows = (folder / "split.csv").read_text().splitlines()
    assert sum(row.startswith("test,") for row in rows) == 88  # fold 0 of 3: one trial per class


@pytest.mark.slow
def test_lee2024_grid_signs_ten_folds(tmp_path):
    env = dict(cli_env(tmp_path))
    proc = subprocess.run([str(Path(sys.executable).parent / "dora"), "grid", "lee2024", "--dry_run", "--init"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    sigs = re.findall(r"\b([0-9a-f]{8})\s+\|", re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout))
    assert len(sigs) == 10 and len(set(sigs)) == 10
    argvs = sorted((Path(env["BM2_XP_DIR"]) / "xps" / s / ".argv.json").read_text() for s in sigs)
    assert all("recipe=lee2024" in a for a in argvs)
    assert sorted(int(re.search(r"dset.split.fold=(\d)", a).group(1)) for a in argvs) == list(range(10))
