"""Time must not drift when resampling: clicks at known times stay within half a model-rate sample."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from bm2.cache import Cache
from bm2.preprocessing import (MAX_RESAMPLE_FACTOR, PreprocessParams, effective_rate, preprocess, resample_ratio,
                               resampled_length)
from bm2.studies.base import Recording

MINUTE = 60.0


class ClickRecording(Recording):
    """One EEG channel of silence with single-sample clicks at given input samples (an mne RawArray)."""

    def __init__(self, sfreq: float, seconds: float, click_samples: np.ndarray) -> None:
        super().__init__("clicks", "01", identity={"sfreq": sfreq, "seconds": seconds,
                                                   "clicks": [int(i) for i in click_samples]})
        self.sfreq = sfreq
        self.n_times = int(seconds * sfreq)
        self.click_samples = click_samples

    def _load_raw(self):
        import mne

        data = np.zeros((1, self.n_times))
        data[0, self.click_samples] = 1e-6
        return mne.io.RawArray(data, mne.create_info(["EEG001"], self.sfreq, "eeg"), verbose="error")

    def sensor_positions(self, ch_names):
        return np.full((len(ch_names), 2), 0.5, dtype=np.float32)


def _clicks(sfreq: float, seconds: float, every: float) -> np.ndarray:
    """Input samples of clicks every ``every`` s, off the output grid by varied amounts, plus one near the end."""
    times = np.arange(every, seconds, every) + np.linspace(0.0013, 0.0071, len(np.arange(every, seconds, every)))
    times = np.append(times, seconds - 2.0)
    return np.round(times * sfreq).astype(int)


@pytest.mark.parametrize("sfreq, filters", [
    (2034.5101, {}),  # 4D / BTi / HCP: no exact ratio with small factors
    (1017.25, {}),
    (599.9, {"highpass": 0.5, "lowpass": 40.0}),  # zero-phase filters must not move the clicks either
])
def test_clicks_stay_within_half_a_sample_over_an_hour(tmp_path, sfreq, filters) -> None:
    seconds = 60 * MINUTE
    clicks = _clicks(sfreq, seconds, every=10 * MINUTE)
    rec = ClickRecording(sfreq, seconds, clicks)
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, **filters))
    rate = float(entry.meta["sample_rate"])
    assert rate == pytest.approx(120.0, rel=1e-5)
    assert entry.meta["requested_sample_rate"] == 120.0 and entry.meta["raw_sfreq"] == sfreq
    brain = np.asarray(entry["brain"][0], dtype=np.float64)
    assert entry.meta["n_times"] == len(brain)
    for i in clicks:
        true_time = i / sfreq
        # Look for the click's peak in a generous window (the old code was 58 ms = 7 samples off at the end).
        lo = int(true_time * 120) - 30
        peak = lo + int(np.argmax(np.abs(brain[lo:lo + 61])))
        error = peak / rate - true_time
        assert abs(error) < 0.5 / rate, f"click at {true_time:.4f} s found at {peak / rate:.4f} s"
        # The same seen from the events side: an onset in seconds lands on the click's sample.
        assert int(round(true_time * rate)) == peak


def test_exact_ratios_record_the_requested_rate_and_keep_their_results(tmp_path) -> None:
    # Integer ratios are unchanged: same factors, same samples as a direct resample_poly.
    assert resampled_length(6000, 600.0, 120.0) == (1, 5, 1200)
    assert resampled_length(1000, 1000.0, 120.0) == (3, 25, 120)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((1, 6000)) * 1e-6

    class Rec(ClickRecording):
        def _load_raw(self):
            import mne
            return mne.io.RawArray(data, mne.create_info(["EEG001"], 600.0, "eeg"), verbose="error")

    entry = preprocess(Rec(600.0, 10.0, np.array([], dtype=int)), Cache(tmp_path), PreprocessParams())
    assert entry.meta["sample_rate"] == 120.0 and entry.meta["n_times"] == 1200
    assert (entry.meta["resample_up"], entry.meta["resample_down"]) == (1, 5)
    expected = signal.resample_poly(data - data.mean(1, keepdims=True), 1, 5, axis=1).astype(np.float32)
    np.testing.assert_array_equal(entry["brain"], expected)


@pytest.mark.parametrize("sfreq, ratio", [(1017.25, (480, 4069)), (599.9, (1200, 5999)), (100.0, (6, 5)),
                                          (1200.0, (1, 10)), (2048.0, (15, 256))])
def test_decimal_rates_get_their_exact_ratio(sfreq, ratio) -> None:
    r = resample_ratio(sfreq, 120.0)
    assert (r.numerator, r.denominator) == ratio
    assert effective_rate(sfreq, *ratio) == 120.0


def test_approximate_ratios_stay_bounded_and_close() -> None:
    r = resample_ratio(2034.5101, 120.0)  # exact would be 1200000 / 20345101
    assert max(r.numerator, r.denominator) <= MAX_RESAMPLE_FACTOR
    rng = np.random.default_rng(0)
    for sfreq in np.concatenate([rng.uniform(50, 30000, 200), 1 / rng.uniform(1 / 5000, 1 / 100, 50)]):
        for target in (120.0, 100.0, 250.0, 50.0 / 3):
            r = resample_ratio(float(sfreq), target)
            assert max(r.numerator, r.denominator) <= MAX_RESAMPLE_FACTOR
            assert effective_rate(float(sfreq), r.numerator, r.denominator) == pytest.approx(target, rel=1e-5)
    with pytest.raises(ValueError, match="> 0"):
        resample_ratio(0.0, 120.0)
