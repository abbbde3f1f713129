"""The LibriBrain grouped-h5 reader: exact format, lazy read-only access, clear errors, and the spine's datasets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bm2.builders import build_all_datasets, build_model_for
from bm2.data.grouped_h5 import (PHONEMES, GroupedH5Error, GroupedParams, grouped_datasets, grouped_path,
                                 read_grouped_header)
from bm2.events import ARPABET

from .fixtures_grouped import write_grouped, write_level

CONF = Path(__file__).resolve().parents[2] / "conf"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_vocabulary_is_pnpl_sorted_order():
    assert len(PHONEMES) == 39 and set(PHONEMES) == set(ARPABET)
    assert [p.lower() for p in PHONEMES][:6] == ["aa", "ae", "ah", "ao", "aw", "ay"] and PHONEMES[-1] == "ZH"


def test_items_are_the_stored_groups_and_files_are_never_written(tmp_path):
    written = write_level(tmp_path, 5)
    files = [grouped_path(tmp_path, 5, s) for s in ("train", "valid", "test")]
    before = [_digest(f) for f in files]
    datasets = grouped_datasets(tmp_path, GroupedParams(k=5))
    assert datasets.vocabulary == list(PHONEMES) and datasets.targets == ("label",)
    assert [len(datasets[s]) for s in ("train", "valid", "test")] == [80, 39, 45]
    assert datasets.n_channels == 306 and datasets.n_freqs == 1 and datasets.n_subjects == 1
    data, labels = written["test"]
    item = datasets.test[7]
    np.testing.assert_array_equal(item["brain"].numpy(), data[7])
    assert item["label"] == labels[7] and item["positions"].shape == (306, 2)
    batch = datasets.test.__getitems__([9, 2, 9, 0])  # any order, repeats: one sorted h5 read, reordered
    np.testing.assert_array_equal(batch["brain"].numpy(), data[[9, 2, 9, 0]])
    assert batch["label"].tolist() == labels[[9, 2, 9, 0]].tolist() and batch["mask"].all()
    seg = datasets.test.segments
    assert seg.label_name.tolist() == [PHONEMES[i] for i in labels] and seg.group_size.eq(5).all()
    assert seg.members[3] == "15 16 17 18 19"
    assert set(datasets.manifest().split) == {"train", "valid", "test"}
    from bm2.results.datasets import dataset_statistics

    stats = dataset_statistics(datasets).loc["libribrain2025_grouped"]
    assert (stats["train segments"], stats["valid segments"], stats["test segments"]) == (80, 39, 45)
    assert stats["channels"] == "306" and stats["recordings"] == 3
    positions = datasets.test.recordings[0].positions
    assert len({tuple(p) for p in np.round(positions, 5)}) == 306  # one distinct position per sensor
    loader = torch.utils.data.DataLoader(datasets.train, batch_size=16, num_workers=1, collate_fn=lambda b: b)
    first = next(iter(loader))  # pickled into a worker: the h5 handle is reopened there
    assert first["brain"].shape == (16, 306, 125)
    for ds in (datasets.train, datasets.valid, datasets.test):
        ds.close()
    assert [_digest(f) for f in files] == before


def test_levels_per_split_and_instance_norm(tmp_path):
    write_level(tmp_path, 5, seed=1)
    written = write_level(tmp_path, 100, {"train": 4, "valid": 3, "test": 39}, seed=2)
    datasets = grouped_datasets(tmp_path, GroupedParams(k=5, test_k=100))
    assert len(datasets.train) == 80 and len(datasets.test) == 39
    assert datasets.test.recordings[datasets.test.recording].task == "grouped_100"
    assert len({r.uid for r in datasets.recordings}) == 3
    from bm2.data.dataset import NormParams

    normed = grouped_datasets(tmp_path, GroupedParams(k=5, test_k=100), NormParams(instance=True, max_scale=10))
    x = normed.test[0]["brain"].numpy()
    np.testing.assert_allclose(np.median(x, axis=-1), 0, atol=1e-5)
    assert not np.allclose(x, written["test"][0][0])


def test_truncated_file_is_an_error_naming_it(tmp_path):
    write_level(tmp_path, 5)
    path = grouped_path(tmp_path, 5, "valid")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(GroupedH5Error, match=r"validation_grouped\.h5.*truncated or damaged"):
        grouped_datasets(tmp_path, GroupedParams(k=5))


def test_missing_dataset_wrong_shape_and_bad_labels(tmp_path):
    rng = np.random.default_rng(0)
    path = write_grouped(tmp_path / "a.h5", rng.standard_normal((4, 306, 125)), [0, 1, 2, 3], 5,
                         skip=("group_indices",))
    with pytest.raises(GroupedH5Error, match=r"a\.h5: missing dataset\(s\) \['group_indices'\]"):
        read_grouped_header(path)
    path = write_grouped(tmp_path / "b.h5", rng.standard_normal((4, 305, 125)), [0, 1, 2, 3], 5)
    with pytest.raises(GroupedH5Error, match=r"b\.h5: dataset 'data' has shape \(4, 305, 125\).*306"):
        read_grouped_header(path)
    path = write_grouped(tmp_path / "c.h5", rng.standard_normal((4, 306, 125)), [0, 39, 2, -1], 5)
    with pytest.raises(GroupedH5Error, match=r"c\.h5: labels outside the 39 phoneme classes.*row 1: 39.*row 3: -1"):
        read_grouped_header(path)
    path = write_grouped(tmp_path / "d.h5", rng.standard_normal((4, 306, 125)), [0, 1, 2], 5)
    with pytest.raises(GroupedH5Error, match=r"d\.h5: 'labels' \(3,\)"):
        read_grouped_header(path)
    with pytest.raises(GroupedH5Error, match=r"grouped_7/train_grouped\.h5: no such grouped file"):
        grouped_datasets(tmp_path, GroupedParams(k=7))


def _cfg(tmp_path: Path, *overrides: str):
    cfg = OmegaConf.load(CONF / "config.yaml")
    cfg.pop("defaults")
    cfg.model = OmegaConf.load(CONF / "model" / "simpleconv.yaml")
    cfg.merge_with_dotlist(["test.task=classification", f"paths.data={tmp_path / 'data'}",
                            f"paths.cache={tmp_path / 'cache'}", *overrides])
    return cfg


def test_selected_by_config_and_served_to_a_model(tmp_path):
    write_level(tmp_path / "data" / "libribrain2025" / "grouped", 10)
    cfg = _cfg(tmp_path, "dset.grouped.k=10", "model.simpleconv.hidden=8", "model.simpleconv.depth=1",
               "model.simpleconv.merger_channels=8", "model.simpleconv.head_hidden=8")
    datasets = build_all_datasets(cfg)  # default root: <libribrain2025 root>/grouped
    assert len(datasets.train) == 80
    model = build_model_for(cfg, datasets)
    batch = datasets.valid.__getitems__(list(range(4)))
    out = model(**{k: v for k, v in batch.items() if k in ("brain", "subject_index", "positions", "mask")})
    logits = next(iter(out.values())) if isinstance(out, dict) else out
    assert logits.shape[:2] == (4, 39)
    other = tmp_path / "elsewhere"
    write_level(other, 10, {"train": 6, "valid": 3, "test": 3})
    assert len(build_all_datasets(_cfg(tmp_path, "dset.grouped.k=10", f"paths.libribrain_grouped={other}")).train) == 6


def test_config_mistakes_are_refused(tmp_path):
    write_level(tmp_path / "g", 10)
    with pytest.raises(ValueError, match=r"dset.grouping would average them again"):
        build_all_datasets(_cfg(tmp_path, "dset.grouped.k=10", f"paths.libribrain_grouped={tmp_path / 'g'}",
                                "dset.grouping.k=5"))
    with pytest.raises(ValueError, match=r"serves test.task=classification only"):
        build_all_datasets(_cfg(tmp_path, "dset.grouped.k=10", f"paths.libribrain_grouped={tmp_path / 'g'}",
                                "test.task=detection"))
    with pytest.raises(ValueError, match=r"dset.grouped.k must be >= 1"):
        GroupedParams(k=0)
