"""The synthetic sEEG word-reading study: written in Du-IN's pickle layout, read back by duin2024's loader, and
its words are decodable from the responsive contacts (and not from the others)."""

from __future__ import annotations

import numpy as np
import pytest

from bm2.studies import StudyError, get_study_class
from bm2.studies.duin2024 import Duin2024
from bm2.studies.synthetic_seeg import SyntheticSeegStudy
from bm2.utils.safe_pickle import RefusedGlobalError, load_restricted

TINY = dict(n_subjects=2, n_runs=2, n_words=8, repeats=3, n_channels=6, n_responsive=3, snr=1.0, seed=0)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = SyntheticSeegStudy(tmp_path_factory.mktemp("synthetic_seeg"), **TINY)
    study.prepare()
    return study


def test_written_in_the_release_layout_and_read_by_the_duin2024_loader(study):
    assert get_study_class("synthetic_seeg") is SyntheticSeegStudy
    root = study.dataset / "data" / "seeg.he2023xuanwu"
    for variant in ("aligned", "unaligned"):
        folder = root / "002" / "word-recitation" / "run2" / f"dataset.bipolar.default.{variant}"
        assert (folder / "data").is_file() and (folder / "info").is_file()
    data = root / "001" / "word-recitation" / "run1" / "dataset.bipolar.default.unaligned" / "data"
    with pytest.raises(RefusedGlobalError) as refused:  # the first global it names is the release's class
        load_restricted(data)
    assert refused.value.name == "utils.DotDict.DotDict"
    items = load_restricted(data, classes=["utils.DotDict.DotDict"])  # and otherwise only numpy's arrays
    assert len(items) == 8 * 3 and items[0].data_s.shape == (6, 3000) and items[0].data_s.dtype == np.float32
    # the plain duin2024 study reads the generated folder as it reads the release
    recs = list(Duin2024(study.dataset).iter_recordings())
    mine = list(study.iter_recordings())
    assert [r.subject for r in recs] == [r.subject for r in mine] == ["001", "002"]
    assert recs[0].study == "duin2024" and mine[0].study == "synthetic_seeg"
    np.testing.assert_array_equal(recs[0].raw().get_data(), mine[0].raw().get_data())
    raw = mine[0].raw()
    assert len(raw.ch_names) == 6 and raw.info["sfreq"] == 1000.0
    assert raw.n_times == 2 * 8 * 3 * 3000  # runs x words x repeats trials of 3 s
    words = mine[0].events().query("kind == 'word'")
    assert sorted(set(words.text)) == [f"word{i:02d}" for i in range(8)]
    assert words.text.value_counts().eq(6).all()


def test_generation_is_deterministic_and_needs_prepare(study, tmp_path):
    again = SyntheticSeegStudy(tmp_path, **TINY)
    with pytest.raises(StudyError, match="prepare"):
        list(again.iter_recordings())
    labels, data = again.simulate_run(0, 1, "unaligned")
    want_labels, want = study.simulate_run(0, 1, "unaligned")
    assert labels == want_labels
    np.testing.assert_array_equal(data, want)
    assert SyntheticSeegStudy(tmp_path, **{**TINY, "seed": 1}).dataset != again.dataset


@pytest.mark.parametrize("variant", ["aligned", "unaligned"])
def test_words_are_decodable_from_the_responsive_contacts_only(study, variant):
    """Nearest class mean, trained on run 1, tested on run 2 (8 words: chance 1/8)."""
    words, _ = study.templates(0)
    responsive = np.flatnonzero(np.abs(words).sum(axis=(0, 2)) > 0)
    assert len(responsive) == 3
    quiet = np.setdiff1d(np.arange(6), responsive)

    def accuracy(channels):
        (train_y, train_x), (test_y, test_x) = [study.simulate_run(0, r, variant) for r in (0, 1)]
        feats = [x[:, channels].reshape(len(x), len(channels), -1, 20).mean(-1).reshape(len(x), -1)
                 for x in (train_x, test_x)]  # 50 Hz bins
        vocab = sorted(set(train_y))
        means = np.stack([feats[0][np.array(train_y) == w].mean(0) for w in vocab])
        guess = np.argmin(((feats[1][:, None] - means[None]) ** 2).sum(-1), axis=1)
        return np.mean(np.array(vocab)[guess] == np.array(test_y))

    assert accuracy(responsive) >= 0.6  # chance 0.125
    assert accuracy(quiet) <= 0.4
