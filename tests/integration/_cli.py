"""What the integration tests share to drive the real CLI: paths and the tiny overrides of ``grids/_tiny.py``."""

from __future__ import annotations

import sys
from pathlib import Path

from grids._tiny import TINY, TINY_MODEL, as_overrides

ROOT = Path(__file__).resolve().parents[2]
DORA = str(Path(sys.executable).parent / "dora")
TINY_ARGS = as_overrides(TINY)              # tiny synthetic study + tiny model
TINY_MODEL_ARGS = as_overrides(TINY_MODEL)  # tiny model only (fixtures of the real studies)


def cli_env(base: Path) -> dict[str, str]:
    """The environment of a CLI run whose data, cache and XPs live under ``base`` (this checkout's code first)."""
    import os

    return dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"), BM2_XP_DIR=str(base / "xps"),
                BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def dora_run(env: dict[str, str], *args: str, timeout: float = 600) -> tuple[str, Path, list[dict]]:
    """Run ``dora run ARGS`` (which must succeed); returns its output, the XP folder and its history."""
    import json
    import subprocess

    proc = subprocess.run([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sig = proc.stdout.split("Test results of XP ")[1].split()[0]
    folder = Path(env["BM2_XP_DIR"]) / "xps" / sig
    return proc.stdout, folder, json.loads((folder / "history.json").read_text())
