"""A small BIDS iEEG (sEEG) dataset written with ``mne_bids.write_raw_bids``: 7 contacts on two shafts (``A1`` ..
``A4``, ``B1`` .. ``B3``) with positions (``electrodes.tsv`` in ACPC space, metres), ``B2`` marked bad
in ``channels.tsv``, 1 kHz, and word-reading trials 4 s apart whose ``events.tsv`` (``trial_type=word``, written by
mne-bids) the experimenter completed with a ``word`` and a ``sentence_id`` (one trial per sentence) column and
gave each trial's duration (2.5 s).
Contacts A2 and A3 carry a word-specific response."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .fixtures import _quiet, write_brainvision

CONTACTS = ("A1", "A2", "A3", "A4", "B1", "B2", "B3")
BADS = ("B2",)
WORDS = ("ma", "shu", "hua")
SFREQ, FIRST, SPACING = 1000.0, 1.0, 4.0
#: bm2 options reading it as Du-IN's classifier would (``studies.bids.*``, as dora overrides)
OPTIONS = ["studies.bids.datatype=ieeg", "studies.bids.task=reading", "studies.bids.kinds.sound=null",
           "studies.bids.kinds.phoneme=null"]
#: seconds of each word's trial after its onset (the events' duration: a 3-s window from -0.5 s fits its block)
DURATION = 2.5


def write_seeg_bids(root: Path, repeats: int = 10, positions: bool = True, seed: int = 0) -> dict:
    """``sub-01/ieeg/sub-01_task-reading_ieeg.vhdr`` (a BrainVision file copied into BIDS by mne-bids); returns
    the simulated data (volts, contacts x time; stored as float32 microvolts), the word order and the onsets."""
    import mne
    import mne_bids

    rng = np.random.default_rng(seed)
    order = [WORDS[k % len(WORDS)] for k in rng.permutation(repeats * len(WORDS))]
    onsets = FIRST + SPACING * np.arange(len(order))
    n_times = int((onsets[-1] + SPACING) * SFREQ)
    data = rng.standard_normal((len(CONTACTS), n_times)) * 2e-5
    t = np.arange(int(SFREQ)) / SFREQ
    for onset, word in zip(onsets, order):
        bump = np.sin(2 * np.pi * (2 + 2 * WORDS.index(word)) * t) * 5e-5  # a response per word, first second
        at = int(onset * SFREQ)
        data[1:3, at:at + len(t)] += bump
    vhdr = write_brainvision(root.parent / "_seeg_source" / "s01", data, list(CONTACTS), SFREQ)
    raw = mne.io.read_raw_brainvision(vhdr, verbose="error")
    raw.set_channel_types({c: "seeg" for c in CONTACTS}, verbose="error")
    if positions:  # contacts 3.5 mm apart along each shaft, in metres
        pos = {c: np.array([0.0035 * int(c[1]), 0.02 + 0.01 * (c[0] == "B"), 0.03])
               for c in CONTACTS}
        raw.set_montage(mne.channels.make_dig_montage(pos, coord_frame="ras"), verbose="error")
    raw.info["bads"] = list(BADS)
    raw.info["line_freq"] = 50.0
    raw.set_meas_date(datetime.datetime(2022, 5, 1, tzinfo=datetime.timezone.utc))
    events = np.stack([np.round(onsets * SFREQ).astype(int), np.zeros(len(onsets), int),
                       np.ones(len(onsets), int)], axis=1)
    path = mne_bids.BIDSPath(root=root, subject="01", task="reading", datatype="ieeg")
    ctx = _quiet()
    try:
        mne_bids.write_raw_bids(raw, path, events=events, event_id={"word": 1}, acpc_aligned=True,
                                overwrite=True, verbose="error")
    finally:
        ctx.__exit__(None, None, None)
    tsv = path.copy().update(suffix="events", extension=".tsv").fpath
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    table["word"] = order
    table["duration"] = DURATION
    table["sentence_id"] = [f"trial{i}" for i in range(len(order))]
    table.to_csv(tsv, sep="\t", index=False)
    return {"data": data, "order": order, "onsets": onsets, "path": path}
