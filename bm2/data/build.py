"""Building the datasets of an XP: preprocessing, targets, windows, splits, vocabularies and scalers.

:func:`build_datasets` preprocesses every recording into the cache (once), computes the targets the task needs,
cuts windows (:mod:`bm2.data.segments`), splits them (:mod:`bm2.data.splits`), builds label vocabularies from the
training windows, fits the brain scalers (robust per recording on training windows, or pooled over training
recordings) and the feature scaler on **training data only**, and returns a :class:`~bm2.data.dataset.Datasets`.
"""

from __future__ import annotations

import logging
import os
import time
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..cache import Cache, EntryWriter
from ..features import FeatureStack
from ..features.praat import PraatParams, praat_tracks
from ..preprocessing import PreprocessParams, RobustScaler, StandardScaler, preprocess
from ..studies.base import Recording
from ..utils.hashing import content_hash
from ..targets import UNKNOWN, LabelParams, SpeechParams, build_vocabulary, encode_labels, label_names, speech_timeline
from .dataset import (SCALER_VERSION, AugmentParams, Datasets, LazyArray, NormParams, PreparedRecording,
                      SegmentDataset)
from .segments import WindowParams, make_segments
from .splits import POOL, SPLITS, SplitParams, check_named, named_split, window_splits

logger = logging.getLogger(__name__)


def _brain_entry(rec: PreparedRecording) -> str:
    """The cache entry that holds the recording's preprocessed signal (its folder: the hash of the preprocessing key
    and version), so that a scaler follows the very signal it was fitted on: any change to how the signal is made
    (parameters, ``trial_samples``, a new PREPROCESS_VERSION) makes a new scaler rather than reusing a stale one."""
    return Path(rec.brain.path).parent.name


def _fit_scaler(dataset: SegmentDataset, rec_index: int, rows: np.ndarray, norm: NormParams, cache: Cache,
                key: dict[str, tp.Any], seed: int) -> RobustScaler:
    """The robust scaler of one recording, fitted on up to ``norm.n_fit_windows`` of its training windows.

    Cached (it costs a median and quantiles over ~200 windows per recording at every start otherwise); the
    key holds the recording, preprocessing, window, seed and the starts of the training windows it may draw from
    (which the split, the task's label filter and a stratified split all decide: keying by their settings alone
    would hand back a scaler fitted on windows that are now validation or test windows).
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

    entry = cache.get("robust-scaler", {**key, "recording": rec.uid, "brain": _brain_entry(rec),
                                        "n_fit_windows": norm.n_fit_windows,
                                        "baseline": norm.baseline, "seed": seed,
                                        "train_starts": content_hash(dataset._start[rows].tolist())},
                      SCALER_VERSION, build)
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
    key = {"preprocess": preprocess_params.key(), "recordings": [prepared[i].uid for i in chosen],
           "brains": [_brain_entry(prepared[i]) for i in chosen]}

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
                   speech: SpeechParams | None = None, augment: AugmentParams | None = None,
                   praat: PraatParams | None = None) -> Datasets:
    """Preprocess ``recordings``, compute the ``targets``, cut windows and split them into train / valid / test.

    ``augment`` (:class:`~bm2.data.dataset.AugmentParams`) changes the training windows only. ``praat``
    (:class:`~bm2.features.praat.PraatParams`) sets where the ``praat`` target comes from.

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
    reads, builds, start = cache.reads, cache.builds, time.perf_counter()
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
            sample_rate=sample_rate, n_times=n_times, audio=rec.audio_track(),
            praat=LazyArray.of(praat_tracks(rec, sample_rate, n_times, cache, praat)) if "praat" in targets else None,
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
    logger.info("recordings ready in %.1f s: %d cache entries read, %d computed", time.perf_counter() - start,
                cache.reads - reads, cache.builds - builds)
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
    scaler_key = {"preprocess": preprocess_params.key(), "window": window.key(), "split": split.key()}
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
    # augmentation: the training split only (validation and test windows are never changed)
    datasets = {s: SegmentDataset(prepared, by_split[s], window, norm, feature_scaler, targets, vocabulary,
                                  augment=augment if s == "train" else None, seed=seed)
                for s in SPLITS}
    if augment is not None and augment.active:
        logger.info("dset.augment: training windows shifted by up to %g of their length (zero fill), seeded",
                    augment.shift)
    return Datasets(n_subjects=len(subjects), feature_dim=features.dimension if "features" in targets else 0,
                    recordings=prepared, vocabulary=vocabulary, targets=targets, **datasets)
