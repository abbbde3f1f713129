"""``grids/libribrain/``: the DeMEGa, baselines, synthetic and tiny grids sign through the real ``dora grid
--dry_run --init`` (each stack names the bases of its grouping levels, which share the evaluation grouping and
seed); the tiny grid runs end to end (slow): two base models, then the stacking XP, then ``scripts.stack``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ._cli import DORA, ROOT, cli_env

pytestmark = pytest.mark.slow  # 10-30 s per grid: Dora composes the config of every XP it signs
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _run(args, env, check=True, timeout=600) -> str:
    proc = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    out = ANSI.sub("", proc.stdout)
    if check:
        assert proc.returncode == 0, out[-4000:]
    return out


def _sigs(out: str) -> list[str]:
    """The signatures of the rows printed by ``dora grid`` (in grid order)."""
    return re.findall(r"^\s*\d+\s+.*?\s+N/A\s+([0-9a-f]{8})\s", out, re.M)


def _argv(env, sig) -> dict[str, str]:
    argv = json.loads((Path(env["BM2_XP_DIR"]) / "xps" / sig / ".argv.json").read_text())
    return dict(a.split("=", 1) for a in argv)


@pytest.mark.parametrize("grid, n_stacks, n_levels", [("libribrain.demega", 3, 5), ("libribrain.baselines", 2, 5),
                                                      ("libribrain.synthetic", 2, 3), ("libribrain.tiny", 1, 2)])
def test_libribrain_grids_sign_bases_and_stacks(grid, n_stacks, n_levels, tmp_path):
    env = cli_env(tmp_path)
    sigs = _sigs(_run([DORA, "grid", grid, "--dry_run", "--init"], env, timeout=300))
    assert len(sigs) == n_stacks * (n_levels + 1) and len(set(sigs)) == len(sigs), sigs
    for i in range(n_stacks):  # each stack comes right after its bases
        *bases, stack = sigs[i * (n_levels + 1):(i + 1) * (n_levels + 1)]
        argv = _argv(env, stack)
        assert json.loads(argv["stack.bases"]) == bases
        levels = [int(_argv(env, b).get("dset.grouping.k", 1)) for b in bases]
        assert len(set(levels)) == n_levels, levels
        for key in ("dset.grouping.valid_k", "dset.grouping.test_k", "seed", "model"):
            assert len({_argv(env, b).get(key) for b in bases}) == 1, key  # shared by the bases of one stack
    if grid == "libribrain.demega":
        assert _argv(env, sigs[0])["dset.grouping.test_k"] == "100"
        assert json.loads(_argv(env, sigs[0])["dset.selections"]) == ["libribrain2025"]
    if grid == "libribrain.baselines":
        assert {_argv(env, s)["model"] for s in sigs} == {"simpleconv", "eegconformer"}


def test_tiny_stack_runs_after_its_bases(tmp_path):
    env = cli_env(tmp_path)
    base1, base2, stack = _sigs(_run([DORA, "grid", "libribrain.tiny", "--dry_run", "--init"], env, timeout=300))
    early = _run([DORA, "run", "-f", stack], env, check=False)
    assert f"base XP {base1} has not finished" in early and f"dora run -f {base1}" in early
    history = {}
    for sig in (base1, base2):
        assert "Test results of XP" in _run([DORA, "run", "-f", sig], env)
        history[sig] = json.loads((Path(env["BM2_XP_DIR"]) / "xps" / sig / "history.json").read_text())
    out = _run([DORA, "run", "-f", stack], env)
    assert f"Test results of XP {stack} (stack of 2 base XPs" in out and "| stack |" in out
    folder = Path(env["BM2_XP_DIR"]) / "xps" / stack
    table = pd.read_csv(folder / "stack.csv", dtype={"sig": str})
    assert table["model"].tolist() == ["demega", "demega", "stack"] and table["k"].tolist()[:2] == [1, 2]
    # the base rows re-evaluate each base's best state on its test split: the same F1-macro as its own run
    for row in table.iloc[:2].itertuples():
        assert row.test_f1_macro == pytest.approx(history[row.sig][-1]["test"]["f1_macro"], abs=1e-9)
    stack_history = json.loads((folder / "history.json").read_text())
    assert stack_history[-1]["test"]["f1_macro"] == pytest.approx(table["test_f1_macro"].iloc[2])
    assert 0.0 <= table["test_f1_macro"].iloc[2] <= 1.0 and (folder / "eval" / "summary.json").exists()
    for sig in (base1, base2):  # the bases' validation and test logits, aligned item by item
        items = [pd.read_csv(Path(env["BM2_XP_DIR"]) / "xps" / sig / sub / "items.csv") for sub in ("eval",
                                                                                                   "eval/valid")]
        assert len(items[0]) > 0 and len(items[1]) > 0
    script = _run([sys.executable, "-m", "scripts.stack", base1, base2, "--out", str(tmp_path / "stacks")], env)
    assert f"| demega | 1 | {base1} |" in script and f"| demega | 2 | {base2} |" in script
    again = pd.read_csv(tmp_path / "stacks" / f"stack_{base1}_{base2}" / "stack.csv", dtype={"sig": str})
    assert again["test_f1_macro"].tolist() == pytest.approx(table["test_f1_macro"].tolist())
    missing = _run([sys.executable, "-m", "scripts.stack", base1, stack], env, check=False)
    assert "stack" in missing and "not stacked together" in missing


def test_tiny_stack_waits_for_both_bases_on_slurm(local_slurm, tmp_path):
    """On SLURM the stacking XP's job is submitted with ``afterok`` on the jobs of both its bases."""
    env = {**cli_env(tmp_path), **local_slurm.env()}
    out = _run([DORA, "grid", "libribrain.tiny", "--no_monitoring"], env, timeout=300)
    rows = re.findall(r"\b(?:COM|FAI|RUN|PEN|CAN|REQ|UNK|COMPLETING)\w*\s+([0-9a-f]{8})\s+(\d+)\s*\|", out)
    jobs = dict(rows)
    try:
        assert len(jobs) == 3, out[-3000:]
        base1, base2, stack = (sig for sig, _ in rows)
        folder = Path(env["BM2_XP_DIR"]) / "xps"
        script = next((folder / stack / "submitit").glob(f"{jobs[stack]}_submission.sh")).read_text()
        assert f"--dependency=afterok:{jobs[base1]}:{jobs[base2]}" in script
        assert "--dependency" not in next((folder / base1 / "submitit").glob("*_submission.sh")).read_text()
    finally:  # the bases would train for a minute: free the node for the other tests
        if jobs:
            subprocess.run(["scancel", *jobs.values()], env=env, check=False)
