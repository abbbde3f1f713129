"""The brain lead (``dset.window.lead_ms``): the brain window starts ``lead`` samples before the feature window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from bm2.data.dataset import LazyArray, NormParams, PreparedRecording, SegmentDataset
from bm2.data.segments import SplitParams, WindowParams, make_segments
from bm2.events import make_events

RATE = 100.0


def _events():
    # a block at the very start of the recording (its first windows' lead would start before sample 0) and one
    # later; one sound event in each, 0.1 s and 0.3 s into the block
    return make_events([dict(kind="block", onset=0.0, duration=1.0, uid="a"),
                        dict(kind="sound", onset=0.1, duration=0.3, filepath="a.wav", offset=0.0),
                        dict(kind="block", onset=2.0, duration=1.0, uid="b"),
                        dict(kind="sound", onset=2.3, duration=0.3, filepath="b.wav", offset=0.0)])


def _segments(window):
    return make_segments(_events(), n_times=400, sample_rate=RATE, window=window, split=SplitParams(0.0, 0.0))


def test_lead_zero_changes_nothing():
    window = WindowParams(tmin=0.0, tmax=0.5, stride=0.1)
    assert "lead_ms" not in window.key() and window.lead_samples(RATE) == 0
    assert "lead_ms" in dataclasses.replace(window, lead_ms=50.0).key()
    pd.testing.assert_frame_equal(_segments(window), _segments(dataclasses.replace(window, lead_ms=0.0)))
    with pytest.raises(ValueError, match="lead_ms >= 0"):
        WindowParams(lead_ms=-1.0)


def test_lead_stays_inside_blocks_and_recording():
    plain = _segments(WindowParams(tmin=0.0, tmax=0.5, stride=0.1, train_anchor="stride"))
    led = _segments(WindowParams(tmin=0.0, tmax=0.5, stride=0.1, train_anchor="stride", lead_ms=200.0))
    # stride anchors: block a [0, 100) -> starts 0 .. 50 without lead, 20 .. 50 with 20 samples of lead
    assert plain[plain.block_uid == "a"].start.tolist() == [0, 10, 20, 30, 40, 50]
    assert led[led.block_uid == "a"].start.tolist() == [20, 30, 40, 50]
    assert led[led.block_uid == "b"].start.tolist() == [220, 230, 240, 250]
    # event anchors: a window at the sound of block a starts at 10; its lead (20) would leave the block: dropped
    at_sound = WindowParams(tmin=0.0, tmax=0.5, anchor="sound", lead_ms=200.0)
    assert _segments(at_sound).start.tolist() == [230]
    assert _segments(dataclasses.replace(at_sound, lead_ms=100.0)).start.tolist() == [10, 230]


def test_lead_drops_windows_that_would_start_before_the_recording():
    # a block laid out from t = -0.1 s cannot exist; one at 0 with a window anchored at 0.05 s and 10 samples lead
    events = make_events([dict(kind="block", onset=0.0, duration=1.0, uid="a"),
                          dict(kind="sound", onset=0.05, duration=0.3, filepath="a.wav", offset=0.0)])
    window = WindowParams(tmin=-0.05, tmax=0.45, anchor="sound", lead_ms=100.0)
    assert make_segments(events, 400, RATE, window, SplitParams(0.0, 0.0)).empty
    ok = make_segments(events, 400, RATE, dataclasses.replace(window, lead_ms=0.0), SplitParams(0.0, 0.0))
    assert ok.start.tolist() == [0]


@pytest.mark.parametrize("offset_ms", [0.0, 30.0])
def test_brain_window_holds_the_lead_exact_samples(tmp_path, offset_ms):
    n_ch, n_times = 3, 400
    brain = (np.arange(n_times)[None, :] + 1000.0 * np.arange(n_ch)[:, None]).astype(np.float32)
    feats = (-np.arange(n_times)[None, :] - 1000.0 * np.arange(2)[:, None]).astype(np.float32)
    np.save(tmp_path / "brain.npy", brain)
    np.save(tmp_path / "feats.npy", feats)
    rec = PreparedRecording(study="toy", subject="1", session="0", task="0", uid="u", subject_index=0,
                            brain=LazyArray(str(tmp_path / "brain.npy")),
                            features=LazyArray(str(tmp_path / "feats.npy")),
                            positions=np.zeros((n_ch, 2), np.float32), ch_names=["a", "b", "c"], sample_rate=RATE,
                            n_times=n_times, speech=np.zeros(n_times, np.uint8))
    window = WindowParams(tmin=0.0, tmax=0.5, stride=0.1, offset_ms=offset_ms, train_anchor="stride", lead_ms=160.0)
    seg = make_segments(_events(), n_times, RATE, window, SplitParams(0.0, 0.0))
    seg.insert(0, "recording", 0)
    ds = SegmentDataset([rec], seg, window, NormParams(baseline=False, robust=False, max_scale=None,
                                                      scale_features=False), None, ("features", "speech"))
    k, lead, length = int(offset_ms / 10), 16, 50
    batch = ds.batch(list(range(len(ds))))
    assert batch["brain"].shape == (len(ds), n_ch, length - k + lead)
    assert batch["features"].shape == (len(ds), 2, length - k) and batch["speech"].shape == (len(ds), length - k)
    for j, start in enumerate(seg.start):
        np.testing.assert_array_equal(batch["brain"][j].numpy(), brain[:, start + k - lead:start + length])
        np.testing.assert_array_equal(batch["features"][j].numpy(), feats[:, start:start + length - k])
        # item sample lead + t of the brain is recording sample start + k + t: it lags feature sample t by k
        np.testing.assert_array_equal(batch["brain"][j, 0, lead:].numpy(), k - batch["features"][j, 0].numpy())
        assert ds.target_span(j) == (0, int(start), length - k)
    assert ds[0]["brain"].shape == (n_ch, length - k + lead)
    assert ds.reference_audio(0) is None  # no audio track
