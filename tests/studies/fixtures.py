"""Fixture writers: tiny datasets in each real study's on-disk format (names, layout, file types, keys, units).

Signals are short (~40 s) noise; the timelines hold a dozen 7-word sentences so that train / valid / test
splits are all non-empty for a suitable split seed (:func:`split_seed`).
"""

from __future__ import annotations

import datetime
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

WORDS = ("the cat sat on a mat while birds sang over hills and rivers ran down to blue seas where old ships "
         "slowly drift past tall white towers near green fields of gold").split()
PHONES = ["ah", "t", "s", "iy", "k", "ae", "n", "d", "m", "ow"]
N_SENTENCES = 12
WORD_DUR, WORD_GAP, PAUSE = 0.3, 0.05, 1.0


def sentences(n: int = N_SENTENCES, n_words: int = 7) -> list[list[str]]:
    """``n`` distinct deterministic sentences of ``n_words`` words."""
    return [[WORDS[(7 * i + 3 * k + i * k) % len(WORDS)] for k in range(n_words)] for i in range(n)]


def timeline(order: tp.Sequence[int], start: float = 2.0) -> tuple[list[dict], float]:
    """Words (with phonemes) of the sentences ``order`` laid out from ``start``; returns (words, end time)."""
    corpus = sentences()
    words, t = [], start
    for s in order:
        for k, w in enumerate(corpus[s]):
            phones = [(f"{PHONES[(s + k + j) % len(PHONES)]}_{'BIE'[min(j, 2)]}", t + 0.1 * j, 0.1) for j in range(3)]
            words.append(dict(sentence=s, index=k, word=w, onset=round(t, 4), duration=WORD_DUR, phones=phones))
            t += WORD_DUR + WORD_GAP
        t += PAUSE
    return words, t


def split_seed(uids: tp.Iterable[str], test: float = 0.25, valid: float = 0.25) -> int:
    """The first split seed giving non-empty train, valid and test sets of blocks."""
    from bm2.data.segments import SplitParams, assign_split

    uids = sorted(set(uids))
    for seed in range(1000):
        params = SplitParams(test=test, valid=valid, seed=seed)
        if {assign_split(u, params) for u in uids} == {"train", "valid", "test"}:
            return seed
    raise AssertionError("no split seed found")


def write_wav(path: Path, seconds: float, sr: int = 16000, seed: int = 0) -> None:
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wav = 0.1 * np.sin(2 * np.pi * (200 + 50 * np.sin(t)) * t) + 0.01 * rng.standard_normal(t.size)
    soundfile.write(path, wav.astype(np.float32), sr, subtype="PCM_16")


def _helmet(n: int) -> np.ndarray:
    """``n`` points on a hemisphere of radius 0.12 m (a MEG helmet), Fibonacci spiral."""
    i = np.arange(n) + 0.5
    z = 1 - i / n
    r = np.sqrt(1 - z ** 2)
    phi = np.pi * (3 - np.sqrt(5)) * i
    return 0.12 * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


# -- gwilliams2022 (MEG-MASC) ------------------------------------------------------------------------------

GWILLIAMS_RECORDINGS = (("01", "0", "0"), ("01", "0", "1"), ("02", "0", "0"))  # sub-02 lacks ses-1 / task-1
STORIES = ("lw1", "cable_spool_fort")


def write_gwilliams(root: Path, seconds_pad: float = 2.0, sfreq: float = 1000.0) -> dict:
    """A MEG-MASC-like BIDS root: 208-channel KIT-named MEG (FIF), dict-literal events.tsv, stimuli/audio."""
    import mne
    import mne_bids

    root.mkdir(parents=True, exist_ok=True)
    uids = []
    for r, (sub, ses, task) in enumerate(GWILLIAMS_RECORDINGS):
        story = STORIES[int(task)]
        order = list(range(N_SENTENCES)) if task == "0" else list(range(N_SENTENCES))[::-1]
        words, end = timeline(order, start=2.0)
        total = end + seconds_pad
        sound = f"stimuli/audio/{story}_0.wav"
        if not (root / sound).exists():
            write_wav(root / sound, end - 1.0, seed=int(task))
        names = [f"MEG {i:03d}" for i in range(1, 209)]
        info = mne.create_info(names, sfreq, "mag")
        for ch, loc in zip(info["chs"], _helmet(208)):
            ch["loc"][:3] = loc
            ch["loc"][9:12] = loc / np.linalg.norm(loc)
        data = np.random.default_rng(r).standard_normal((208, int(total * sfreq))) * 1e-13
        raw = mne.io.RawArray(data, info, verbose="error")
        raw.set_meas_date(datetime.datetime(2020, 1, 1 + r, tzinfo=datetime.timezone.utc))
        path = mne_bids.BIDSPath(root=root, subject=sub, session=ses, task=task, datatype="meg")
        ctx = _quiet()
        try:
            mne_bids.write_raw_bids(raw, path, format="FIF", allow_preload=True, overwrite=True, verbose="error")
        finally:
            ctx.__exit__(None, None, None)
        rows = [dict(onset=1.0, duration=0.0, trial_type=str(
            {"story": story, "sound_id": 0.0, "kind": "sound", "start": 0.0, "sound": sound}))]
        for w in words:
            base = {"story": story, "story_uid": float(task), "sound_id": 0.0, "sound": sound,
                    "sequence_id": float(w["sentence"]), "condition": "sentence", "speech_rate": 205.0,
                    "voice": "Allison"}
            rows.append(dict(onset=w["onset"], duration=w["duration"],
                             trial_type=str({**base, "kind": "word", "word": w["word"],
                                             "word_index": float(w["index"])})))
            for label, on, dur in w["phones"]:
                rows.append(dict(onset=round(on, 4), duration=dur,
                                 trial_type=str({**base, "kind": "phoneme", "phoneme": label})))
        table = pd.DataFrame(rows)
        table["value"] = np.arange(len(table))
        table["sample"] = np.round(table["onset"] * sfreq).astype(int)
        tsv = path.copy().update(suffix="events", extension=".tsv").fpath
        table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
        uids += [" ".join(s) for s in sentences()]
    return {"uids": sorted(set(uids)), "n_recordings": len(GWILLIAMS_RECORDINGS)}


# -- bids (generic) --------------------------------------------------------------------------------------

def write_brainvision(stem: Path, data: np.ndarray, ch_names: list[str], sfreq: float) -> Path:
    """A BrainVision triplet (.vhdr / .vmrk / .eeg, IEEE float32 multiplexed, µV) readable by mne."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    name = stem.name
    chans = "\n".join(f"Ch{i + 1}={c},,0.1,µV" for i, c in enumerate(ch_names))
    (stem.with_suffix(".vhdr")).write_text(
        "Brain Vision Data Exchange Header File Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={name}.eeg\nMarkerFile={name}.vmrk\nDataFormat=BINARY\nDataOrientation=MULTIPLEXED\n"
        f"NumberOfChannels={len(ch_names)}\nSamplingInterval={1e6 / sfreq:g}\n\n[Binary Infos]\n"
        f"BinaryFormat=IEEE_FLOAT_32\n\n[Channel Infos]\n{chans}\n", encoding="utf-8")
    (stem.with_suffix(".vmrk")).write_text(
        "Brain Vision Data Exchange Marker File, Version 1.0\n\n[Common Infos]\nCodepage=UTF-8\n"
        f"DataFile={name}.eeg\n\n[Marker Infos]\nMk1=New Segment,,1,1,0,20200101000000000000\n", encoding="utf-8")
    (data.T * 1e6).astype("<f4").tofile(stem.with_suffix(".eeg"))
    return stem.with_suffix(".vhdr")


BIDS_OPTIONS = ["studies.bids.datatype=eeg", "studies.bids.task=listen", "studies.bids.blocks=sentence",
                "studies.bids.columns.sentence_id=sentence"]


def write_bids(root: Path, sfreq: float = 250.0) -> dict:
    """A BIDS EEG dataset (BrainVision, easycap-M1 montage, 32 channels) written with mne-bids, whose
    events.tsv carries the annotations in custom columns (trial_type, word, sound, phoneme, sentence ...)."""
    import mne
    import mne_bids

    montage = mne.channels.make_standard_montage("easycap-M1")
    names = [c for c in montage.ch_names if not c.startswith(("M", "A"))][:32]
    for s, sub in enumerate(("01", "02")):
        order = list(range(N_SENTENCES)) if s == 0 else list(range(N_SENTENCES))[::-1]
        words, end = timeline(order)
        total = end + 2.0
        sound = "stimuli/story.wav" if s == 0 else "stimuli/story_reversed.wav"
        write_wav(root / sound, end - 1.0, seed=s)
        data = np.random.default_rng(s).standard_normal((len(names), int(total * sfreq))) * 1e-5
        vhdr = write_brainvision(root.parent / "_source" / f"s{sub}", data, names, sfreq)
        ctx = _quiet()
        try:
            raw = mne.io.read_raw_brainvision(vhdr, verbose="error")
            raw.set_montage(montage)
            raw.set_meas_date(datetime.datetime(2020, 1, 1 + s, tzinfo=datetime.timezone.utc))
            path = mne_bids.BIDSPath(root=root, subject=sub, task="listen", datatype="eeg")
            mne_bids.write_raw_bids(raw, path, overwrite=True, verbose="error")
        finally:
            ctx.__exit__(None, None, None)
        corpus = sentences()
        rows = [dict(onset=1.0, duration=end - 1.0, trial_type="sound", sound=sound)]
        for w in words:
            rows.append(dict(onset=w["onset"], duration=w["duration"], trial_type="word", word=w["word"],
                             sentence=f"s{w['sentence']:02d}", word_index=w["index"]))
            for label, on, dur in w["phones"]:
                rows.append(dict(onset=round(on, 4), duration=dur, trial_type="phoneme", phoneme=label.split("_")[0],
                                 sentence=f"s{w['sentence']:02d}"))
        table = pd.DataFrame(rows, columns=["onset", "duration", "trial_type", "sound", "word", "phoneme",
                                            "sentence", "word_index"])
        table["word_index"] = table["word_index"].astype("Int64")
        table.to_csv(path.copy().update(suffix="events", extension=".tsv").fpath, sep="\t", index=False,
                     na_rep="n/a")
    return {"uids": [" ".join(s) for s in corpus], "n_recordings": 2, "names": names}


# -- brennan2019 (Alice) ---------------------------------------------------------------------------------

BRENNAN_EEG = [str(i) for i in range(1, 62) if i != 29]  # easycap-M10 numbers, "29" is not recorded
BRENNAN_LABELS = BRENNAN_EEG + ["VEOG", "AUD"]  # 62 channels (S01)
BRENNAN_SUBJECTS = ("S01", "S02", "S03", "S04")  # S02 is in the excluded list
# per subject: audio channel label (None: absent), lead of the story in the recording (s), trl Orders left out
BRENNAN_AUDIO = {"S01": "AUD", "S02": "AUD", "S03": "Aux5", "S04": None}
BRENNAN_LEAD = {"S01": 0.0, "S02": 0.0, "S03": 0.5, "S04": 0.25}
BRENNAN_MISSING = {"S04": [3, 4, 10, 41, 42, 43, 44, 45, 46]}  # 41-46: all of segment 6 but its first word
BRENNAN_BADS = {"impedence": "12", "rejections": "45"}
BRENNAN_PRE, BRENNAN_POST = 0.3, 1.0  # trials from 0.3 s before to 1 s after each word (offset = -150 at 500 Hz)


def brennan_labels(subject: str) -> list[str]:
    """Channel labels of a fixture subject: 60 EEG, VEOG, then the audio channel (``AUD``, ``Aux5`` or none)."""
    audio = BRENNAN_AUDIO.get(subject, "AUD")
    return BRENNAN_EEG + ["VEOG"] + ([audio] if audio else [])


def write_brennan(root: Path, sfreq: float = 500.0, hdf5_subject: str | None = None) -> dict:
    """The Alice archive layout: ``S01.mat`` ... (FieldTrip ``raw`` struct with ``hdr``, MATLAB v5),
    ``proc/S01.mat`` (``proc.trl`` one row per word: begsample, endsample, offset -0.3 s, then ``varnames``
    segment, tmin, Order; ``impedence.bads``, ``rejections.badchans`` ...), ``AliceChapterOne-EEG.csv`` and
    ``audio/DownTheRabbitHoleFinal_SoundFile{1..12}.wav``; 12 segments of one sentence each.

    Subjects differ as in the archive: S03 names its audio channel ``Aux5``, S04 has none and lacks the trl
    rows :data:`BRENNAN_MISSING`; each starts the story at its own lead :data:`BRENNAN_LEAD`. ``hdf5_subject``
    is written as MATLAB v7.3 (HDF5) instead. Returns the block uids and, per kept subject, the true EEG onset
    of every word (``onsets``, in CSV order)."""
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    words, end = timeline(range(N_SENTENCES), start=2.0)
    seg_start = {s: min(w["onset"] for w in words if w["sentence"] == s) - 0.3 for s in range(N_SENTENCES)}
    seg_len = {s: 7 * (WORD_DUR + WORD_GAP) + 0.5 for s in range(N_SENTENCES)}
    rows = []
    for w in words:
        s = w["sentence"]
        on = round(w["onset"] - seg_start[s], 4)
        rows.append(dict(Word=w["word"], Segment=s + 1, onset=on, offset=round(on + w["duration"], 4),
                         Order=len(rows) + 1, LogFreq=3.0, LogFreq_Prev=3.0, LogFreq_Next=3.0, SndPower=1.0,
                         Length=len(w["word"]), Position=w["index"] + 1, Sentence=s + 1, IsLexical=1, NGRAM=1.0,
                         RNN=1.0, CFG=1.0))
    table = pd.DataFrame(rows)
    table.to_csv(root / "AliceChapterOne-EEG.csv", index=False)
    for s in range(N_SENTENCES):
        write_wav(root / "audio" / f"DownTheRabbitHoleFinal_SoundFile{s + 1}.wav", seg_len[s], seed=s)
    (root / "proc").mkdir(exist_ok=True)
    onsets = {}
    for k, sub in enumerate(BRENNAN_SUBJECTS):
        lead = BRENNAN_LEAD[sub]
        labels = brennan_labels(sub)
        n = int((end + 2.0 + lead) * sfreq)
        data = np.random.default_rng(k).standard_normal((len(labels), n)) * 10.0  # µV
        time = np.arange(n) / sfreq
        if sub == hdf5_subject:
            write_fieldtrip_hdf5(root / f"{sub}.mat", data, time, labels, sfreq)
        else:
            savemat(root / f"{sub}.mat", {"raw": fieldtrip_raw(data, time, labels, sfreq)})
        true = np.array([w["onset"] + lead for w in words])  # s from the first sample
        trigger = np.round(true * sfreq) + 1  # 1-based sample of each word onset
        pre, post = round(BRENNAN_PRE * sfreq), round(BRENNAN_POST * sfreq)
        trl = np.stack([trigger - pre, trigger + post, np.full(len(true), -pre), table["Segment"], table["onset"],
                        table["Order"]], axis=1).astype(float)
        trl = trl[~np.isin(table["Order"], BRENNAN_MISSING.get(sub, []))]
        savemat(root / "proc" / f"{sub}.mat", {"proc": brennan_proc(sub, trl)})
        onsets[sub] = true
    kept = [s for s in BRENNAN_SUBJECTS if s != "S02"]
    return {"uids": [" ".join(s) for s in sentences()], "n_recordings": len(kept),
            "onsets": {s: onsets[s] for s in kept}}


def fieldtrip_raw(data: np.ndarray, time: np.ndarray, labels: list[str], sfreq: float) -> dict:
    """A FieldTrip raw struct (for :func:`scipy.io.savemat`) of one continuous trial: ``hdr``, ``fsample``,
    ``trial``, ``time``, ``label``, ``sampleinfo``."""
    n_chans, n = data.shape
    hdr = {"Fs": float(sfreq), "nChans": float(n_chans), "nSamples": float(n), "nSamplesPre": 0.0, "nTrials": 1.0,
           "label": _cell(labels, column=True), "chantype": _cell(["eeg"] * n_chans, column=True),
           "chanunit": _cell(["uV"] * n_chans, column=True)}
    return {"hdr": hdr, "fsample": float(sfreq), "trial": _cell([data]), "time": _cell([time[None]]),
            "label": _cell(labels, column=True), "sampleinfo": np.array([[1.0, float(n)]])}


def brennan_proc(subject: str, trl: np.ndarray, varnames: tp.Sequence[str] = ("segment", "tmin", "Order")) -> dict:
    """A ``proc`` struct as in ``proc.zip``: per-word ``trl`` and its ``varnames``, bad channels, reference."""
    return {"subject": subject, "trl": trl, "varnames": _cell(list(varnames)), "tot_trials": float(len(trl)),
            "tot_chans": 61.0, "impedence": {"bads": _cell([BRENNAN_BADS["impedence"]])},
            "rejections": {"badchans": _cell([BRENNAN_BADS["rejections"]])}, "implicitref": "29",
            "refchannels": _cell(["25", "29"])}


def _cell(items: tp.Sequence[tp.Any], column: bool = False) -> np.ndarray:
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out.flat[i] = item
    return out


def write_fieldtrip_hdf5(path: Path, data: np.ndarray, time: np.ndarray, labels: list[str], sfreq: float) -> None:
    """A FieldTrip raw struct saved as MATLAB v7.3 (HDF5): cells are datasets of object references,
    arrays are stored transposed (column-major), strings as uint16 with MATLAB_class 'char'."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        grp = f.create_group("raw")
        grp.attrs["MATLAB_class"] = np.bytes_("struct")

        def cell(name: str, values: list[np.ndarray], char: bool = False) -> None:
            ref_list = []
            for i, v in enumerate(values):
                d = refs.create_dataset(f"{name}{i}", data=v)
                d.attrs["MATLAB_class"] = np.bytes_("char" if char else "double")
                ref_list.append(d.ref)
            ds = grp.create_dataset(name, data=np.array(ref_list, dtype=h5py.ref_dtype)[:, None].T
                                    if not char else np.array(ref_list, dtype=h5py.ref_dtype)[None, :])
            ds.attrs["MATLAB_class"] = np.bytes_("cell")

        cell("trial", [data.T])
        cell("time", [time[:, None]])
        cell("label", [np.array([ord(c) for c in lab], dtype=np.uint16)[:, None] for lab in labels], char=True)

        def double(group: tp.Any, name: str, value: float | np.ndarray) -> None:
            ds = group.create_dataset(name, data=np.atleast_2d(np.asarray(value, dtype=float)).T)
            ds.attrs["MATLAB_class"] = np.bytes_("double")

        double(grp, "fsample", sfreq)
        double(grp, "sampleinfo", np.array([[1.0, float(data.shape[1])]]))
        hdr = grp.create_group("hdr")
        hdr.attrs["MATLAB_class"] = np.bytes_("struct")
        for key, value in (("Fs", sfreq), ("nChans", len(labels)), ("nSamples", data.shape[1]),
                           ("nSamplesPre", 0), ("nTrials", 1)):
            double(hdr, key, value)
    with open(path, "r+b") as fh:  # the MATLAB 7.3 header in the user block
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2020 HDF5 schema 1.00 .")


# -- broderick2019 (Natural Speech) ----------------------------------------------------------------------

BRODERICK_DIR = "Natural Speech"  # the folder "Natural Speech.zip" of the Dryad archive extracts to


def write_broderick(root: Path, n_subjects: int = 2, n_runs: int = 2, fs: int = 128,
                    audio: Path | None = None, layout: str = "nested") -> dict:
    """The Natural Speech experiment as extracted from the Dryad archive (``layout="nested"``)::

        root/Natural Speech/EEG/Subject{n}/Subject{n}_Run{r}.mat   eegData samples x 128 µV, mastoids samples x 2, fs
        root/Natural Speech/Stimuli/Text/Run{r}.mat               wordVec cell, onset_time / offset_time s,
                                                                  sentence_boundaries s (end of each sentence)
        root/Natural Speech/Stimuli/Envelopes/audio{r}_128Hz.mat  env (samples x 1, 128 Hz)

    ``layout="flat"`` writes the older layout ``root/Subject{n}/...`` and ``root/Stimuli/...`` instead. EEG
    time 0 = audio onset. ``audio`` gets ``audio{r}.wav`` files (the audiobook is not in the public archive).
    Returns the block uids and the folder holding ``EEG`` / ``Subject*`` (``data``)."""
    from scipy.io import savemat

    if layout not in ("nested", "flat"):
        raise ValueError(f"layout must be 'nested' or 'flat', got {layout!r}")
    base = root / BRODERICK_DIR if layout == "nested" else root
    eeg_dir = base / "EEG" if layout == "nested" else base
    stimuli = base / "Stimuli"
    per_run = N_SENTENCES // n_runs
    corpus = sentences()
    for r in range(1, n_runs + 1):
        order = list(range((r - 1) * per_run, r * per_run))
        words, end = timeline(order, start=1.0)
        text = stimuli / "Text"
        text.mkdir(parents=True, exist_ok=True)
        bounds = [max(w["onset"] + w["duration"] for w in words if w["sentence"] == s) + 0.1 for s in order]
        savemat(text / f"Run{r}.mat", {
            "wordVec": _cell([w["word"] for w in words], column=True),
            "onset_time": np.array([[w["onset"]] for w in words]), "offset_time": np.array(
                [[w["onset"] + w["duration"]] for w in words]), "sentence_boundaries": np.array(bounds)[:, None]})
        envelopes = stimuli / "Envelopes"
        envelopes.mkdir(parents=True, exist_ok=True)
        env = np.abs(np.random.default_rng(r).standard_normal((int(end * fs), 1)))
        savemat(envelopes / f"audio{r}_128Hz.mat", {"env": env})
        if audio is not None:
            write_wav(audio / f"audio{r}.wav", end, seed=r)
        for n in range(1, n_subjects + 1):
            rng = np.random.default_rng([n, r])
            samples = int((end + 2.0) * fs)
            folder = eeg_dir / f"Subject{n}"
            folder.mkdir(parents=True, exist_ok=True)
            savemat(folder / f"Subject{n}_Run{r}.mat", {"eegData": rng.standard_normal((samples, 128)) * 10.0,
                                                        "mastoids": rng.standard_normal((samples, 2)) * 10.0,
                                                        "fs": np.array([[fs]], dtype=np.uint8)})
    return {"uids": [" ".join(s) for s in corpus[:per_run * n_runs]], "n_recordings": n_subjects * n_runs,
            "data": base}
