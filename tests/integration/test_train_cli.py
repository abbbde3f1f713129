"""Integration tests of the real ``dora run`` CLI on a tiny synthetic configuration."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ._cli import DORA, ROOT, TINY_ARGS

pytestmark = pytest.mark.slow

TINY = TINY_ARGS


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    out = dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"),
               BM2_XP_DIR=str(base / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    return out


def _dora(env, *args, timeout=300):
    """Run ``dora run ARGS``; stdout and stderr (where Hydra's logging goes) are merged into ``stdout``."""
    return subprocess.run([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


def test_dora_run_writes_history_with_test_metrics(env):
    args = TINY + ["optim.epochs=2"]
    proc = _dora(env, *args)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Test results of XP" in proc.stdout and "| segment |" in proc.stdout
    # the log says what was computed and which loader path runs
    assert re.search(r"recordings ready in [\d.]+ s: 0 cache entries read, [1-9]\d* computed", proc.stdout)
    from bm2.data import window_kernel

    assert f"brain windows by the {window_kernel.status()}" in proc.stdout
    xps = list((Path(env["BM2_XP_DIR"]) / "xps").iterdir())
    history_files = [p / "history.json" for p in xps if (p / "history.json").exists()]
    assert history_files
    history = json.loads(history_files[0].read_text())
    assert len(history) == 2
    test = history[-1]["test"]
    for key in ("top1_segment", "top10_segment", "top1_word", "top10_word", "chance_top10_segment"):
        assert 0.0 <= test[key] <= 1.0
    assert test["n_candidates"] > 10 and test["n_segments"] >= test["n_candidates"]
    assert (history_files[0].parent / "results.md").read_text().startswith("| level |")
    # running the same XP again does not train again
    again = _dora(env, *args)
    assert again.returncode == 0 and "epoch 1 |" not in again.stdout
    assert "Test results of XP" in again.stdout
    assert re.search(r"recordings ready in [\d.]+ s: [1-9]\d* cache entries read, 0 computed", again.stdout)


def test_sigkill_then_resume_loses_and_repeats_no_epoch(env):
    args = TINY + ["optim.epochs=5", "seed=7"]
    proc = subprocess.Popen([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    xp_root = Path(env["BM2_XP_DIR"]) / "xps"
    deadline = time.time() + 300
    killed_after = None
    try:
        while time.time() < deadline and proc.poll() is None:
            for folder in xp_root.glob("*"):
                history = folder / "history.json"
                if history.exists():
                    try:
                        entries = json.loads(history.read_text())
                    except json.JSONDecodeError:
                        continue
                    cfg = (folder / ".argv.json")
                    if entries and cfg.exists() and "seed=7" in cfg.read_text():
                        killed_after = len(entries)
                        os.killpg(proc.pid, signal.SIGKILL)
                        break
            if killed_after:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and not killed_after:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert killed_after is not None and killed_after < 5, "the run ended before it could be killed"
    second = _dora(env, *args)
    assert second.returncode == 0, second.stdout[-3000:]
    log = second.stdout
    assert f"after epoch {killed_after}" in log
    ran = [int(m) for m in re.findall(r" - epoch (\d+) \|", log)]
    assert ran == list(range(killed_after + 1, 6))
    folder = next(f for f in xp_root.glob("*") if "seed=7" in (f / ".argv.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 5 and "test" in history[-1]


def test_ddp_two_workers_on_cpu(env):
    args = TINY + ["optim.epochs=2", "seed=3"]
    proc = subprocess.run([DORA, "run", "-d", "--ddp_workers", "2", *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Distributed init: 0/2" in proc.stdout
    assert proc.stdout.count("Test results of XP") == 1  # only rank 0 reports and writes
    folder = next(f for f in (Path(env["BM2_XP_DIR"]) / "xps").glob("*") if "seed=3" in (f / ".argv.json").read_text())
    worker = (folder / "worker_1.log").read_text()
    assert "Distributed init: 1/2" in worker and "Test results" not in worker
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == 2 and "top10_segment" in history[-1]["test"]
    # resuming a finished distributed XP trains nothing more
    again = subprocess.run([DORA, "run", "-d", "--ddp_workers", "2", *args], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert again.returncode == 0 and " - epoch " not in again.stdout


def test_clear_errors_from_the_cli(env):
    proc = _dora(env, "dset.selections=[nope]")
    assert proc.returncode != 0 and "unknown study 'nope'" in proc.stdout and "synthetic" in proc.stdout
    assert "Traceback" not in proc.stdout and "verbose=true" in proc.stdout  # a user error: the message only
    proc = _dora(env, *TINY, "loss.name=nope")
    assert proc.returncode != 0 and "valid names" in proc.stdout
    # an unknown recipe or key: one paragraph naming the choices, not Hydra's traceback
    proc = _dora(env, "recipe=nope")
    assert proc.returncode != 0 and "Could not find 'recipe/nope'" in proc.stdout and "demega" in proc.stdout
    assert "Traceback" not in proc.stdout
    proc = _dora(env, "optim.nope=1")
    assert proc.returncode != 0 and "+optim.nope=1" in proc.stdout and "Traceback" not in proc.stdout
    proc = _dora(env, "optim.epoch=1")  # a typo: the close key is named, and Hydra's +key is flagged as ignored
    assert proc.returncode != 0 and "Did you mean optim.epochs?" in proc.stdout and "silently ignored" in proc.stdout
    proc = _dora(env, "optim.seed=1")  # a key of that name elsewhere: the shallowest first
    assert proc.returncode != 0 and "Did you mean seed or dset.split.seed?" in proc.stdout
    proc = _dora(env, "optim.amp_cpu=no")  # not a boolean: stopped before any work, naming the fix
    assert proc.returncode != 0 and "set optim.amp_cpu=true or optim.amp_cpu=false" in proc.stdout


def test_evaluation_errors_name_the_fix(env):
    evaluate = [sys.executable, "-m", "scripts.run_eval_probs"]
    proc = subprocess.run([*evaluate, "0badc0de"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=120)
    assert proc.returncode != 0 and "neither an XP signature nor a grid name" in proc.stdout
    # an XP whose test split is empty: training fails at its test stage, the evaluation says why
    run = _dora(env, *TINY, "optim.epochs=1", "dset.split.test=0")
    assert run.returncode != 0 and "test split is empty" in run.stdout
    sig = re.search(r"XP ([0-9a-f]{8}) in", run.stdout).group(1)
    proc = subprocess.run([*evaluate, sig], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=300)
    assert proc.returncode == 1 and f"XP {sig}: its test split is empty" in proc.stdout
    assert "dset.split.test" in proc.stdout
