"""Training-time shift augmentation (``dset.augment.shift``, Du-IN's classifier): a real shift with zero fill,
bounded by the fraction of the window, seeded per (seed, epoch, window), never applied to validation or test."""

import numpy as np
import pytest
import torch

from bm2.cache import Cache
from bm2.data import AugmentParams, NormParams, SplitParams, WindowParams, build_datasets
from bm2.data.dataset import max_shift, shift_window
from bm2.features import FeatureStack, WordOnset
from bm2.preprocessing import PreprocessParams
from bm2.studies._trials import TrialsRecording

N_TRIALS, N_CHANNELS, N_SAMPLES, SFREQ = 40, 3, 300, 100.0


def test_shift_window_moves_a_ramp_and_fills_zeros():
    ramp = np.arange(1, 11, dtype=np.float32)[None, :].repeat(2, axis=0)  # (2, 10): 1 .. 10, no zero inside
    later = shift_window(ramp.copy(), 3)
    np.testing.assert_array_equal(later[0], [0, 0, 0, 1, 2, 3, 4, 5, 6, 7])
    earlier = shift_window(ramp.copy(), -3)
    np.testing.assert_array_equal(earlier[1], [4, 5, 6, 7, 8, 9, 10, 0, 0, 0])
    np.testing.assert_array_equal(shift_window(ramp.copy(), 0), ramp)
    assert max_shift(3000, 0.1) == 300 and max_shift(300, 0.1) == 30 and max_shift(9, 0.1) == 0
    with pytest.raises(ValueError, match="dset.augment.shift"):
        AugmentParams(shift=1.5)


def _datasets(tmp_path, shift, seed=0):
    # each trial a ramp (distinct values, none zero) so that any shift and its zero fill are visible
    t = np.arange(N_SAMPLES, dtype=np.float64)
    data = np.stack([np.stack([(1000.0 * (i + 1) + 10.0 * c + t + 1) * 1e-6 for c in range(N_CHANNELS)])
                     for i in range(N_TRIALS)])
    labels = [["yes", "no"][i % 2] for i in range(N_TRIALS)]
    rec = TrialsRecording("toy", "01", data, labels, SFREQ, [f"c{i}" for i in range(N_CHANNELS)], "seeg",
                          positions=np.random.default_rng(0).uniform(size=(N_CHANNELS, 2)), tmin=-0.5)
    return build_datasets([rec], Cache(tmp_path / "cache"), PreprocessParams(sample_rate=SFREQ),
                          FeatureStack([WordOnset()]), WindowParams(tmin=-0.5, tmax=2.5, anchor="word"),
                          SplitParams(strategy="stratified", test=0.1, valid=0.1, seed=0),
                          NormParams(baseline=False, robust=False), seed=seed, targets=("label",),
                          augment=AugmentParams(shift=shift))


def test_training_windows_are_shifted_with_zero_fill_within_ten_percent(tmp_path):
    plain, shifted = _datasets(tmp_path, 0.0), _datasets(tmp_path, 0.1)
    bound = max_shift(N_SAMPLES, 0.1)
    seen = []
    for epoch in (1, 2, 3):
        shifted.train.set_epoch(epoch)
        for i in range(len(shifted.train)):
            x, ref = shifted.train[i]["brain"].numpy(), plain.train[i]["brain"].numpy()
            s = shifted.train.shift_of(i, N_SAMPLES)
            assert abs(s) <= bound
            seen.append(s)
            if s > 0:
                np.testing.assert_array_equal(x[:, s:], ref[:, :-s])
                assert not x[:, :s].any()
            elif s < 0:
                np.testing.assert_array_equal(x[:, :s], ref[:, -s:])
                assert not x[:, s:].any()
            else:
                np.testing.assert_array_equal(x, ref)
            # the ramp has no zero: the zeros are exactly the fill
            assert int((x == 0).sum()) == abs(s) * N_CHANNELS
    assert min(seen) < 0 < max(seen) and len(set(seen)) > 20  # real shifts both ways, spread over the range
    # the batched path (DataLoader) gives the same windows as item by item
    batch = shifted.train.__getitems__([0, 1, 2])
    assert torch.equal(batch["brain"], torch.stack([shifted.train[i]["brain"] for i in range(3)]))


def test_validation_and_test_windows_are_never_shifted(tmp_path):
    plain, shifted = _datasets(tmp_path, 0.0), _datasets(tmp_path, 0.1)
    for split in ("valid", "test"):
        dataset = shifted[split]
        dataset.set_epoch(5)
        assert not dataset.augment.active and len(dataset) > 0
        for i in range(len(dataset)):
            assert dataset.shift_of(i, N_SAMPLES) == 0
            assert torch.equal(dataset[i]["brain"], plain[split][i]["brain"])


def test_shifts_are_reproducible_from_seed_and_epoch(tmp_path):
    first, again, other = _datasets(tmp_path, 0.1), _datasets(tmp_path, 0.1), _datasets(tmp_path, 0.1, seed=1)
    n = len(first.train)

    def shifts(ds, epoch):
        ds.train.set_epoch(epoch)
        return [ds.train.shift_of(i, N_SAMPLES) for i in range(n)]

    assert shifts(first, 1) == shifts(again, 1)
    assert torch.equal(first.train[3]["brain"], again.train[3]["brain"])
    assert shifts(first, 1) != shifts(first, 2)  # redrawn every epoch
    assert shifts(first, 1) != shifts(other, 1)  # and with the seed
