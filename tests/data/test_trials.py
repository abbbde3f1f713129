"""Data cut into trials go through the same dataset as continuous recordings: one window per trial, exactly."""

import numpy as np

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
from bm2.features import FeatureStack, WordOnset
from bm2.preprocessing import PreprocessParams
from bm2.studies._trials import TrialsRecording


def test_trials_become_blocks_and_windows_are_the_trials(tmp_path):
    rng = np.random.default_rng(0)
    n_trials, n_channels, n_samples, sfreq = 40, 5, 300, 100.0  # 3-s epochs from -0.5 s, like Du-IN's
    data = rng.standard_normal((n_trials, n_channels, n_samples)) * 1e-5
    labels = [["yes", "no"][i % 2] for i in range(n_trials)]
    data[:, 0, :] += np.array([1e-4 if lab == "yes" else -1e-4 for lab in labels])[:, None]  # a class marker
    positions = rng.uniform(size=(n_channels, 2))
    rec = TrialsRecording("toy", "01", data, labels, sfreq, [f"c{i}" for i in range(n_channels)], "seeg",
                          positions=positions, tmin=-0.5)
    ds = build_datasets([rec], Cache(tmp_path), PreprocessParams(sample_rate=sfreq), FeatureStack([WordOnset()]),
                        WindowParams(tmin=-0.5, tmax=2.5, anchor="word"),
                        SplitParams(strategy="stratified", test=0.1, valid=0.1, seed=0),
                        NormParams(baseline=False, robust=False), targets=("label",))
    total = sum(len(ds[s]) for s in ("train", "valid", "test"))
    assert total == n_trials and ds.vocabulary == ["no", "yes"]
    assert [len(ds[s]) for s in ("valid", "test")] == [4, 4]  # 10% of each class of 20
    test = ds.test
    for i in range(len(test)):
        item = test[i]
        trial = int(test.segments.start[i]) // n_samples
        assert int(test.segments.start[i]) == trial * n_samples  # the window is the whole trial, no more
        # preprocessing removes each channel's mean over the recording: equal up to one constant per channel
        got, want = item["brain"].numpy(), data[trial]
        np.testing.assert_allclose(got - got.mean(-1, keepdims=True), want - want.mean(-1, keepdims=True),
                                   rtol=1e-4, atol=1e-10)
        assert ds.vocabulary[int(item["label"])] == labels[trial]


def test_filters_and_resampling_run_trial_by_trial(tmp_path):
    """A trial's preprocessed signal does not depend on its neighbours (before, filters ran across trial borders)."""
    from bm2.preprocessing import preprocess

    rng = np.random.default_rng(1)
    n_trials, n_channels, n_samples, sfreq = 4, 3, 200, 100.0
    data = rng.standard_normal((n_trials, n_channels, n_samples)) * 1e-5
    other = data.copy()
    other[1] += 1e-3 * np.sin(np.linspace(0, 40, n_samples))  # a loud neighbour of trials 0 and 2
    params = PreprocessParams(sample_rate=50.0, highpass=1.0)
    brains = []
    for k, trials in enumerate((data, other)):
        rec = TrialsRecording("toy", "01", trials, ["a"] * n_trials, sfreq, [f"c{i}" for i in range(n_channels)],
                              "seeg", positions=np.zeros((n_channels, 2)), identity={"k": k})
        assert rec.trial_samples == n_samples
        brains.append(np.asarray(preprocess(rec, Cache(tmp_path), params)["brain"]))
    per_trial = n_samples // 2
    assert brains[0].shape == (n_channels, n_trials * per_trial)
    same = [np.array_equal(brains[0][:, t * per_trial:(t + 1) * per_trial],
                           brains[1][:, t * per_trial:(t + 1) * per_trial]) for t in range(n_trials)]
    assert same == [True, False, True, True]


def test_scalers_follow_the_signal_they_were_fitted_on(tmp_path):
    """The same recording preprocessed another way (here across trial borders, as before trial_samples) gets its own
    robust scaler: a scaler keyed by the recording alone would be fitted on the old signal and reused."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((20, 3, 100)) * 1e-5
    labels = [["a", "b"][i % 2] for i in range(20)]

    def scaler(trial_samples):
        rec = TrialsRecording("toy", "01", data, labels, 100.0, ["c0", "c1", "c2"], "seeg",
                              positions=np.zeros((3, 2)))
        rec.trial_samples = trial_samples
        ds = build_datasets([rec], Cache(tmp_path), PreprocessParams(sample_rate=100.0, highpass=2.0),
                            FeatureStack([WordOnset()]), WindowParams(tmin=0.0, tmax=1.0, anchor="word"),
                            SplitParams(strategy="stratified", test=0.2, valid=0.0, seed=0), NormParams(baseline=False),
                            targets=("label",))
        return ds.train.recordings[0].scaler

    per_trial, across = scaler(100), scaler(None)
    assert len(list((tmp_path / "robust-scaler").glob("*/manifest.json"))) == 2
    assert not np.array_equal(per_trial.scale, across.scale)
