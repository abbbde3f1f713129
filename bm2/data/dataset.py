"""Window datasets for every task: cached brain signals paired with the targets the task asks for.

:func:`build_datasets` preprocesses every recording into the cache (once), computes the targets the task needs
(dense feature timelines, class labels of anchor events, speech / silence per sample; :mod:`bm2.targets`), cuts
windows (:mod:`bm2.data.segments`), splits them (:mod:`bm2.data.splits`), builds label vocabularies and fits the
robust brain scaler per recording and the feature scaler on **training windows only**, and returns one
:class:`SegmentDataset` per split. Items carry the subject index, sensor positions and a channel mask, so
recordings with different montages can share a batch. Brain signals are ``(C, T)`` or ``(C, F, T)`` (a frequency
axis, e.g. superlet spectra): every step below works on the last axis as time. Data that come cut into trials
are recordings whose blocks are the trials (:class:`bm2.studies.epochs.EpochsRecording`), not another code path.
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
from ..targets import UNKNOWN, LabelParams, SpeechParams, build_vocabulary, encode_labels, label_names, speech_timeline
from ..utils.hashing import content_hash
from .segments import WindowParams, make_segments
from .splits import POOL, SPLITS, SplitParams, check_named, named_split, window_splits

logger = logging.getLogger(__name__)

SCALER_VERSION = "2"  # 2: scalers of (C, F, T) signals; baseline over the last axis
TARGETS = ("features", "label", "speech")


@dataclasses.dataclass(frozen=True)
class NormParams:
    """Brain normalisation: baseline on the pre-anchor part, robust scaler, clamping."""

    baseline: bool = True
    robust: bool = True
    max_scale: float | None = 20.0
    n_fit_windows: int = 200
    scale_features: bool = True
    instance: bool = False  # per window and channel: median / IQR over time (after the recording scaler)
    pooled: bool = False  # per channel mean / std pooled over every sample of the training recordings (LibriBrain)


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
    features: LazyArray | None
    positions: np.ndarray
    ch_names: list[str]
    sample_rate: float
    scaler: RobustScaler | None = None
    speech: np.ndarray | None = None  # uint8 [n_times] when the task needs speech / silence
    n_times: int = 0


class SegmentDataset(torch.utils.data.Dataset):
    """The windows of one split.

    Items are dictionaries (see :mod:`bm2.tasks.base` for the batch spec) with ``brain`` (C, T') or (C, F, T'),
    ``subject_index``, ``positions`` (C, 2), ``mask`` (C,), ``index`` (row of :attr:`segments`) and the targets
    named in ``targets``: ``features`` (D, T'), ``label`` (class id, -1 = not in :attr:`vocabulary`) and
    ``speech`` (T',).
    """

    def __init__(self, recordings: list[PreparedRecording], segments: pd.DataFrame, window: WindowParams,
                 norm: NormParams, feature_scaler: StandardScaler | None, targets: tp.Sequence[str] = ("features",),
                 vocabulary: list[str] | None = None) -> None:
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown targets {unknown}; valid targets are {list(TARGETS)}")
        self.recordings = recordings
        self.segments = segments.reset_index(drop=True)
        self.window = window
        self.norm = norm
        self.feature_scaler = feature_scaler
        self.targets = tuple(targets)
        self.vocabulary = vocabulary
        self._rec = self.segments["recording"].to_numpy(dtype=np.int64)
        self._start = self.segments["start"].to_numpy(dtype=np.int64)
        self._label = (self.segments["label"].to_numpy(dtype=np.int64) if "label" in self.segments
                       else np.full(len(self.segments), UNKNOWN, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def n_unseen(self) -> int:
        """Windows whose label is not in the (training) vocabulary: kept, encoded -1, excluded from metrics."""
        return int((self._label == UNKNOWN).sum()) if "label" in self.targets else 0

    def target_span(self, index: int) -> tuple[int, int, int]:
        """``(recording, first, length)``: the samples of the recording timeline covered by item ``index``'s
        per-sample targets (``speech``, ``features``) and by a per-sample model output."""
        rec = self.recordings[self._rec[index]]
        k = self.window.offset_samples(rec.sample_rate)
        return int(self._rec[index]), int(self._start[index]), self.window.n_samples(rec.sample_rate) - k

    def speech_timeline(self, recording: int) -> np.ndarray:
        """float32 ``[n_times]`` speech (1) / silence (0) of recording ``recording`` (index in :attr:`recordings`).

        Raises ``ValueError`` when the dataset was built without the ``speech`` target."""
        speech = self.recordings[recording].speech
        if speech is None:
            raise ValueError("this dataset has no speech target: build it with targets including 'speech'")
        return speech.astype(np.float32)

    def brain_window(self, rec: PreparedRecording, start: int) -> np.ndarray:
        """Baselined brain window (before scaling), float32 (C, T) or (C, F, T)."""
        length = self.window.n_samples(rec.sample_rate)
        x = np.array(rec.brain.array[..., start:start + length], dtype=np.float32)
        if self.norm.baseline:
            n_pre = int(round(-self.window.tmin * rec.sample_rate))
            if n_pre > 0:
                x -= x[..., :n_pre].mean(axis=-1, keepdims=True)
        return x

    def feature_window(self, index: int) -> np.ndarray:
        """Scaled speech features of item ``index`` (D, T'), without reading the brain signal."""
        rec = self.recordings[self._rec[index]]
        if rec.features is None:
            raise ValueError("this dataset has no feature target: build it with targets including 'features'")
        start = int(self._start[index])
        length = self.window.n_samples(rec.sample_rate)
        y = np.array(rec.features.array[:, start:start + length], dtype=np.float32)
        if self.feature_scaler is not None:
            y = self.feature_scaler(y)
        k = self.window.offset_samples(rec.sample_rate)
        return y[:, :-k] if k else y

    def speech_window(self, index: int) -> np.ndarray:
        """Speech (1) / silence (0) of item ``index`` on the samples of its target span, float32 (T',)."""
        r, first, length = self.target_span(index)
        speech = self.recordings[r].speech
        if speech is None:
            raise ValueError("this dataset has no speech target: build it with targets including 'speech'")
        return speech[first:first + length].astype(np.float32)

    def _brain_into(self, index: int, out: np.ndarray) -> None:
        """Write the normalised brain window of item ``index`` into ``out`` (C, [F,] T'), in place."""
        rec = self.recordings[self._rec[index]]
        start = int(self._start[index])
        length = self.window.n_samples(rec.sample_rate)
        k = self.window.offset_samples(rec.sample_rate)  # brain lags the stimulus: brain[t + k] with speech[t]
        data = rec.brain.array
        # One copy of the part that is returned; baseline, centring, scaling and clamping then run in place on
        # it (the loader is memory-bound: every extra pass over the window costs bandwidth).
        out[...] = data[..., start + k:start + length]
        shift = np.zeros(out.shape[:-1], dtype=np.float32)
        n_pre = int(round(-self.window.tmin * rec.sample_rate))
        if self.norm.baseline and n_pre > 0:
            shift += data[..., start:start + n_pre].mean(axis=-1, dtype=np.float32)
        if rec.scaler is not None:
            shift += rec.scaler.center
        out -= shift[..., None]
        if rec.scaler is not None:
            out *= (1.0 / rec.scaler.scale)[..., None]
        if self.norm.instance:
            q25, median, q75 = np.quantile(out, [0.25, 0.5, 0.75], axis=-1, keepdims=True)
            out -= median
            out /= np.where(q75 - q25 > 0, q75 - q25, 1.0)
        max_scale = rec.scaler.max_scale if rec.scaler is not None else (
            self.norm.max_scale if self.norm.instance else None)
        if max_scale is not None:
            np.clip(out, -max_scale, max_scale, out=out)

    def _brain_shape(self, rec: PreparedRecording) -> tuple[int, ...]:
        k = self.window.offset_samples(rec.sample_rate)
        lead = tuple(rec.brain.array.shape[:-1])
        return (*lead, self.window.n_samples(rec.sample_rate) - k)

    def _targets_of(self, indices: tp.Sequence[int]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "features" in self.targets:
            out["features"] = torch.from_numpy(np.stack([self.feature_window(int(i)) for i in indices]))
        if "label" in self.targets:
            out["label"] = torch.from_numpy(self._label[np.asarray(indices, dtype=np.int64)])
        if "speech" in self.targets:
            out["speech"] = torch.from_numpy(np.stack([self.speech_window(int(i)) for i in indices]))
        return out

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        rec = self.recordings[self._rec[index]]
        x = np.empty(self._brain_shape(rec), dtype=np.float32)
        self._brain_into(index, x)
        item: dict[str, tp.Any] = {"brain": torch.from_numpy(x), "subject_index": rec.subject_index,
                                   "positions": torch.from_numpy(rec.positions), "index": index}
        item.update({k: v[0] for k, v in self._targets_of([index]).items()})
        return item

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
                "subject_index": torch.tensor([r.subject_index for r in recs], dtype=torch.long),
                "index": torch.tensor([int(i) for i in indices], dtype=torch.long), **self._targets_of(indices)}


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
        rest = tuple(items[0]["brain"].shape[1:])
        brain = torch.zeros(len(items), max(counts), *rest)
        positions = torch.zeros(len(items), max(counts), 2)
        mask = torch.zeros(len(items), max(counts), dtype=torch.bool)
        for i, (it, c) in enumerate(zip(items, counts)):
            brain[i, :c] = it["brain"]
            positions[i, :c] = it["positions"]
            mask[i, :c] = True
    batch = {"brain": brain, "positions": positions, "mask": mask,
             "subject_index": torch.tensor([it["subject_index"] for it in items], dtype=torch.long),
             "index": torch.tensor([it["index"] for it in items], dtype=torch.long)}
    for key in ("features", "speech"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    if "label" in items[0]:
        batch["label"] = torch.tensor([int(it["label"]) for it in items], dtype=torch.long)
    return batch


@dataclasses.dataclass
class Datasets:
    """The three splits plus what the model needs to know about the data.

    ``fingerprint``: a content hash of the recordings' uids (their identity includes their files), saved with
    every checkpoint so that an XP never resumes on other data.
    """

    train: SegmentDataset
    valid: SegmentDataset
    test: SegmentDataset
    n_subjects: int
    feature_dim: int
    recordings: list[PreparedRecording]
    vocabulary: list[str] | None = None
    targets: tuple[str, ...] = ("features",)

    def __getitem__(self, split: str) -> SegmentDataset:
        return getattr(self, split)

    @property
    def fingerprint(self) -> str:
        """Identity of the data: a hash of the sorted recording uids."""
        return content_hash(sorted(r.uid for r in self.recordings))

    @property
    def n_channels(self) -> int:
        """The largest montage (channels after padding)."""
        return max(len(r.ch_names) for r in self.recordings)

    @property
    def n_freqs(self) -> int:
        """Size of the frequency axis of ``(C, F, T)`` signals (1 for ``(C, T)`` signals)."""
        shape = self.recordings[0].brain.array.shape
        return int(shape[1]) if len(shape) == 3 else 1

    def manifest(self) -> pd.DataFrame:
        """Which recording / block / window went to which split (one row per window)."""
        columns = ["split", "study", "subject", "session", "recording_uid", "block_uid", "block_index", "kind",
                   "anchor", "start", "label_name", "label"]
        tables = [self[s].segments.assign(split=s) for s in SPLITS]
        table = pd.concat(tables, ignore_index=True)
        return table[[c for c in columns if c in table.columns]]


def _fit_scaler(dataset: SegmentDataset, rec_index: int, rows: np.ndarray, norm: NormParams, cache: Cache,
                key: dict[str, tp.Any], seed: int) -> RobustScaler:
    """The robust scaler of one recording, fitted on up to ``norm.n_fit_windows`` of its training windows.

    Cached (it costs a median and quantiles over ~200 windows per recording at every start otherwise); the
    key holds everything that decides which windows are used: recording, preprocessing, window, split, seed.
    Signals with a frequency axis get one scaler per (channel, frequency).
    """
    rec = dataset.recordings[rec_index]

    def build(writer: EntryWriter) -> None:
        rng = np.random.default_rng([seed, int(rec.uid[:12], 16)])  # per recording: independent of the others
        chosen = rng.choice(rows, size=min(len(rows), norm.n_fit_windows), replace=False)
        samples = np.concatenate([dataset.brain_window(rec, int(dataset._start[i])) for i in chosen], axis=-1)
        lead = samples.shape[:-1]
        fitted = RobustScaler.fit(samples.reshape(-1, samples.shape[-1]), norm.max_scale)
        writer.save("center", fitted.center.reshape(lead))
        writer.save("scale", fitted.scale.reshape(lead))

    entry = cache.get("robust-scaler", {**key, "recording": rec.uid, "n_fit_windows": norm.n_fit_windows,
                                        "baseline": norm.baseline, "seed": seed}, SCALER_VERSION, build)
    return RobustScaler(np.array(entry["center"]), np.array(entry["scale"]), norm.max_scale)


def pooled_statistics(arrays: tp.Sequence[np.ndarray], chunk: int = 1 << 16) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, mean, std)`` per channel over every sample of ``arrays`` (each ``(C, T)``), pooled exactly: run means
    weighted by length, variance = within-run plus between-run sums of squares over the total count (population
    std, float64 accumulation, chunks of ``chunk`` samples)."""
    total, mean, m2 = 0, None, None
    for array in arrays:
        n = array.shape[-1]
        sums = np.zeros(array.shape[:-1])
        for start in range(0, n, chunk):
            sums += np.asarray(array[..., start:start + chunk], dtype=np.float64).sum(axis=-1)
        run_mean = sums / max(n, 1)
        run_m2 = np.zeros_like(run_mean)
        for start in range(0, n, chunk):
            part = np.asarray(array[..., start:start + chunk], dtype=np.float64) - run_mean[..., None]
            run_m2 += (part * part).sum(axis=-1)
        if mean is None or m2 is None:
            total, mean, m2 = n, run_mean, run_m2
            continue
        new_total = total + n
        delta = run_mean - mean
        mean = mean + delta * n / new_total
        m2 = m2 + run_m2 + delta ** 2 * total * n / new_total
        total = new_total
    if mean is None or m2 is None or total == 0:
        raise ValueError("no samples to pool statistics over")
    return total, mean, np.sqrt(m2 / total)


def _pooled_scaler(prepared: list[PreparedRecording], by_split: dict[str, pd.DataFrame], norm: NormParams,
                   cache: Cache, preprocess_params: PreprocessParams) -> RobustScaler:
    """``norm.pooled``: one per-channel mean / std for every recording, pooled over every sample of the
    **training recordings** (those with training windows and none of valid / test: whole runs under a ``named``
    split), then clamped at ``max_scale`` (LibriBrain: ±10). Unlike pnpl, which fits each partition on its own
    runs, validation and test recordings never enter the statistics."""
    train = set(by_split["train"].recording.tolist())
    held = set(by_split["valid"].recording.tolist()) | set(by_split["test"].recording.tolist())
    chosen = sorted(train - held)
    if not chosen:
        raise ValueError("norm.pooled fits statistics on whole training recordings, but every recording also holds "
                         "valid / test windows: use a recording-level split (dset.split.strategy=named) or "
                         "norm.pooled=false")
    key = {"preprocess": preprocess_params.key(), "recordings": [prepared[i].uid for i in chosen]}

    def build(writer: EntryWriter) -> None:
        n, mean, std = pooled_statistics([prepared[i].brain.array for i in chosen])
        writer.save("center", mean.astype(np.float32))
        writer.save("scale", np.where(std > 0, std, 1.0).astype(np.float32))
        writer.meta.update(n_samples=int(n), n_recordings=len(chosen))

    entry = cache.get("pooled-scaler", key, SCALER_VERSION, build)
    logger.info("norm.pooled: per-channel mean / std from %d training recordings", len(chosen))
    return RobustScaler(np.array(entry["center"]), np.array(entry["scale"]), norm.max_scale)


def _explain_empty(segments: pd.DataFrame, blocks: pd.DataFrame, window: WindowParams, split: SplitParams,
                   name: str) -> str:
    """Why split ``name`` is empty, and what to change."""
    length = window.tmax - window.tmin
    durations = blocks.duration.to_numpy() if len(blocks) else np.zeros(0)
    hints = []
    if len(durations) and np.median(durations) < length:
        hints.append(f"the window (tmin={window.tmin}, tmax={window.tmax}: {length:g} s) is longer than most blocks "
                     f"(median {np.median(durations):.3g} s, max {durations.max():.3g} s): shorten dset.window or "
                     "use longer blocks")
    if len(blocks) <= 1:
        hints.append(f"the data hold {len(blocks)} block(s): every window of a block goes to one split; define "
                     "more blocks (sentences, sounds or trials)")
    kinds = window.anchor_of(name) if name != POOL else window.anchor_of("test")
    if kinds != "stride" and not (segments.kind == kinds).any() and not len(segments):
        hints.append(f"no {kinds!r} event lies inside a block: check dset.window.anchor")
    hints.append(f"change dset.split (strategy {split.strategy!r}, test={split.test}, valid={split.valid}) or "
                 "select more recordings")
    return f"the {name} split is empty ({len(segments)} windows in {len(blocks)} blocks in all): " + "; ".join(hints)


def _check_splits(segments: pd.DataFrame, blocks: pd.DataFrame, window: WindowParams,
                  split: SplitParams) -> dict[str, pd.DataFrame]:
    """The windows of each split; raises ``ValueError`` (with the reason) when a split the configuration asks for
    is empty, before any training."""
    by_split = {s: segments[segments.split == s] for s in SPLITS}
    for s, table in by_split.items():
        if not table.empty:
            continue
        wanted = s == "train" or (s == "test" and split.test > 0) or (s == "valid" and split.valid > 0) or (
            split.strategy == "named" and (split.test_recordings if s == "test" else split.valid_recordings)) or (
            split.strategy in ("last_n", "kfold") and s == "test")
        if wanted:
            raise ValueError(_explain_empty(segments, blocks, window, split, s))
        logger.warning("split %r is empty (dset.split gives it no data)", s)
    return by_split


def build_datasets(recordings: tp.Sequence[Recording], cache: Cache, preprocess_params: PreprocessParams,
                   features: FeatureStack, window: WindowParams, split: SplitParams, norm: NormParams,
                   seed: int = 0, targets: tp.Sequence[str] = ("features",), label: LabelParams | None = None,
                   speech: SpeechParams | None = None) -> Datasets:
    """Preprocess ``recordings``, compute the ``targets``, cut windows and split them into train / valid / test.

    Raises ``ValueError`` when no recording is selected, when a split that the configuration asks for is empty
    (with the reason: windows longer than blocks, a single block, no anchor event ...), or when a recording has
    no training window to fit its scaler.
    """
    if not recordings:
        raise ValueError("no recordings selected: check `dset.selections` and `dset.n_recordings`")
    targets = tuple(targets)
    label = label or LabelParams()
    speech = speech or SpeechParams()
    subjects = sorted({r.subject_uid for r in recordings})
    subject_index = {s: i for i, s in enumerate(subjects)}
    if split.strategy == "named":
        check_named(recordings, split)
    prepared: list[PreparedRecording] = []
    tables: list[pd.DataFrame] = []
    block_tables: list[pd.DataFrame] = []
    logger.info("preparing %d recordings of %d subjects (preprocessing and features are cached in %s)",
                len(recordings), len(subjects), cache.root)
    bar = tqdm(recordings, desc="prepare recordings", disable=True if os.environ.get("BM2_NO_PROGRESS") else None)
    for i, rec in enumerate(bar):
        entry = preprocess(rec, cache, preprocess_params)
        n_times = int(entry.meta["n_times"])
        sample_rate = float(entry.meta["sample_rate"])
        events = rec.events()
        feats = features.timeline(rec, sample_rate, n_times, cache) if "features" in targets else None
        prepared.append(PreparedRecording(
            study=rec.study, subject=rec.subject, session=rec.session, task=rec.task, uid=rec.uid,
            subject_index=subject_index[rec.subject_uid], brain=LazyArray.of(entry["brain"]),
            features=None if feats is None else LazyArray.of(feats),
            positions=np.array(entry["positions"], dtype=np.float32), ch_names=list(entry.meta["ch_names"]),
            sample_rate=sample_rate, n_times=n_times,
            speech=speech_timeline(events, n_times, sample_rate, speech) if "speech" in targets else None))
        which = named_split(rec, split) if split.strategy == "named" else None
        seg = make_segments(events, n_times, sample_rate, window, split, recording_split=which)
        if "label" in targets:
            seg["label_name"] = label_names(events, seg.event.to_numpy(), label.column, source=repr(rec))
        seg.insert(0, "recording", i)
        seg.insert(1, "study", rec.study)
        seg.insert(2, "subject", rec.subject)
        seg.insert(3, "session", rec.session)
        seg.insert(4, "recording_uid", rec.uid)
        tables.append(seg)
        block_tables.append(events[events.kind == "block"])
    segments = pd.concat(tables, ignore_index=True)
    blocks = pd.concat(block_tables, ignore_index=True)
    vocabulary: list[str] | None = None
    if "label" in targets:
        segments = segments[segments.label_name != ""].reset_index(drop=True)
        if split.window_level:
            # Window-level splits need labels first; the vocabulary then comes from the resulting train split.
            segments["split"] = window_splits(segments.label_name.to_numpy(), split)
        _check_splits(segments, blocks, window, split)
        vocabulary = build_vocabulary(segments.label_name[segments.split == "train"], label)
        segments["label"] = encode_labels(segments.label_name, vocabulary)
        out_of_task = (segments.label == UNKNOWN) & (segments.split == "train")
        if label.top_n is not None or label.min_count > 1:
            # The task is defined on the kept classes: windows of any other label leave every split (counted).
            out_of_task = segments.label == UNKNOWN
        if out_of_task.any():
            counts = segments[out_of_task.to_numpy()].split.value_counts().to_dict()
            logger.info("windows of labels outside the %d kept classes are left out (dset.label): %s",
                        len(vocabulary), counts)
        segments = segments[~out_of_task.to_numpy()].reset_index(drop=True)
    elif split.window_level:
        raise ValueError(f"dset.split.strategy={split.strategy!r} stratifies windows by class: it needs a task with "
                         "class labels (test.task=classification)")
    by_split = _check_splits(segments, blocks, window, split)
    for s in ("valid", "test"):
        if "label" in targets:
            n = int((by_split[s].label == UNKNOWN).sum())
            if n:
                logger.warning("%d %s windows have labels never seen in training: kept with label -1, excluded "
                               "from metrics and reported as n_unseen", n, s)
    train = SegmentDataset(prepared, by_split["train"], window, norm, None, targets, vocabulary)
    rng = np.random.default_rng(seed)
    scaler_key = {"preprocess": preprocess_params.key(), "window": dataclasses.asdict(window),
                  "split": dataclasses.asdict(split)}
    if norm.pooled:
        pooled = _pooled_scaler(prepared, by_split, norm, cache, preprocess_params)
        for rec in prepared:
            rec.scaler = pooled
    elif norm.robust:
        for i in range(len(prepared)):
            rows = np.flatnonzero(train._rec == i)
            if len(rows) == 0:
                raise ValueError(f"recording {prepared[i].subject}/{prepared[i].session} of {prepared[i].study} "
                                 "has no training window to fit its scaler; change dset.split or drop it")
            prepared[i].scaler = _fit_scaler(train, i, rows, norm, cache, scaler_key, seed)
    feature_scaler = None
    if "features" in targets and norm.scale_features and len(train):
        chosen = rng.choice(len(train), size=min(len(train), 2000), replace=False)
        length = window.n_samples(prepared[0].sample_rate)
        samples = np.concatenate([
            prepared[train._rec[i]].features.array[:, train._start[i]:train._start[i] + length]  # type: ignore
            for i in chosen], axis=1)
        feature_scaler = StandardScaler.fit(np.asarray(samples, dtype=np.float32))
    datasets = {s: SegmentDataset(prepared, by_split[s], window, norm, feature_scaler, targets, vocabulary)
                for s in SPLITS}
    return Datasets(n_subjects=len(subjects), feature_dim=features.dimension if "features" in targets else 0,
                    recordings=prepared, vocabulary=vocabulary, targets=targets, **datasets)
