"""Segment datasets: windows of cached brain signals paired with speech features.

:func:`build_datasets` preprocesses every recording into the cache (once), computes its feature
timeline (once), cuts it into segments (:mod:`bm2.data.segments`), fits the robust brain scaler per
recording and the feature scaler on **training windows only**, and returns one :class:`SegmentDataset`
per split. Items carry the subject index, sensor positions and a channel mask, so recordings with
different montages can share a batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import typing as tp

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..cache import Cache, EntryWriter
from ..features import FeatureStack
from ..preprocessing import PreprocessParams, RobustScaler, StandardScaler, preprocess
from ..studies.base import Recording
from .segments import SPLITS, SplitParams, WindowParams, make_segments

logger = logging.getLogger(__name__)

SCALER_VERSION = "1"


@dataclasses.dataclass(frozen=True)
class NormParams:
    """Brain normalisation: baseline on the pre-anchor part, robust scaler, clamping."""

    baseline: bool = True
    robust: bool = True
    max_scale: float | None = 20.0
    n_fit_windows: int = 200
    scale_features: bool = True


class LazyArray:
    """A ``.npy`` file opened as a read-only memory map on first use (cheap to pickle to workers)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped array."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {"path": self.path, "_array": None}

    @classmethod
    def of(cls, array: np.ndarray) -> LazyArray:
        """Wrap a memory map returned by the cache."""
        filename = getattr(array, "filename", None)
        if filename is None:
            raise TypeError("LazyArray.of expects a memory-mapped array")
        return cls(str(filename))


@dataclasses.dataclass
class PreparedRecording:
    """What a dataset needs of one recording, without holding its data in memory."""

    study: str
    subject: str
    session: str
    task: str
    uid: str
    subject_index: int
    brain: LazyArray
    features: LazyArray
    positions: np.ndarray
    ch_names: list[str]
    sample_rate: float
    scaler: RobustScaler | None = None


class SegmentDataset(torch.utils.data.Dataset):
    """The windows of one split.

    Items are dictionaries with ``brain`` (C, T'), ``features`` (D, T'), ``subject_index``, ``positions``
    (C, 2), ``mask`` (C,) and ``index`` (row of :attr:`segments`).
    """

    def __init__(self, recordings: list[PreparedRecording], segments: pd.DataFrame, window: WindowParams,
                 norm: NormParams, feature_scaler: StandardScaler | None) -> None:
        self.recordings = recordings
        self.segments = segments.reset_index(drop=True)
        self.window = window
        self.norm = norm
        self.feature_scaler = feature_scaler
        self._rec = self.segments["recording"].to_numpy(dtype=np.int64)
        self._start = self.segments["start"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.segments)

    def brain_window(self, rec: PreparedRecording, start: int) -> np.ndarray:
        """Baselined brain window (before scaling), float32 (C, T)."""
        length = self.window.n_samples(rec.sample_rate)
        x = np.array(rec.brain.array[:, start:start + length], dtype=np.float32)
        if self.norm.baseline:
            n_pre = int(round(-self.window.tmin * rec.sample_rate))
            if n_pre > 0:
                x -= x[:, :n_pre].mean(axis=1, keepdims=True)
        return x

    def feature_window(self, index: int) -> np.ndarray:
        """Scaled speech features of item ``index`` (D, T'), without reading the brain signal."""
        rec = self.recordings[self._rec[index]]
        start = int(self._start[index])
        length = self.window.n_samples(rec.sample_rate)
        y = np.array(rec.features.array[:, start:start + length], dtype=np.float32)
        if self.feature_scaler is not None:
            y = self.feature_scaler(y)
        k = self.window.offset_samples(rec.sample_rate)
        return y[:, :-k] if k else y

    def _brain_into(self, index: int, out: np.ndarray) -> None:
        """Write the normalised brain window of item ``index`` into ``out`` (C, T'), in place."""
        rec = self.recordings[self._rec[index]]
        start = int(self._start[index])
        length = self.window.n_samples(rec.sample_rate)
        k = self.window.offset_samples(rec.sample_rate)  # brain lags the stimulus: brain[t + k] with speech[t]
        data = rec.brain.array
        # One copy of the part that is returned; baseline, centring, scaling and clamping then run in place on
        # it (the loader is memory-bound: every extra pass over the window costs bandwidth).
        out[...] = data[:, start + k:start + length]
        shift = np.zeros(len(out), dtype=np.float32)
        n_pre = int(round(-self.window.tmin * rec.sample_rate))
        if self.norm.baseline and n_pre > 0:
            shift += data[:, start:start + n_pre].mean(axis=1, dtype=np.float32)
        if rec.scaler is not None:
            shift += rec.scaler.center
        out -= shift[:, None]
        if rec.scaler is not None:
            out *= (1.0 / rec.scaler.scale)[:, None]
            if rec.scaler.max_scale is not None:
                np.clip(out, -rec.scaler.max_scale, rec.scaler.max_scale, out=out)

    def _brain_shape(self, rec: PreparedRecording) -> tuple[int, int]:
        k = self.window.offset_samples(rec.sample_rate)
        return len(rec.ch_names), self.window.n_samples(rec.sample_rate) - k

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        rec = self.recordings[self._rec[index]]
        x = np.empty(self._brain_shape(rec), dtype=np.float32)
        self._brain_into(index, x)
        return {"brain": torch.from_numpy(x),
                "features": torch.from_numpy(np.ascontiguousarray(self.feature_window(index))),
                "subject_index": rec.subject_index,
                "positions": torch.from_numpy(rec.positions),
                "index": index}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (the DataLoader uses this): windows are written straight into the batch
        tensor, allocated in shared memory inside a worker so that handing it to the trainer copies nothing."""
        recs = [self.recordings[self._rec[i]] for i in indices]
        shapes = {self._brain_shape(r) for r in recs}
        if len(shapes) != 1:  # several montages: per-item windows, padded by collate
            return collate([self[i] for i in indices])
        shape = (len(indices), *shapes.pop())
        if torch.utils.data.get_worker_info() is not None:
            # allocated in shared memory directly (``share_memory_`` on an empty tensor would copy it there)
            storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
            brain = torch.empty(0, dtype=torch.float32).set_(storage).view(shape)
        else:
            brain = torch.empty(shape)
        out = brain.numpy()
        for j, i in enumerate(indices):
            self._brain_into(int(i), out[j])
        return {"brain": brain, "positions": torch.from_numpy(np.stack([r.positions for r in recs])),
                "mask": torch.ones(brain.shape[:2], dtype=torch.bool),
                "features": torch.from_numpy(np.stack([self.feature_window(int(i)) for i in indices])),
                "subject_index": torch.tensor([r.subject_index for r in recs], dtype=torch.long),
                "index": torch.tensor([int(i) for i in indices], dtype=torch.long)}


def collate(items: list[dict[str, tp.Any]] | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stack items, padding channels to the largest montage of the batch (``mask`` marks real sensors).

    A batch already assembled by :meth:`SegmentDataset.__getitems__` is returned as it is.
    """
    if isinstance(items, dict):
        return items
    counts = [it["brain"].shape[0] for it in items]
    if len(set(counts)) == 1:  # one montage: plain stacking, no padding pass
        brain = torch.stack([it["brain"] for it in items])
        positions = torch.stack([it["positions"] for it in items])
        mask = torch.ones(len(items), counts[0], dtype=torch.bool)
    else:
        length = items[0]["brain"].shape[1]
        brain = torch.zeros(len(items), max(counts), length)
        positions = torch.zeros(len(items), max(counts), 2)
        mask = torch.zeros(len(items), max(counts), dtype=torch.bool)
        for i, (it, c) in enumerate(zip(items, counts)):
            brain[i, :c] = it["brain"]
            positions[i, :c] = it["positions"]
            mask[i, :c] = True
    return {"brain": brain, "positions": positions, "mask": mask,
            "features": torch.stack([it["features"] for it in items]),
            "subject_index": torch.tensor([it["subject_index"] for it in items], dtype=torch.long),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}


@dataclasses.dataclass
class Datasets:
    """The three splits plus what the model needs to know about the data."""

    train: SegmentDataset
    valid: SegmentDataset
    test: SegmentDataset
    n_subjects: int
    feature_dim: int
    recordings: list[PreparedRecording]

    def __getitem__(self, split: str) -> SegmentDataset:
        return getattr(self, split)


def _fit_scaler(dataset: SegmentDataset, rec_index: int, rows: np.ndarray, norm: NormParams, cache: Cache,
                key: dict[str, tp.Any], seed: int) -> RobustScaler:
    """The robust scaler of one recording, fitted on up to ``norm.n_fit_windows`` of its training windows.

    Cached (it costs a median and quantiles over ~200 windows per recording at every start otherwise); the
    key holds everything that decides which windows are used: recording, preprocessing, window, split, seed.
    """
    rec = dataset.recordings[rec_index]

    def build(writer: EntryWriter) -> None:
        rng = np.random.default_rng([seed, int(rec.uid[:12], 16)])  # per recording: independent of the others
        chosen = rng.choice(rows, size=min(len(rows), norm.n_fit_windows), replace=False)
        samples = np.concatenate([dataset.brain_window(rec, int(dataset._start[i])) for i in chosen], axis=1)
        fitted = RobustScaler.fit(samples, norm.max_scale)
        writer.save("center", fitted.center)
        writer.save("scale", fitted.scale)

    entry = cache.get("robust-scaler", {**key, "recording": rec.uid, "n_fit_windows": norm.n_fit_windows,
                                        "baseline": norm.baseline, "seed": seed}, SCALER_VERSION, build)
    return RobustScaler(np.array(entry["center"]), np.array(entry["scale"]), norm.max_scale)


def build_datasets(recordings: tp.Sequence[Recording], cache: Cache, preprocess_params: PreprocessParams,
                   features: FeatureStack, window: WindowParams, split: SplitParams, norm: NormParams,
                   seed: int = 0) -> Datasets:
    """Preprocess, featurise and segment ``recordings`` into train / valid / test datasets."""
    if not recordings:
        raise ValueError("no recordings selected: check `dset.selections` and `dset.n_recordings`")
    subjects = sorted({r.subject_uid for r in recordings})
    subject_index = {s: i for i, s in enumerate(subjects)}
    prepared: list[PreparedRecording] = []
    tables: list[pd.DataFrame] = []
    logger.info("preparing %d recordings of %d subjects (preprocessing and features are cached in %s)",
                len(recordings), len(subjects), cache.root)
    bar = tqdm(recordings, desc="prepare recordings", disable=True if os.environ.get("BM2_NO_PROGRESS") else None)
    for i, rec in enumerate(bar):
        entry = preprocess(rec, cache, preprocess_params)
        n_times = int(entry.meta["n_times"])
        sample_rate = float(entry.meta["sample_rate"])
        feats = features.timeline(rec, sample_rate, n_times, cache)
        prepared.append(PreparedRecording(
            study=rec.study, subject=rec.subject, session=rec.session, task=rec.task, uid=rec.uid,
            subject_index=subject_index[rec.subject_uid], brain=LazyArray.of(entry["brain"]),
            features=LazyArray.of(feats),
            positions=np.array(entry["positions"], dtype=np.float32), ch_names=list(entry.meta["ch_names"]),
            sample_rate=sample_rate))
        seg = make_segments(rec.events(), n_times, sample_rate, window, split)
        seg.insert(0, "recording", i)
        seg.insert(1, "study", rec.study)
        seg.insert(2, "subject", rec.subject)
        seg.insert(3, "session", rec.session)
        seg.insert(4, "recording_uid", rec.uid)
        tables.append(seg)
    segments = pd.concat(tables, ignore_index=True)
    by_split = {s: segments[segments.split == s] for s in SPLITS}
    for s, table in by_split.items():
        if table.empty:
            logger.warning("split %r is empty (%d blocks in total): add recordings or change dset.split",
                           s, segments.block_uid.nunique())
    train = SegmentDataset(prepared, by_split["train"], window, norm, None)
    rng = np.random.default_rng(seed)
    scaler_key = {"preprocess": preprocess_params.key(), "window": dataclasses.asdict(window),
                  "split": dataclasses.asdict(split)}
    if norm.robust:
        for i in range(len(prepared)):
            rows = np.flatnonzero(train._rec == i)
            if len(rows) == 0:
                raise ValueError(f"recording {prepared[i].subject}/{prepared[i].session} of {prepared[i].study} "
                                 "has no training window to fit its scaler; change dset.split or drop it")
            prepared[i].scaler = _fit_scaler(train, i, rows, norm, cache, scaler_key, seed)
    feature_scaler = None
    if norm.scale_features and len(train):
        chosen = rng.choice(len(train), size=min(len(train), 2000), replace=False)
        length = window.n_samples(prepared[0].sample_rate)
        samples = np.concatenate([
            prepared[train._rec[i]].features.array[:, train._start[i]:train._start[i] + length] for i in chosen],
            axis=1)
        feature_scaler = StandardScaler.fit(np.asarray(samples, dtype=np.float32))
    datasets = {s: SegmentDataset(prepared, by_split[s], window, norm, feature_scaler) for s in SPLITS}
    return Datasets(n_subjects=len(subjects), feature_dim=features.dimension, recordings=prepared, **datasets)
