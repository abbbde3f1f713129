"""duin2024 on fixtures in the release's exact pickle layout, and the restricted unpickler."""

from __future__ import annotations

import logging
import os
import pickle
import shutil

import numpy as np
import pytest

from bm2.studies import StudyError, get_study_class
from bm2.studies.duin2024 import Duin2024, channel_layout
from bm2.utils.safe_pickle import AttrDict, PickleReadError, RefusedGlobalError, load_restricted

from .fixtures_duin import make_epochs, release_classes, write_release

CH = ["SM8", "SM9", "SM10", "P3", "TI'1"]
WORDS = ["你好", "再见", "谢谢"]


def _layout(seed: int = 0, ch_names=CH, n_samples: int = 3000):
    runs = {}
    for r, run in enumerate(["run1", "run2"]):
        labels = [WORDS[i % 3] for i in range(6 + r)]
        runs[run] = (list(ch_names), labels, make_epochs(len(labels), len(ch_names), seed + r, n_samples))
    return runs


@pytest.mark.parametrize("variant", ["aligned", "unaligned"])
def test_reads_the_release_layout_as_trials(tmp_path, variant):
    layout = {"001": _layout(0), "002": _layout(10)}
    write_release(tmp_path, layout, variant=variant)
    other = "unaligned" if variant == "aligned" else "aligned"
    assert get_study_class("duin2024") is Duin2024
    study = Duin2024(tmp_path, aligned=(variant == "aligned"))
    study.prepare()
    recs = list(study.iter_recordings())
    assert [r.subject for r in recs] == ["001", "002"]
    rec = recs[0]
    raw = rec.raw()
    assert raw.ch_names == CH and set(raw.get_channel_types()) == {"seeg"} and raw.info["sfreq"] == 1000.0
    want = np.concatenate([layout["001"]["run1"][2], layout["001"]["run2"][2]])  # 6 + 7 trials, run order
    got = raw.get_data().reshape(len(CH), len(want), 3000).transpose(1, 0, 2)
    np.testing.assert_allclose(got, want * 1e-6, rtol=1e-6)
    events = rec.events()
    words = events[events.kind == "word"].reset_index(drop=True)
    assert words.text.tolist() == layout["001"]["run1"][1] + layout["001"]["run2"][1]
    np.testing.assert_allclose(words.onset.to_numpy(), np.arange(13) * 3.0 + 0.5)  # time zero 0.5 s in
    blocks = events[events.kind == "block"]
    assert len(blocks) == 13 and blocks.uid.iloc[6] == "trial run2/0"
    pos = rec.sensor_positions(CH)
    assert pos.shape == (5, 2) and len({tuple(p) for p in pos.tolist()}) == 5
    # the other variant's folders do not exist: asking for it finds no run
    with pytest.raises(StudyError, match=f"dataset.bipolar.default.{other}"):
        list(Duin2024(tmp_path, aligned=(other == "aligned"), subjects=["1"]).iter_recordings())


def test_uid_follows_the_pickles_content(tmp_path):
    folders = write_release(tmp_path, {"001": _layout(0)})
    uid = next(Duin2024(tmp_path).iter_recordings()).uid
    assert next(Duin2024(tmp_path).iter_recordings()).uid == uid
    assert next(Duin2024(tmp_path / "data" / "seeg.he2023xuanwu").iter_recordings()).uid == uid  # other root form
    runs = _layout(0)
    data = runs["run2"][2].copy()
    data[0, 0, 0] += 1
    write_release(tmp_path, {"001": {"run2": (runs["run2"][0], runs["run2"][1], data)}})
    assert (folders["001"]["run2"] / "data").is_file()
    assert next(Duin2024(tmp_path).iter_recordings()).uid != uid


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_every_pickle_protocol_reads_the_same(tmp_path, protocol):
    runs = _layout(3)
    write_release(tmp_path, {"001": runs}, protocol=protocol)
    rec = next(Duin2024(tmp_path).iter_recordings())
    got = rec.raw().get_data().reshape(len(CH), 13, 3000).transpose(1, 0, 2)
    np.testing.assert_allclose(got[:6], runs["run1"][2] * 1e-6, rtol=1e-6)


def test_items_of_the_original_class_path_become_bm2_attribute_dicts(tmp_path):
    path = tmp_path / "items"
    with release_classes() as DotDict:
        item = DotDict(name="好", data_s=np.arange(6.0).reshape(2, 3))
        path.write_bytes(pickle.dumps([item], protocol=4))
        assert b"utils.DotDict" in path.read_bytes()
    import sys

    assert "utils.DotDict" not in sys.modules  # read without the release's code
    (back,) = load_restricted(path, classes=["utils.DotDict.DotDict"])
    assert type(back) is AttrDict and back.name == "好"
    np.testing.assert_array_equal(back.data_s, np.arange(6.0).reshape(2, 3))
    with pytest.raises(RefusedGlobalError, match="utils.DotDict.DotDict"):  # not allowed unless named
        load_restricted(path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    runs = _layout(0)
    folders = write_release(tmp_path, {"001": runs})
    data = folders["001"]["run2"] / "data"
    with release_classes() as DotDict:  # a genuine-looking item list with the payload inside one item
        items = [DotDict(name="好", data_s=np.zeros((5, 3000), np.float32), data_n=_Exploit(marker))]
        data.write_bytes(pickle.dumps(items, protocol=4))
    with pytest.raises(StudyError) as info:
        list(Duin2024(tmp_path).iter_recordings())
    message = str(info.value)
    assert str(data) in message and f"{os.system.__module__}.system" in message  # posix.system on Linux
    assert not marker.exists()
    # the same through the loader directly, and with another classic payload
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(RefusedGlobalError) as refused:
        load_restricted(evil)
    assert refused.value.name == f"{os.system.__module__}.system" and str(evil) in str(refused.value)
    assert not marker.exists()

    class _Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    evil.write_bytes(pickle.dumps(_Eval()))
    with pytest.raises(RefusedGlobalError, match="builtins.eval"):
        load_restricted(evil)
    assert not marker.exists()


def test_truncated_pickle_names_the_file(tmp_path):
    folders = write_release(tmp_path, {"001": _layout(0)})
    data = folders["001"]["run1"] / "data"
    payload = data.read_bytes()
    data.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(StudyError, match=rf"{data}.*truncated"):
        list(Duin2024(tmp_path).iter_recordings())
    with pytest.raises(PickleReadError, match="truncated"):
        load_restricted(data, classes=["utils.DotDict.DotDict"])
    data.write_bytes(b"not a pickle at all")
    with pytest.raises(StudyError, match=str(data)):
        list(Duin2024(tmp_path).iter_recordings())


def test_runs_that_disagree_on_channels_keep_the_shared_ones(tmp_path, caplog):
    runs = _layout(0)
    ch2 = ["SM9", "SM10", "P3", "TI'1", "X1"]  # SM8 missing, X1 extra
    runs["run2"] = (ch2, runs["run2"][1], runs["run2"][2])
    write_release(tmp_path, {"001": runs})
    with caplog.at_level(logging.WARNING, logger="bm2.studies.duin2024"):
        rec = next(Duin2024(tmp_path).iter_recordings())
    assert rec.raw().ch_names == ["SM9", "SM10", "P3", "TI'1"]
    assert "disagree" in caplog.text and "SM8" in caplog.text and "X1" in caplog.text
    got = rec.raw().get_data().reshape(4, 13, 3000).transpose(1, 0, 2)
    np.testing.assert_allclose(got[:6], runs["run1"][2][:, 1:] * 1e-6, rtol=1e-6)  # run1 rows 1..4
    np.testing.assert_allclose(got[6:], runs["run2"][2][:, :4] * 1e-6, rtol=1e-6)  # run2 rows 0..3
    # channels asked explicitly: kept in that order, and one missing from a run is an error naming it
    rec = next(Duin2024(tmp_path, channels={"1": ["P3", "SM9"]}).iter_recordings())
    assert rec.raw().ch_names == ["P3", "SM9"]
    with pytest.raises(StudyError, match=r"\['SM8'\].*run2"):
        list(Duin2024(tmp_path, channels=["SM8", "P3"]).iter_recordings())


def test_malformed_items_and_missing_layout_are_clear(tmp_path):
    with pytest.raises(StudyError, match="no subject folders"):
        Duin2024(tmp_path).prepare()
    runs = _layout(0)
    runs["run1"] = (CH[:4], runs["run1"][1], runs["run1"][2])  # 5 rows of data but 4 channel names
    write_release(tmp_path, {"001": runs})
    with pytest.raises(StudyError, match="item 0: data_s must be"):
        list(Duin2024(tmp_path).iter_recordings())
    shutil.rmtree(tmp_path / "data")
    write_release(tmp_path, {"001": _layout(0)})
    with pytest.raises(StudyError, match=r"subjects \['007'\]"):
        list(Duin2024(tmp_path, subjects=[7]).iter_recordings())


def test_channel_layout_is_deterministic_and_distinct():
    names = ["SM8", "SM9", "P3", "TI'1", "TI'2", "A1-A2", "A01"]
    pos = channel_layout(names)
    assert pos.shape == (7, 2) and pos.min() >= 0 and pos.max() <= 1
    assert len({tuple(p) for p in pos.tolist()}) == 7
    np.testing.assert_array_equal(pos, channel_layout(names))
    assert pos[0, 0] == pos[1, 0] and pos[0, 1] < pos[1, 1]  # one shaft: one column, contacts along it


def test_channel_layout_parses_contacts_as_the_bids_rereferencing_does():
    from bm2.studies._seeg import parse_contact

    names = ["LA 1", "LA2", "LA 3-LA 4", "RB1"]
    pos = channel_layout(names)
    assert [parse_contact(n.split("-")[0]) for n in names] == [("LA", 1), ("LA", 2), ("LA", 3), ("RB", 1)]
    assert pos[0, 0] == pos[1, 0] == pos[2, 0] != pos[3, 0]  # "LA 1" and "LA2" share a shaft (one column)
    assert pos[0, 1] < pos[1, 1] < pos[2, 1]  # rows follow the contact numbers
