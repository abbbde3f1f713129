"""``dora run`` trains on a Neuromag-style BIDS dataset written with mne-bids (MEG + EEG + stim, bad channels,
events of duration 0 with a stim_file and a word column on the same rows), by configuration only: the
overrides below are the ones the README's "Bring your own BIDS dataset" section documents."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.studies import fixtures
from tests.studies.fixtures_bids_real import OPTIONS, write_neuromag_bids

from ._cli import DORA, ROOT, TINY_MODEL_ARGS

pytestmark = pytest.mark.slow


def test_one_epoch_on_a_neuromag_bids_dataset(tmp_path):
    root = tmp_path / "data" / "words-meg"
    meta = write_neuromag_bids(root)
    env = dict(os.environ, BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")
    seed = fixtures.split_seed(meta["uids"])
    args = TINY_MODEL_ARGS + ["optim.epochs=1", "dset.split.test=0.25", "dset.split.valid=0.25",
                              f"dset.split.seed={seed}", "dset.selections=[bids]", f"paths.studies.bids={root}",
                              "dset.features=[mel]", "preprocess.picks=[meg,eeg]", *OPTIONS]
    proc = subprocess.run([DORA, "run", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "Test results of XP" in proc.stdout
    history = json.loads(next((tmp_path / "xps" / "xps").glob("*/history.json")).read_text())
    assert len(history) == 1 and history[-1]["test"]["n_candidates"] > 0

    # The same overrides on another dataset (paths do not enter signatures) must not resume the first XP.
    other = tmp_path / "data" / "words-meg-copy"
    write_neuromag_bids(other)
    again = subprocess.run([DORA, "run", *[a if not a.startswith("paths.studies.bids=") else
                                           f"paths.studies.bids={other}" for a in args]],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=500)
    assert again.returncode != 0 and "trained on other data" in again.stdout, again.stdout[-3000:]
    assert "studies.bids.name" in again.stdout
    # Named, it is its own XP and trains.
    named = subprocess.run([DORA, "run", *[a if not a.startswith("paths.studies.bids=") else
                                           f"paths.studies.bids={other}" for a in args], "studies.bids.name=copy"],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=500)
    assert named.returncode == 0, named.stdout[-3000:]
    assert len(list((tmp_path / "xps" / "xps").glob("*/history.json"))) == 2
