"""A 1-epoch ``dora run`` on each real study's fixture, written in the study's on-disk format (tests/studies)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.studies import fixtures
from tests.studies.fixtures_kit import write_gwilliams_kit
from tests.studies.fixtures_mous import write_mous

from ._cli import DORA, ROOT, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow

TINY = TINY_MODEL_ARGS + ["optim.epochs=1", "dset.split.test=0.25", "dset.split.valid=0.25"]


def _writer(name):
    def gwilliams(root):  # KIT .con recordings, as in MEG-MASC
        return write_gwilliams_kit(root), ["dset.features=[mel]"]

    def bids(root):
        return fixtures.write_bids(root), ["dset.features=[mel]"] + fixtures.BIDS_OPTIONS

    def brennan(root):
        return fixtures.write_brennan(root), ["dset.features=[mel]"]

    def broderick(root):
        return fixtures.write_broderick(root), ["dset.features=[word_onset]"]

    def schoffelen(root):
        return write_mous(root), ["dset.features=[mel]"]

    return {"gwilliams2022": gwilliams, "bids": bids, "brennan2019": brennan, "broderick2019": broderick,
            "schoffelen2019": schoffelen}[name]


@pytest.mark.parametrize("study", ["gwilliams2022", "schoffelen2019", "bids", "brennan2019", "broderick2019"])
def test_one_epoch_dora_run(study, tmp_path):
    data = tmp_path / "data"
    meta, extra = _writer(study)(data / study)
    env = dict(os.environ, BM2_DATA=str(data), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    seed = fixtures.split_seed(meta["uids"])
    args = TINY + extra + [f"dset.selections=[{study}]", f"paths.studies.{study}={data / study}",
                           f"dset.split.seed={seed}"]
    proc = subprocess.run([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Test results of XP" in proc.stdout
    history = next((tmp_path / "xps" / "xps").glob("*/history.json"))
    entries = json.loads(history.read_text())
    assert len(entries) == 1 and entries[-1]["test"]["n_candidates"] > 0
