"""Du-IN's chain through the real CLI: a stage killed with SIGKILL resumes from its checkpoint, and the local
one-subject command runs the same XPs as the grid signs (per-subject chains, ablations, multi-subject variant)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from grids.duin.tiny import BASE, TINY_ENCODER, TINY_VQ

from ._cli import DORA, ROOT, cli_env

pytestmark = pytest.mark.slow

EPOCHS = 20


def _checkpoint_history(path: Path) -> list[dict] | None:
    """The history of the checkpoint (written atomically, so never half-read), or None before the first one."""
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["history"]


def test_vqvae_stage_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path):
    """``dora run`` of the tiny VQ-VAE stage, SIGKILLed once epoch 1's checkpoint exists, then the same command
    again: it resumes after the saved epochs (none redone, the saved ones unchanged) and finishes."""
    env = cli_env(tmp_path)
    args = [DORA, "run", *(f"{k}={v}" for k, v in {**BASE, "optim.epochs": EPOCHS}.items()), "recipe=duin_vqvae",
            *(f"model.duin_vqvae.{k}={v}" for k, v in {**TINY_ENCODER, **TINY_VQ}.items())]
    log = (tmp_path / "first.log").open("w")
    # own session: the kill reaches dora and anything it started, and nothing else
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    xps = tmp_path / "xps" / "xps"
    saved = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            folders = list(xps.glob("*/checkpoint.th")) if xps.exists() else []
            saved = _checkpoint_history(folders[0]) if folders else None
            if saved:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and not saved:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    first = (tmp_path / "first.log").read_text()
    assert saved, f"no checkpoint before the deadline or the end of the run:\n{first[-3000:]}"
    assert proc.returncode == -signal.SIGKILL, first[-3000:]
    folder = folders[0].parent
    saved = _checkpoint_history(folder / "checkpoint.th")  # the last checkpoint written before the kill
    k = len(saved)
    assert 1 <= k < EPOCHS and "test" not in saved[-1], f"killed too late ({k} epochs): raise EPOCHS"

    again = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=600)
    out = again.stdout
    assert again.returncode == 0, out[-4000:]
    assert f"resumed from {folder / 'checkpoint.th'} after epoch {k}" in out, out[-4000:]
    epochs = [int(m) for m in re.findall(r"epoch (\d+) \| train", out)]
    assert epochs == list(range(k + 1, EPOCHS + 1)), epochs  # the epochs left, each once; none from scratch
    history = json.loads((folder / "history.json").read_text())
    assert len(history) == EPOCHS and "test" in history[-1]
    assert history[:k] == saved  # the epochs before the kill are kept as they were
    assert "Test results of XP" in out and "| reconstruction |" in out
    state = torch.load(folder / "checkpoint.th", weights_only=True)["best_state"]
    assert bool(state["vqvae.codebook.initialised"])
