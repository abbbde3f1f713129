"""The synthetic LibriBrain-like study: written in the serialised layout, read back by the libribrain2025 loader,
with phoneme-specific and speech / silence responses."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bm2.data.splits import SplitParams, named_split
from bm2.studies import get_study_class
from bm2.studies.libribrain2025 import LibriBrainRecording, selectors
from bm2.studies.libribrain_synthetic import LibriBrainSynthetic
from bm2.targets import SpeechParams, speech_timeline

TINY = dict(n_train_runs=2, run_seconds=40.0, snr=2.0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = LibriBrainSynthetic(tmp_path_factory.mktemp("lbsyn"), **TINY)
    start = time.perf_counter()
    study.prepare()
    assert time.perf_counter() - start < 20
    return study


def test_layout_and_loader(study):
    assert get_study_class("libribrain_synthetic") is LibriBrainSynthetic
    serialised = study.root / "Sherlock1" / "derivatives" / "serialised"
    assert len(list(serialised.glob("*_proc-bads+headpos+sss+notch+bp+ds_meg.h5"))) == 4
    recs = list(study.iter_recordings())
    assert all(isinstance(r, LibriBrainRecording) for r in recs)
    params = SplitParams(strategy="named", **selectors())
    assert [named_split(r, params) for r in recs] == ["train", "train", "valid", "test"]
    raw = recs[0].raw()
    assert raw.info["sfreq"] == 250 and len(raw.ch_names) == 306 and raw.n_times == 10000
    ev = recs[0].events()
    assert {"phoneme", "word", "sound", "block"} <= set(ev.kind)
    assert recs[0].dropped.get("sil", 0) > 0
    assert LibriBrainSynthetic(study.base, **TINY).root == study.root  # same options, same folder
    assert LibriBrainSynthetic(study.base, **{**TINY, "seed": 1}).root != study.root


def test_speech_and_phonemes_are_in_the_signal(study):
    recs = list(study.iter_recordings())
    windows, labels, speech_corr = [], [], []
    for rec in recs[:2]:
        data = rec.raw().get_data()
        data = (data - data.mean(1, keepdims=True)) / data.std(1, keepdims=True)
        ev = rec.events()
        speech = speech_timeline(ev, data.shape[1], 250.0, SpeechParams(kinds=("sound",)))
        # the speech-on field: some channel follows the speech / silence timeline
        speech_corr.append(np.abs(np.corrcoef(np.vstack([data, speech]))[-1, :-1]).max())
        for onset, label in zip(ev[ev.kind == "phoneme"].onset, ev[ev.kind == "phoneme"].text):
            start = int(round(onset * 250))
            if start + 125 <= data.shape[1]:
                windows.append(data[:, start:start + 125])
                labels.append(label)
    assert min(speech_corr) > 0.2
    x, y = np.stack(windows), np.array(labels)
    top = [c for c, _ in sorted(((c, (y == c).sum()) for c in set(y)), key=lambda t: -t[1])[:4]]
    half = {c: np.flatnonzero(y == c) for c in top}
    templates = {c: x[idx[: len(idx) // 2]].mean(0) for c, idx in half.items()}
    correct = total = 0
    for c, idx in half.items():  # groups of 5 held-out trials, nearest template
        rest = idx[len(idx) // 2:]
        for g in range(len(rest) // 5):
            avg = x[rest[g * 5:(g + 1) * 5]].mean(0)
            guess = max(templates, key=lambda t: np.corrcoef(avg.ravel(), templates[t].ravel())[0, 1])
            correct += guess == c
            total += 1
    assert total >= 8 and correct / total > 0.5  # chance 0.25
