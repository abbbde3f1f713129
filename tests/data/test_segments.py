import numpy as np
import pandas as pd
import pytest

from bm2.data.segments import SplitParams, WindowParams, assign_split, make_segments, segment_uid
from bm2.events import make_events


def _events(order):
    """Sentences played in ``order``; each block spans its sentence plus a margin, words 0.5 s apart."""
    rows, t = [], 1.0
    for s in order:
        text = f"sentence number {s}"
        rows.append(dict(kind="block", onset=t, duration=5.0, uid=text))
        for w in range(5):
            rows.append(dict(kind="word", onset=t + 0.6 + 0.5 * w, duration=0.3, text=f"word{s}_{w}",
                             sentence_id=f"id{s}", word_index=w))
        t += 5.0
    return make_events(rows)


def test_split_is_deterministic_and_content_based():
    params = SplitParams(test=0.2, valid=0.1, seed=3)
    uids = [f"sentence {i}" for i in range(2000)]
    first = [assign_split(u, params) for u in uids]
    assert first == [assign_split(u, params) for u in uids]
    counts = pd.Series(first).value_counts(normalize=True)
    assert abs(counts["test"] - 0.2) < 0.04 and abs(counts["valid"] - 0.1) < 0.03
    other_seed = [assign_split(u, SplitParams(0.2, 0.1, seed=4)) for u in uids]
    assert first != other_seed


def test_same_sentence_same_split_across_subjects_and_disjoint():
    window, split = WindowParams(tmin=-0.5, tmax=2.5, stride=0.5), SplitParams(0.3, 0.2, seed=0)
    rng = np.random.default_rng(0)
    tables = []
    for subject in range(3):
        order = rng.permutation(20)
        seg = make_segments(_events(order), n_times=120 * 110, sample_rate=120, window=window, split=split)
        seg["subject"] = subject
        tables.append(seg)
    seg = pd.concat(tables)
    per_block = seg.groupby("block_uid").split.nunique()
    assert (per_block == 1).all()  # one sentence, one split, for every subject
    splits = {s: set(seg[seg.split == s].block_uid) for s in ("train", "valid", "test")}
    assert not (splits["train"] & splits["test"]) and not (splits["train"] & splits["valid"])
    assert all(splits.values())


def test_anchoring_and_windows_inside_blocks():
    window, split = WindowParams(tmin=-0.5, tmax=2.5, stride=0.5), SplitParams(0.5, 0.0, seed=1)
    events = _events(range(10))
    seg = make_segments(events, n_times=120 * 60, sample_rate=120, window=window, split=split)
    blocks = events[events.kind == "block"].set_index("uid")
    for row in seg.itertuples():
        b = blocks.loc[row.block_uid]
        assert row.anchor + window.tmin >= b.onset - 1e-9
        assert row.anchor + window.tmax <= b.onset + b.duration + 1e-9
        assert row.start == round((row.anchor + window.tmin) * 120)
    test = seg[seg.split == "test"]
    train = seg[seg.split == "train"]
    assert (test.kind == "word").all() and (train.kind == "stride").all()
    words = events[events.kind == "word"]
    assert set(test.anchor) <= set(words.onset)  # test anchors are word onsets
    # words whose window would leave the block are dropped: onset + 2.5 must be <= block end
    assert test.groupby("block_uid").size().max() == 4  # words 0-3 fit, word 4 (onset + 2.6 s) does not
    gaps = train.groupby("block_uid").anchor.diff().dropna()
    assert np.allclose(gaps, 0.5)
    assert test.segment_uid.tolist() == [segment_uid(b, w) for b, w in zip(test.block_uid, test.word_index)]


def test_windows_outside_recording_are_dropped_and_no_blocks_error():
    window, split = WindowParams(), SplitParams(0.0, 0.0)
    seg = make_segments(_events(range(3)), n_times=120 * 8, sample_rate=120, window=window, split=split)
    assert (seg.start + window.n_samples(120) <= 120 * 8).all()
    with pytest.raises(ValueError, match="block"):
        make_segments(_events(range(2)).query("kind != 'block'"), 1000, 120, window, split)


def test_invalid_params():
    with pytest.raises(ValueError):
        SplitParams(test=0.7, valid=0.4)
    with pytest.raises(ValueError):
        WindowParams(tmin=1.0, tmax=0.5)
    assert WindowParams(offset_ms=150).offset_samples(120) == 18


def test_dataset_items_are_baselined_scaled_clamped_and_offset(array_recording, tmp_path):
    from bm2.cache import Cache
    from bm2.data import NormParams, build_datasets, collate
    from bm2.features import FeatureStack, WordOnset
    from bm2.preprocessing import PreprocessParams

    data = np.random.default_rng(0).standard_normal((12, 4000)) * 1e-12
    data[2, 1500:1600] = 1e-8  # a huge artefact
    window = WindowParams(tmin=-0.5, tmax=1.5, stride=0.5, offset_ms=100)
    ds = build_datasets([array_recording(data=data)], Cache(tmp_path), PreprocessParams(sample_rate=100.0),
                        FeatureStack([WordOnset()]), window, SplitParams(0.0, 0.0), NormParams(max_scale=5.0))
    train = ds.train
    rec = train.recordings[0]
    for i in range(len(train)):
        item = train[i]
        start = int(train.segments.start[i])
        raw = np.asarray(rec.brain.array[:, start:start + 200], dtype=np.float64)
        expected = raw - raw[:, :50].mean(axis=1, keepdims=True)  # baseline on the 0.5 s before the anchor
        expected = np.clip((expected - rec.scaler.center[:, None]) / rec.scaler.scale[:, None], -5, 5)[:, 10:]
        np.testing.assert_allclose(item["brain"].numpy(), expected, rtol=1e-4, atol=1e-4)
        assert item["features"].shape == (1, 190)  # features keep the first 190 samples, brain the last 190
    assert max(float(train[i]["brain"].abs().max()) for i in range(len(train))) == 5.0
    batch = collate([train[0], train[1]])
    assert batch["brain"].shape == (2, 12, 190) and batch["mask"].all()


def test_collate_pads_mixed_montages():
    import torch

    from bm2.data import collate

    items = [{"brain": torch.ones(c, 7), "positions": torch.full((c, 2), 0.5), "features": torch.zeros(3, 7),
              "subject_index": s, "index": s} for s, c in ((0, 4), (1, 6))]
    batch = collate(items)
    assert batch["brain"].shape == (2, 6, 7) and batch["positions"].shape == (2, 6, 2)
    assert batch["mask"].tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    assert batch["brain"][0, 4:].abs().sum() == 0 and batch["subject_index"].tolist() == [0, 1]


def test_batched_fetch_equals_per_item_collate(array_recording, tmp_path):
    import torch

    from bm2.cache import Cache
    from bm2.data import NormParams, build_datasets, collate
    from bm2.features import FeatureStack, WordOnset
    from bm2.preprocessing import PreprocessParams

    ds = build_datasets([array_recording(seed=3)], Cache(tmp_path), PreprocessParams(sample_rate=100.0),
                        FeatureStack([WordOnset()]), WindowParams(tmin=-0.5, tmax=1.5, offset_ms=100),
                        SplitParams(0.0, 0.0), NormParams()).train
    indices = [3, 0, 5, 1]
    batched = collate(ds.__getitems__(indices))
    itemwise = collate([ds[i] for i in indices])
    assert batched.keys() == itemwise.keys()
    for key in batched:
        torch.testing.assert_close(batched[key], itemwise[key])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=1)
    first = next(iter(loader))
    torch.testing.assert_close(first["brain"], collate([ds[i] for i in range(4)])["brain"])
