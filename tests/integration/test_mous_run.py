"""A 1-epoch ``dora run`` on the schoffelen2019 (MOUS) fixture: CTF .ds folders written by
tests/studies/fixtures_mous.py (see the docstring of tests/studies/test_schoffelen2019.py for what the fixture
does and does not cover of the real format)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.studies import fixtures
from tests.studies.fixtures_mous import write_mous

from ._cli import DORA, ROOT, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow

TINY = TINY_MODEL_ARGS + ["optim.epochs=1", "dset.split.test=0.25", "dset.split.valid=0.25"]


def test_one_epoch_dora_run_mous(tmp_path):
    data = tmp_path / "data"
    root = data / "schoffelen2019"
    meta = write_mous(root)
    env = dict(os.environ, BM2_DATA=str(data), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    seed = fixtures.split_seed(meta["uids"])
    args = TINY + ["dset.features=[mel]", "dset.selections=[schoffelen2019]",
                   f"paths.studies.schoffelen2019={root}", f"dset.split.seed={seed}"]
    proc = subprocess.run([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Test results of XP" in proc.stdout
    history = next((tmp_path / "xps" / "xps").glob("*/history.json"))
    entries = json.loads(history.read_text())
    assert len(entries) == 1 and entries[-1]["test"]["n_candidates"] > 0
