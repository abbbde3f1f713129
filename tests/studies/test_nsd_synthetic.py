"""nsd_synthetic: generated in the nsd2024 release's layout, read back by its loader; what the simulation promises."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from bm2.cache import Cache
from bm2.features import build_feature
from bm2.studies.base import StudyError, get_study_class
from bm2.studies.nsd2024 import OPTIONAL, REQUIRED, TASKS, NSD2024
from bm2.features.nsd_spec import MAX_DB, NOISE_DB
from bm2.studies.nsd_synthetic import MARGIN, NSDSynthetic, WordFamily


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = NSDSynthetic(tmp_path_factory.mktemp("nsd_syn"), n_trials=60, n_words=6, seed=3)
    study.prepare()
    return study


def test_registered_and_layout_is_the_release(study):
    assert get_study_class("nsd_synthetic") is NSDSynthetic and isinstance(study, NSD2024)
    (path,) = sorted(study.dataset.glob("*.h5"))
    with h5py.File(path, "r") as f:
        keys = set(f)
        assert set(REQUIRED) <= keys and keys - set(REQUIRED) <= set(OPTIONAL)
        n_frames, n_electrodes = f["ecog_alldataset"].shape
        assert n_electrodes == 64 and f["wave_re_alldataset"].shape == (n_frames * 128,)
        assert f["wave_re_spec_alldataset"].shape == (n_frames, 256)
        assert f["label_alldataset"].dtype.kind == "S" and f["start_ind_re_valid_alldataset"].dtype == np.int64


def test_read_back_by_the_loader(study):
    (rec,) = list(study.iter_recordings())
    assert rec.subject == "SY01" and rec.sex == "female" and len(rec.labels) == 60
    assert len(set(rec.labels)) == 6 and rec.tasks == [TASKS[i % 5] for i in range(60)]
    assert rec.raw().info["sfreq"] == 125.0 and len(rec.raw().ch_names) == 64
    assert rec.optional("noisesample_re_alldataset").shape[1] == 256
    # the spectrogram computed from the stored audio passes the check against the stored one
    value = build_feature("nsd_spec").compute_timeline(rec, 125.0, rec.n_frames, Cache(study.root / "c"))
    np.testing.assert_allclose(value, rec.stored_spectrogram(), atol=1e-5)
    # regenerating gives the same files (seeded), and another seed another dataset
    again = NSDSynthetic(study.root, n_trials=60, n_words=6, seed=3)
    assert again.dataset == study.dataset and again.is_prepared()
    assert NSDSynthetic(study.root, n_trials=60, n_words=6, seed=4).dataset != study.dataset


def test_same_word_sounds_alike_and_speech_is_louder_than_silence(study):
    (rec,) = list(study.iter_recordings())
    spec = rec.stored_spectrogram()
    spans = list(zip(rec.starts, rec.ends))
    vec = np.stack([spec[:, a:b].mean(axis=1) for a, b in spans])
    corr = np.corrcoef(vec - vec.mean(axis=0))
    labels = np.array(rec.labels)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    assert corr[same].mean() > corr[labels[:, None] != labels[None, :]].mean() + 0.3
    silence = np.concatenate([spec[:, b + 20:b + 60] for _, b in spans[:-1]], axis=1)
    assert np.mean([spec[:, a:b].mean() for a, b in spans]) > silence.mean() + 0.1


def test_ecog_motor_leads_and_auditory_lags(study):
    (rec,) = list(study.iter_recordings())
    ecog = rec.raw().get_data()
    speaking = np.zeros(rec.n_frames)
    for a, b in zip(rec.starts, rec.ends):
        speaking[a:b] = 1.0
    lags = np.arange(-24, 25)
    best = np.zeros(64)
    strength = np.zeros(64)
    for e in range(64):
        if ecog[e].std() == 0:
            continue
        # corr(ecog[t], speaking[t - lag]): lag < 0 = the electrode leads the speech
        c = np.array([np.corrcoef(np.roll(speaking, lag), ecog[e])[0, 1] for lag in lags])
        best[e], strength[e] = lags[np.argmax(np.abs(c))], np.abs(c).max()
    columns = np.arange(64) % 8
    inside = (strength > 0.2) & (np.abs(best) < 24)  # not at the range's edge (the pre-onset bump)
    assert np.median(best[inside & (columns < 4)]) < 0 < np.median(best[inside & (columns >= 4)])
    flat = [e for e in range(64) if ecog[e].std() == 0]
    assert len(flat) == 1  # the first of the n_bad = 3 bad electrodes


def test_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="n_trials >= 60"):
        NSDSynthetic(tmp_path, n_trials=10)
    with pytest.raises(ValueError, match="sex"):
        NSDSynthetic(tmp_path, sex="unified")
    with pytest.raises(ValueError, match="unvoiced=1.5"):
        NSDSynthetic(tmp_path, unvoiced=1.5)
    with pytest.raises(StudyError, match="prepare"):
        list(NSDSynthetic(tmp_path / "empty").iter_recordings())


def test_recipe_fragment_gives_the_agreed_batches(study, tmp_path):
    """``recipe=nsd_data`` on the synthetic study: the batch keys and shapes the three NSD branches agreed on."""
    import os

    from hydra import compose, initialize_config_dir

    from bm2.builders import build_all_datasets

    conf = os.path.join(os.path.dirname(__file__), "..", "..", "conf")
    with initialize_config_dir(config_dir=os.path.abspath(conf), version_base=None):
        cfg = compose("config", overrides=[
            "recipe=nsd_data", f"paths.studies.nsd_synthetic={study.root}", f"paths.cache={tmp_path / 'cache'}",
            "studies.nsd_synthetic.n_trials=60", "studies.nsd_synthetic.n_words=6", "studies.nsd_synthetic.seed=3"])
    datasets = build_all_datasets(cfg)
    (rec,) = list(study.iter_recordings())
    test = datasets.test.segments
    trial = test.block_uid.str.split(" ").str[-1].astype(int).to_numpy()
    np.testing.assert_array_equal(np.sort(trial), np.arange(10, 60))  # the last 50 trials in file order
    np.testing.assert_array_equal(test.start.to_numpy(), rec.starts[trial] - 32)
    assert len(datasets.valid.segments) == 1  # 10 % of the 10 other trials
    batch = datasets.train.batch([0, 1, 2])
    assert batch["brain"].shape == (3, 64, 144) and batch["features"].shape == (3, 256, 128)
    assert batch["speech"].shape == (3, 128) and batch["positions"].shape == (3, 64, 2)
    assert batch["features"].min() >= -1 and batch["features"].max() <= 1  # unscaled release spectrogram
    audio, sr = datasets.test.reference_audio(0)
    assert sr == 16000 and audio.shape == (128 * 128,)
    # the model outputs the task's target (the spectrogram), not the extra on-stage mask it also reads
    from bm2.builders import build_task, model_out_channels

    assert datasets.targets == ("features", "speech")
    assert model_out_channels(datasets, build_task(cfg).targets) == 256


def test_quiet_background_lifts_the_true_parameter_pcc(study, tmp_path):
    # the fixture has the defaults (background at -70 dB, under the -50 dB floor; gain 0 dB): silence is the constant
    # -1 and the synthesizer fed the true parameters predicts the audio better than with the study's former audible
    # background (-35 dB, words 10 dB louder); the options enter the dataset's folder
    assert study.options["background_db"] == -70.0 and study.options["gain_db"] == 0.0
    audible = NSDSynthetic(tmp_path, n_trials=60, n_words=6, seed=3, gain_db=10.0, background_db=-35.0)
    assert audible.dataset.name != study.dataset.name
    new, old = study.true_parameter_pcc(), audible.true_parameter_pcc()
    assert new["pcc"] > old["pcc"] + 0.03 and new["pcc_expected_noise"] > old["pcc_expected_noise"] + 0.01
    assert new["clamped"] < min(old["clamped"], 1e-3) and new["floor"] > old["floor"] + 0.1
    (rec,) = list(study.iter_recordings())
    spec = rec.stored_spectrogram()
    silence = np.concatenate([spec[:, b + 20:b + 100] for b in rec.ends[:-1]], axis=1)
    np.testing.assert_array_equal(silence, -1.0)
    # true_parameter_pcc simulates the stored data again: the file's spans give the same share of floor values
    spans = np.concatenate([spec[:, a - MARGIN:b + MARGIN] for a, b in zip(rec.starts, rec.ends)], axis=1)
    assert 0.05 < new["floor"] < 0.9
    top = (MAX_DB - NOISE_DB - 1e-3) / (MAX_DB - NOISE_DB) * 2.0 - 1.0  # within 1e-3 dB of the ceiling / floor
    assert float((spans <= -top).mean()) == pytest.approx(new["floor"], abs=1e-6)


def test_unvoiced_and_voiced_noise_shape_the_words():
    rng = np.random.default_rng(0)
    voiced = [WordFamily(rng, "female", unvoiced=0.0) for _ in range(20)]
    assert all(f.voiced.all() for f in voiced)
    unvoiced = [WordFamily(rng, "female", unvoiced=1.0, voiced_noise=0.3) for _ in range(20)]
    assert all(f.voiced.sum() == 1 for f in unvoiced)  # the one voiced segment every word keeps
    default = [WordFamily(rng, "female") for _ in range(200)]
    share = np.mean(np.concatenate([~f.voiced for f in default]))
    assert 0.15 < share < 0.35  # 0.3 drawn per segment, less the forced vowels
    params, n_spoken = unvoiced[0].trial(rng)
    middle = params["voicing"][MARGIN:MARGIN + n_spoken]
    assert middle.max() == pytest.approx(0.7, abs=1e-3) and middle.min() == pytest.approx(0.12, abs=1e-3)


def test_true_pitch_and_formant_tracks_are_stored(study):
    # where the release stores Praat's tracks, the study stores its true ones: f0 on voiced spoken frames (in the
    # sex's range), F1-F6 on spoken frames (sorted, inside the formant ranges), 0 elsewhere; read by the praat target
    from bm2.features.praat import stored_tracks
    from bm2.models.formant_synth import F0_RANGES, FORMANT_RANGES

    (rec,) = list(study.iter_recordings())
    pitch, formant = rec.optional("pitch_re_alldataset"), rec.optional("formant_re_alldataset")
    assert pitch.shape == (rec.n_frames,) and formant.shape == (rec.n_frames, 6)
    spoken = np.zeros(rec.n_frames, dtype=bool)
    for a, b in zip(rec.starts, rec.ends):
        spoken[a:b] = True
    assert (formant[spoken] > 0).mean() > 0.95 and (formant[~spoken] > 0).mean() < 0.05
    assert 0.3 < (pitch[spoken] > 0).mean() < 0.98  # voiced segments only
    lo, hi = F0_RANGES["female"]
    assert lo <= pitch[pitch > 0].min() and pitch.max() <= hi
    f = formant[formant[:, 0] > 0]
    assert (np.diff(f, axis=1) >= 0).all()
    ranges = np.array(FORMANT_RANGES["female"])
    assert (f >= ranges[:, 0] * 0.9).all() and (f <= ranges[:, 1] * 1.1).all()  # the trials' +-3 % jitter
    tracks = stored_tracks(rec, rec.n_frames)
    np.testing.assert_allclose(tracks[0][pitch > 0], pitch[pitch > 0])
    assert np.isnan(tracks[0][pitch == 0]).all() and np.isnan(tracks[1:, ~spoken & (formant[:, 0] == 0)]).all()
