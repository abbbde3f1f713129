import pytest

from bm2.studies import Study, StudyError, UnknownStudyError, get_study_class, study_names, study_root
from bm2.studies.base import METADATA


def test_every_registered_study_declares_metadata():
    names = study_names()
    assert "synthetic" in names
    for name in names:
        meta = get_study_class(name).metadata()
        assert meta["name"] == name
        assert all(isinstance(meta[k], str) and meta[k] for k in METADATA)


def test_unknown_study_lists_valid_names():
    with pytest.raises(UnknownStudyError) as info:
        get_study_class("gwiliams")
    assert "gwiliams" in str(info.value) and "synthetic" in str(info.value)


def test_missing_metadata_is_rejected_and_abstract_classes_are_not_registered():
    with pytest.raises(TypeError, match="must declare"):
        class Incomplete(Study):  # noqa: F811
            name = "incomplete"

    class Intermediate(Study):
        abstract = True

    assert "incomplete" not in study_names()
    assert Intermediate.__name__ not in study_names()


def test_missing_root_names_the_key_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("BM2_DATA", raising=False)
    with pytest.raises(StudyError, match="BM2_DATA"):
        study_root("x")
    assert study_root("x", tmp_path) == (tmp_path / "x").resolve()
    assert study_root("x", tmp_path, tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()

    class Real(Study):
        name = "test_real_study"
        modality = "eeg"
        device = "d"
        language = "en"
        paradigm = "p"
        licence = "l"
        url = "u"
        doi = "x"
        description = "d"

    try:
        with pytest.raises(StudyError, match=r"paths.studies.test_real_study.*BM2_DATA"):
            Real(tmp_path / "nowhere").prepare()
    finally:
        Study._registry.pop("test_real_study")
