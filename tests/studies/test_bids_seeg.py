"""sEEG through the generic ``bids`` study: the modality from channels.tsv, contact positions from electrodes.tsv
(or from the names), and bipolar re-referencing of neighbouring contacts (``studies.bids.bipolar``)."""

from __future__ import annotations

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, preprocess
from bm2.studies import StudyError
from bm2.studies._seeg import bipolar_pairs, ieeg_modality, parse_contact
from bm2.studies.bids import BidsStudy

from .fixtures_bids_seeg import write_seeg_bids

STUDY = dict(datatype="ieeg", task="reading", kinds={"sound": None, "phoneme": None})


def test_pairs_are_direct_neighbours_on_a_shaft():
    assert parse_contact("LA10") == ("LA", 10) and parse_contact("TI'3") == ("TI'", 3)
    assert parse_contact("A01") == ("A", 1) and parse_contact("LA 2") == ("LA", 2)
    assert parse_contact("ECG") is None and parse_contact("12") is None
    names = ["A1", "A2", "A3", "A5", "B1", "C2", "C1", "ECG", "A01", "TI'1", "TI'2"]
    anodes, cathodes, unpaired = bipolar_pairs(names)
    assert [f"{a}-{c}" for a, c in zip(anodes, cathodes)] == ["A1-A2", "A2-A3", "C1-C2", "TI'1-TI'2"]
    # A5 (no A4 / A6), B1 (alone on its shaft), ECG (no number), A01 (a second name of A1): in no pair
    assert unpaired == ["A5", "B1", "ECG", "A01"]
    assert ieeg_modality(["SEEG", "SEEG", "ECOG", "MISC"]) == "seeg" and ieeg_modality(["ECOG", "TRIG"]) == "ecog"
    assert ieeg_modality(["EEG"]) is None


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeg") / "seeg-words"
    return root, write_seeg_bids(root, repeats=2)


def test_seeg_modality_positions_and_events(dataset):
    root, _ = dataset
    study = BidsStudy(root, **STUDY)
    (rec,) = list(study.iter_recordings())
    assert rec.modality == "seeg" and study.modality == "seeg"  # channels.tsv says SEEG, not ECoG
    raw = rec.raw()
    assert raw.ch_names == ["A1", "A2", "A3", "A4", "B1", "B2", "B3"] and raw.info["bads"] == ["B2"]
    assert set(raw.get_channel_types()) == {"seeg"}
    positions = rec.sensor_positions(["A1", "A2", "B1"])  # from electrodes.tsv
    assert positions.shape == (3, 2) and len({tuple(p) for p in positions.round(4).tolist()}) == 3
    words = rec.events().query("kind == 'word'")
    assert len(words) == 6 and set(words.text) == {"ma", "shu", "hua"}


def test_bipolar_channels_are_differences_of_neighbours(dataset, tmp_path):
    root, _ = dataset
    mono = next(iter(BidsStudy(root, **STUDY).iter_recordings()))
    bip = next(iter(BidsStudy(root, bipolar=True, **STUDY).iter_recordings()))
    raw_m, raw_b = mono.raw(), bip.raw()
    # B2 is bad: B1 and B3 are not neighbours, so shaft B gives no channel; bad and unpaired contacts are dropped
    assert raw_b.ch_names == ["A1-A2", "A2-A3", "A3-A4"] and raw_b.info["bads"] == []
    assert set(raw_b.get_channel_types()) == {"seeg"}
    a = {c: raw_m.get_data(picks=[c])[0] for c in ("A1", "A2", "A3", "A4")}
    np.testing.assert_array_equal(raw_b.get_data(picks=["A1-A2"])[0], a["A1"] - a["A2"])  # hand check
    np.testing.assert_array_equal(raw_b.get_data(picks=["A3-A4"])[0], a["A3"] - a["A4"])
    loc = {c: raw_m.info["chs"][raw_m.ch_names.index(c)]["loc"][:3] for c in ("A1", "A2")}
    np.testing.assert_allclose(raw_b.info["chs"][0]["loc"][:3], (loc["A1"] + loc["A2"]) / 2)  # at the midpoint
    # the option enters the recording's identity, hence every cache key
    assert bip.uid != mono.uid and mono.identity["options"].get("bipolar") is None
    entry = preprocess(bip, Cache(tmp_path), PreprocessParams(sample_rate=100.0, picks=("seeg",)))
    assert list(entry.meta["ch_names"]) == ["A1-A2", "A2-A3", "A3-A4"]


def test_contacts_without_positions_are_laid_out_by_name(tmp_path):
    root = tmp_path / "seeg-nopos"
    write_seeg_bids(root, repeats=1, positions=False)
    rec = next(iter(BidsStudy(root, bipolar=True, **STUDY).iter_recordings()))
    positions = rec.sensor_positions(["A1-A2", "A2-A3", "A3-A4"])
    np.testing.assert_allclose(positions[:, 1], [0.0, 0.5, 1.0])  # one shaft: one column, a row per contact


def test_ecog_channels_make_an_ecog_study_and_refuse_bipolar(tmp_path):
    root = tmp_path / "ecog"
    write_seeg_bids(root, repeats=1)
    channels = next(root.rglob("*_channels.tsv"))
    channels.write_text(channels.read_text().replace("SEEG", "ECOG"))
    study = BidsStudy(root, bipolar=True, **STUDY)
    (rec,) = list(study.iter_recordings())
    assert rec.modality == "ecog" and study.modality == "ecog"
    with pytest.raises(StudyError, match="found no two neighbouring sEEG contacts"):
        rec.raw()
