"""The one dataset for every task: class labels, speech per sample, a frequency axis, manifests, clear errors."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets, collate
from bm2.features import FeatureStack, WordOnset
from bm2.preprocessing import PreprocessParams
from bm2.targets import LabelParams, SpeechParams


def _events(n_blocks=12, words=("cat", "dog", "cow")):
    rows = []
    for b in range(n_blocks):
        t = 1.0 + 4.0 * b
        rows.append(dict(kind="block", onset=t - 0.5, duration=4.0, uid=f"sentence {b}"))
        rows.append(dict(kind="sound", onset=t, duration=2.0, filepath=f"s{b}.wav", offset=0.0))
        for w in range(3):
            rows.append(dict(kind="word", onset=t + 0.6 * w, duration=0.4, text=words[(b + w) % len(words)],
                             sentence_id=f"s{b}", word_index=w))
    return pd.DataFrame(rows)


def _build(array_recording, tmp_path, targets, **kwargs):
    rec = array_recording(seconds=50.0, sfreq=100.0, events=_events())
    params = dict(window=WindowParams(tmin=-0.2, tmax=0.8, anchor="word"), split=SplitParams(0.25, 0.25, seed=1),
                  norm=NormParams())
    params.update(kwargs)
    return build_datasets([rec], Cache(tmp_path), PreprocessParams(sample_rate=50.0), FeatureStack([WordOnset()]),
                          params["window"], params["split"], params["norm"], targets=targets,
                          label=params.get("label"), speech=params.get("speech"))


def test_labels_come_from_the_anchor_event_with_a_training_vocabulary(array_recording, tmp_path):
    ds = _build(array_recording, tmp_path, ("label",))
    assert ds.vocabulary == ["cat", "cow", "dog"]
    for split in ("train", "valid", "test"):
        seg = ds[split].segments
        assert (seg.kind == "word").all() and len(seg)
        assert [ds.vocabulary[i] for i in seg.label] == list(seg.label_name)
    batch = collate(ds.train.__getitems__([0, 1, 2]))
    assert batch["label"].dtype == torch.long and "features" not in batch
    assert batch["brain"].shape == (3, 12, 50)
    manifest = ds.manifest()
    assert set(manifest.split) == {"train", "valid", "test"} and len(manifest) == sum(len(ds[s]) for s in
                                                                                      ("train", "valid", "test"))
    # one block (sentence) never spans two splits
    assert manifest.groupby("block_uid").split.nunique().max() == 1


def test_top_n_keeps_the_frequent_classes_and_stratified_splits_windows(array_recording, tmp_path):
    ds = _build(array_recording, tmp_path, ("label",), label=LabelParams(top_n=2),
                split=SplitParams(strategy="stratified", test=0.2, valid=0.2, seed=0))
    assert len(ds.vocabulary) == 2
    names = pd.concat([ds[s].segments for s in ("train", "valid", "test")]).label_name
    assert set(names) == set(ds.vocabulary)  # windows of the third word left every split


def test_speech_target_follows_sound_spans_on_the_window(array_recording, tmp_path):
    ds = _build(array_recording, tmp_path, ("speech",), window=WindowParams(tmin=0.0, tmax=2.0, stride=0.5,
                                                                            anchor="stride"),
                speech=SpeechParams(("sound",)))
    test = ds.test
    item = test[0]
    r, first, length = test.target_span(0)
    assert item["speech"].shape == (length,) == (100,)
    np.testing.assert_array_equal(item["speech"].numpy(), test.speech_timeline(r)[first:first + length])
    timeline = test.speech_timeline(r)
    assert timeline[50] == 1 and timeline[int(3.5 * 50)] == 0  # 1.0-3.0 s is the first sound, 3.5 s silence


def test_unknown_target_and_empty_split_errors_name_the_fix(array_recording, tmp_path):
    with pytest.raises(ValueError, match="valid targets"):
        _build(array_recording, tmp_path, ("phonemes",))
    # a 5-s window in 4-s blocks: no window fits, and the error says so
    with pytest.raises(ValueError, match="longer than most blocks"):
        _build(array_recording, tmp_path, ("label",), window=WindowParams(tmin=-2.0, tmax=3.0, anchor="word"))
    with pytest.raises(ValueError, match="test.task=classification"):
        _build(array_recording, tmp_path, ("speech",), split=SplitParams(strategy="kfold", n_folds=2))


def test_signals_with_a_frequency_axis_go_through_scaling_and_batching(array_recording, tmp_path):
    ds = _build(array_recording, tmp_path, ("label",))
    rec = ds.recordings[0]
    spectra = np.random.default_rng(0).standard_normal((12, 3, rec.brain.array.shape[-1])).astype(np.float32)
    spectra[:, 2] *= 100  # a frequency with another scale: scaled on its own
    path = tmp_path / "tf.npy"
    np.save(path, spectra)
    from bm2.data import LazyArray, SegmentDataset
    from bm2.data.build import _fit_scaler

    tf_rec = dataclasses.replace(rec, brain=LazyArray(str(path)), uid="f" * 40, scaler=None)
    train = SegmentDataset([tf_rec], ds.train.segments.assign(recording=0), ds.train.window, NormParams(), None,
                           ("label",), ds.vocabulary)
    tf_rec.scaler = _fit_scaler(train, 0, np.arange(len(train)), NormParams(), Cache(tmp_path / "c"), {}, 0)
    assert tf_rec.scaler.center.shape == (12, 3)
    batch = collate(train.__getitems__([0, 1]))
    assert batch["brain"].shape == (2, 12, 3, 50)
    per_freq = batch["brain"].abs().mean(dim=(0, 1, 3))
    assert per_freq.max() / per_freq.min() < 3  # each frequency scaled by its own IQR
    items = collate([train[0], train[1]])
    torch.testing.assert_close(items["brain"], batch["brain"])
