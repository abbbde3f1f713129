"""A Neuromag-style BIDS dataset written with mne-bids: a FIF with magnetometers, planar gradiometers, EEG (head
coordinates, digitised) and a stim channel, bad channels marked, and an ``events.tsv`` as ``write_raw_bids``
writes it (``onset``, ``duration`` 0, ``trial_type``, ``value``, ``sample``) to which the experimenter added a
``stim_file`` and a ``word`` column on the same rows: each trial plays one spoken word from its own wav file.

Kept small (8 sensor triplets, 8 EEG electrodes, 250 Hz, 16 trials 5 s apart) but with the structure of a
real VectorView recording (channel names, coil types, device-coordinate MEG and head-coordinate EEG).
"""

from __future__ import annotations

import datetime
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from .fixtures import _quiet, write_wav

WORDS = ("apple", "river", "stone", "cloud", "garden", "window", "silver", "candle", "forest", "bridge", "honey",
         "tiger", "pencil", "mirror", "rocket", "violin")
WORD_CODE, RESPONSE_CODE = 5, 9
EVENT_ID = {"auditory/word": WORD_CODE, "response": RESPONSE_CODE}
FIRST, SPACING = 2.0, 5.0
BADS = ["MEG 0113", "EEG 003"]
#: bm2 options reading this dataset (``studies.bids.*``, as dora overrides)
OPTIONS = ["studies.bids.datatype=meg", "studies.bids.task=words", "studies.bids.columns.sound=stim_file",
           "studies.bids.kinds.sound=auditory/word", "studies.bids.kinds.word=auditory/word",
           "studies.bids.kinds.phoneme=null", "studies.bids.blocks=sound"]
STUDY_OPTIONS = dict(datatype="meg", task="words", columns={"sound": "stim_file"},
                     kinds={"sound": "auditory/word", "word": "auditory/word", "phoneme": None}, blocks="sound")


def word_seconds(k: int) -> float:
    """Length of the wav of word ``k`` (they differ, so durations read from the files can be checked)."""
    return round(0.4 + 0.02 * k, 3)


def neuromag_info(n_triplets: int = 8, n_eeg: int = 8, sfreq: float = 250.0, full: bool = False):
    """An :class:`mne.Info` like a VectorView FIF: ``n_triplets`` (all 102 if ``full``) sensor triplets (two
    planar gradiometers and a magnetometer, mne's canonical Neuromag geometry in device coordinates), ``n_eeg``
    EEG electrodes named ``EEG 001`` ... with digitised head-coordinate positions (easycap-M1 ones), a stim
    channel ``STI 014``."""
    import mne

    canonical = mne.channels.read_meg_canonical_info("neuromag")
    meg = mne.pick_info(canonical, list(range(306 if full else 3 * n_triplets)))
    with meg._unlock():
        meg["sfreq"] = sfreq
        meg["lowpass"] = sfreq / 2
    montage = mne.channels.make_standard_montage("easycap-M1")
    labels = [c for c in montage.ch_names if c not in ("Nz",)][:n_eeg]
    eeg = mne.create_info(labels, sfreq, "eeg")
    eeg.set_montage(montage, verbose="error")
    mne.rename_channels(eeg, {old: f"EEG {i + 1:03d}" for i, old in enumerate(labels)})
    stim = mne.create_info(["STI 014"], sfreq, "stim")
    parts = [mne.io.RawArray(np.zeros((len(i["ch_names"]), 1)), i, verbose="error") for i in (meg, eeg, stim)]
    raw = parts[0].add_channels(parts[1:], force_update_info=True)
    return raw.info


def write_neuromag_bids(root: Path, n_runs: int = 2, sfreq: float = 250.0, seed: int = 0) -> dict:
    """The dataset: ``sub-01/meg/sub-01_task-words_run-{r}_meg.fif`` (written by write_raw_bids from a FIF
    with events found on its stim channel), ``stimuli/words/<word>.wav``. Returns the block uids (the wav
    names), the word order and the true onsets of each run, the channel names and the data length."""
    import mne
    import mne_bids

    root.mkdir(parents=True, exist_ok=True)
    for k, word in enumerate(WORDS):
        if not (root / "stimuli" / "words" / f"{word}.wav").exists():
            write_wav(root / "stimuli" / "words" / f"{word}.wav", word_seconds(k), seed=k)
    info = neuromag_info(sfreq=sfreq)
    n_times = int((FIRST + SPACING * len(WORDS)) * sfreq)
    runs = {}
    for r in range(1, n_runs + 1):
        order = list(range(len(WORDS))) if r % 2 else list(range(len(WORDS)))[::-1]
        rng = np.random.default_rng([seed, r])
        types = info.get_channel_types()
        scale = np.array([{"mag": 1e-13, "grad": 1e-11, "eeg": 1e-5}.get(t, 0.0) for t in types])
        data = rng.standard_normal((len(types), n_times)) * scale[:, None]
        onsets = FIRST + SPACING * np.arange(len(order))
        stim = data[types.index("stim")]
        for t in onsets:
            stim[int(round(t * sfreq)):int(round(t * sfreq)) + 10] = WORD_CODE
            stim[int(round((t + 1.5) * sfreq)):int(round((t + 1.5) * sfreq)) + 10] = RESPONSE_CODE
        raw = mne.io.RawArray(data, info.copy(), verbose="error")
        raw.info["bads"] = list(BADS)
        raw.info["line_freq"] = 50.0
        raw.set_meas_date(datetime.datetime(2021, 3, r, tzinfo=datetime.timezone.utc))
        source = root.parent / "_neuromag_source" / f"run{r}_raw.fif"
        source.parent.mkdir(parents=True, exist_ok=True)
        raw.save(source, overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(source, verbose="error")
        events = mne.find_events(raw, stim_channel="STI 014", verbose="error")
        path = mne_bids.BIDSPath(root=root, subject="01", task="words", run=str(r), datatype="meg")
        ctx = _quiet()
        try:
            mne_bids.write_raw_bids(raw, path, events=events, event_id=EVENT_ID, overwrite=True, verbose="error")
        finally:
            ctx.__exit__(None, None, None)
        tsv = path.copy().update(suffix="events", extension=".tsv").fpath
        table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
        is_word = table["value"].astype(int) == WORD_CODE
        table["stim_file"] = "n/a"
        table["word"] = "n/a"
        table.loc[is_word, "stim_file"] = [f"stimuli/words/{WORDS[k]}.wav" for k in order]
        table.loc[is_word, "word"] = [WORDS[k] for k in order]
        table.to_csv(tsv, sep="\t", index=False)
        runs[str(r)] = {"order": [WORDS[k] for k in order], "onsets": onsets}
    return {"uids": [f"{w}.wav" for w in WORDS], "runs": runs, "names": list(info["ch_names"]),
            "n_times": n_times, "sfreq": sfreq, "n_recordings": n_runs}


# -- a small EEG dataset whose events.tsv each test writes ---------------------------------------------

EEG_LABELS = ("Fp1", "Fp2", "F3", "F4", "C3", "C4", "O1", "O2")
EEG_SECONDS, EEG_SFREQ = 40.0, 100.0


def write_eeg_bids(root: Path, positions: bool = True, labels: tp.Sequence[str] = EEG_LABELS) -> Path:
    """One BrainVision EEG recording (``sub-01/eeg/sub-01_task-listen_eeg.vhdr``, 40 s at 100 Hz) written with
    mne-bids, with electrode positions (easycap-M1) or none, and ``stimuli/story.wav`` (8 s). Returns the path
    of its ``events.tsv`` (the one mne-bids wrote: no rows), for the test to fill."""
    import mne
    import mne_bids

    from .fixtures import write_brainvision

    data = np.random.default_rng(0).standard_normal((len(labels), int(EEG_SECONDS * EEG_SFREQ))) * 1e-5
    vhdr = write_brainvision(root.parent / "_eeg_source" / "s01", data, list(labels), EEG_SFREQ)
    write_wav(root / "stimuli" / "story.wav", 8.0)
    ctx = _quiet()
    try:
        raw = mne.io.read_raw_brainvision(vhdr, verbose="error")
        if positions:
            raw.set_montage(mne.channels.make_standard_montage("easycap-M1"), on_missing="ignore")
        raw.set_meas_date(datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc))
        path = mne_bids.BIDSPath(root=root, subject="01", task="listen", datatype="eeg")
        mne_bids.write_raw_bids(raw, path, overwrite=True, verbose="error")
    finally:
        ctx.__exit__(None, None, None)
    return Path(path.copy().update(suffix="events", extension=".tsv").fpath)


def write_tsv(path: Path, header: tp.Sequence[str], rows: tp.Sequence[tp.Sequence[tp.Any]],
              encoding: str = "utf-8") -> Path:
    """An events.tsv written line by line (cells as given, so that odd values such as '' or 'nan' stay)."""
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path
