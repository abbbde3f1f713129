"""Pre-training crops of continuous recordings (``dset.crops``): 4 s at 1 kHz -> 4000-sample windows (40 tokens
of 100 samples) inside the recording and inside one piece, and the fallback to the epochs, logged."""

import logging
from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.data import CropParams, NormParams, build_datasets
from bm2.features import FeatureStack, WordOnset
from bm2.models.duin_vq import DuinVQVAE
from bm2.preprocessing import PreprocessParams
from bm2.studies._continuous import ContinuousRecording, piece_blocks

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_blocks_never_cross_pieces():
    blocks = piece_blocks(["a.npy", "b.npy"], [25_000, 12_000], 1000.0, block_seconds=10.0)
    assert blocks.uid.tolist() == ["a.npy/0", "a.npy/1", "a.npy/2", "b.npy/0"]  # a's last 5 s: half a block, kept
    np.testing.assert_allclose(blocks.onset, [0.0, 10.0, 20.0, 25.0])
    np.testing.assert_allclose(blocks.duration, [10.0, 10.0, 5.0, 10.0])  # b's last 2 s: too short, left out


def test_four_second_crops_at_1khz_are_4000_samples_inside_the_recording(tmp_path):
    rng = np.random.default_rng(0)
    lengths, n_channels = [61_000, 45_500], 3
    pieces = [rng.standard_normal((n_channels, n)) * 1e-5 for n in lengths]
    rec = ContinuousRecording("toy", "01", ["0.npy", "1.npy"], lengths, lambda i: pieces[i], 1000.0,
                              ["A1", "A2", "B1"], "seeg", positions=rng.uniform(size=(n_channels, 2)))
    crops = CropParams(length=4.0, stride=1.0)
    ds = build_datasets([rec], Cache(tmp_path), PreprocessParams(sample_rate=1000.0), FeatureStack([WordOnset()]),
                        crops.window(), crops.split(seed=0), NormParams(baseline=False), targets=())
    assert all(len(ds[s]) > 0 for s in ("train", "valid", "test"))
    total = sum(lengths)
    for split in ("train", "valid", "test"):
        starts = ds[split].segments.start.to_numpy()
        assert ((starts >= 0) & (starts + 4000 <= total)).all()
        # no crop crosses the border between the two files
        assert not ((starts < lengths[0]) & (starts + 4000 > lengths[0])).any()
        assert ds[split][0]["brain"].shape == (n_channels, 4000)
    # 1-s grid: 10-s blocks give 7 crops each (a block of 6 s or more gives at least 3)
    assert ds.train.segments.groupby("block_uid").size().max() == 7
    # the Du-IN tokenizer reads them as 40 tokens of 100 samples
    model = DuinVQVAE(0, 1, n_channels, 4000, depth=1, n_heads=2, d_head=8, d_ff=16, n_codes=16, d_code=8,
                      decoder_depth=1)
    from bm2.data import collate

    batch = collate([ds.train[i] for i in range(2)])
    out = model(batch["brain"], batch["subject_index"], batch["mask"])
    assert out["codes"].shape == (2, 40) and out["output"].shape == (2, n_channels, 4000)


def _cfg(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    tiny = ["studies.synthetic_seeg.n_subjects=2", "studies.synthetic_seeg.n_runs=1",
            "studies.synthetic_seeg.n_words=4", "studies.synthetic_seeg.repeats=5",
            "studies.synthetic_seeg.n_channels=4", "studies.synthetic_seeg.n_responsive=2",
            "preprocess.sample_rate=100", f"paths.data={tmp_path / 'data'}", f"paths.cache={tmp_path / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=[*tiny, *overrides])


def test_recipe_uses_crops_of_continuous_data_when_present(tmp_path, caplog):
    from bm2.builders import build_all_datasets

    with caplog.at_level(logging.INFO, logger="bm2.builders"):
        ds = build_all_datasets(_cfg(tmp_path, "recipe=duin_vqvae", "studies.synthetic_seeg.continuous_seconds=60"))
    assert "pre-training on 4-s crops every 1 s of 2 continuous recordings" in caplog.text
    assert ds.train[0]["brain"].shape == (4, 400)  # 4 s at the model's 100 Hz
    assert ds.train.window.tmax - ds.train.window.tmin == 4.0
    assert {r.session for r in ds.recordings} == {"continuous"} and ds.n_subjects == 2
    assert "label" not in ds.targets  # crops carry no class


def test_recipe_falls_back_to_the_epochs_with_a_log_line(tmp_path, caplog):
    from bm2.builders import build_all_datasets

    with caplog.at_level(logging.INFO, logger="bm2.builders"):
        ds = build_all_datasets(_cfg(tmp_path, "recipe=duin_vqvae", "studies.synthetic_seeg.continuous_seconds=0"))
    assert ("no continuous recording for 2 of 2 subjects (synthetic_seeg/001, synthetic_seeg/002): pre-training "
            "on the windows of dset.window (the epochs) instead of crops") in caplog.text
    assert ds.train[0]["brain"].shape == (4, 300)  # the 3-s epochs
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 2 * 4 * 5


def test_crops_refuse_a_task_with_labels(tmp_path):
    from bm2.builders import build_all_datasets

    with pytest.raises(ValueError, match="test.task=pretraining"):
        build_all_datasets(_cfg(tmp_path, "recipe=duin_classifier", "dset.crops.length=4.0"))


