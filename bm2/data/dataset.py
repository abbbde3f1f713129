"""Window datasets for every task: cached brain signals paired with the targets the task asks for.

A :class:`SegmentDataset` is the windows of one split; items carry the subject index, sensor positions and a
channel mask, so recordings with different montages can share a batch (:func:`collate`). Brain signals are
``(C, T)`` or ``(C, F, T)`` (a frequency axis, e.g. superlet spectra): every step works on the last axis as time.
Data that come cut into trials are recordings whose blocks are the trials
(:class:`bm2.studies._trials.TrialsRecording`), not another code path. :mod:`bm2.data.build` builds them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import typing as tp
import warnings

import numpy as np
import pandas as pd
import torch

from ..preprocessing import RobustScaler, StandardScaler
from ..targets import UNKNOWN
from ..utils.hashing import content_hash
from . import window_kernel
from .segments import WindowParams
from .splits import SPLITS

logger = logging.getLogger(__name__)

SCALER_VERSION = "2"  # 2: scalers of (C, F, T) signals; baseline over the last axis
TARGETS = ("features", "label", "speech", "praat")


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


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Training-time augmentation of the brain windows (``dset.augment``; the training split only, never valid /
    test).

    ``shift``: a random time shift of each window by an integer ``s`` drawn uniformly in
    ``[-floor(shift * T), floor(shift * T)]`` samples (``T`` the window's length), with **zero fill** (no
    wrap-around): ``out[t] = x[t - s]`` where ``0 <= t - s < T``, else 0. It is applied after scaling, so the
    fill is the scaled signal's centre. Du-IN's classifier (``train/duin/run_cls.py``) shifts by up to 10% of
    its 3-s epochs (+-300 samples) this way; its pre-training stages do not. Each draw is seeded by
    ``(seed, epoch, window)``: the same item of the same epoch is shifted the same way, in any worker and after
    a resume. 0 (the default) is off.
    """

    shift: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift < 1.0:
            raise ValueError(f"dset.augment.shift is a fraction of the window in [0, 1), got {self.shift}")

    @property
    def active(self) -> bool:
        return self.shift > 0


def max_shift(n_samples: int, fraction: float) -> int:
    """The largest shift in samples for a window of ``n_samples``: ``floor(fraction * n_samples)``."""
    return int(np.floor(fraction * n_samples + 1e-9))


def shift_window(x: np.ndarray, shift: int) -> np.ndarray:
    """Shift ``x [..., T]`` in place by ``shift`` samples along time (positive: later), filling with zeros."""
    if shift > 0:
        x[..., shift:] = x[..., :-shift].copy()
        x[..., :shift] = 0.0
    elif shift < 0:
        x[..., :shift] = x[..., -shift:].copy()
        x[..., shift:] = 0.0
    return x


class LazyArray:
    """A ``.npy`` file opened as a read-only memory map on first use (cheap to pickle to workers)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped array, as a plain read-only ndarray (slicing ``np.memmap`` costs ~15 us of Python per
        slice, about the time of copying a whole window; the mapping stays open through the view's base)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r").view(np.ndarray)
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
    audio: tp.Any = None  # the recording's AudioTrack (bm2.studies.base), if it has one: reference audio for STOI
    praat: LazyArray | None = None  # float32 [4, n_times] f0, F1-F3 in Hz (NaN: undefined) for the praat target


_WARNINGS_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _WindowPlan:
    """Per-recording constants of :meth:`SegmentDataset._brains_into`: sizes in samples, the memory maps as tensors
    (made once: ``torch.from_numpy`` of a read-only map warns at every call), and the scaler's centre, reciprocal
    scale (float32, ``(C, [F,] 1)``) and clamp."""

    rec: PreparedRecording
    scaler: RobustScaler | None
    array: np.ndarray
    tensor: torch.Tensor
    shape: tuple[int, ...]  # the leading axes of a window: (C,) or (C, F)
    first: int  # offset - lead (window.lead_ms: the brain starts earlier): the first sample returned
    n_out: int  # length - offset + lead: the samples returned
    n_pre: int
    centre: np.ndarray  # zeros + the scaler's centre (zeros without a scaler), float32 (C, [F])
    inv_scale: torch.Tensor | None
    max_scale: float | None
    n_pre_count: np.intp  # n_pre as numpy's mean divides by it (an intp: a float64 division, rounded to float32)
    features: torch.Tensor | None  # the speech features' memory map when it is float32

    @classmethod
    def of(cls, rec: PreparedRecording, window: WindowParams, norm: NormParams) -> _WindowPlan:
        array = rec.brain.array
        feats = None if rec.features is None else rec.features.array
        # read-only maps: the tensors are only ever read. catch_warnings swaps the process's filters, so loader
        # threads building plans at once take turns (else one could restore the other's "ignore")
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(array)
            features = torch.from_numpy(feats) if feats is not None and feats.dtype == np.float32 else None
        n_pre = int(round(-window.tmin * rec.sample_rate)) if norm.baseline else 0
        scaler = rec.scaler
        max_scale = scaler.max_scale if scaler is not None else (norm.max_scale if norm.instance else None)
        shape = tuple(array.shape[:-1])
        length, k = window.n_samples(rec.sample_rate), window.offset_samples(rec.sample_rate)
        lead = window.lead_samples(rec.sample_rate)
        centre = np.zeros(shape, dtype=np.float32)
        if scaler is not None:
            centre += scaler.center
        return cls(rec=rec, scaler=scaler, array=array, tensor=tensor, shape=shape,
                   first=k - lead, n_out=length - k + lead,
                   n_pre=max(n_pre, 0), centre=centre,
                   inv_scale=None if scaler is None else torch.from_numpy((1.0 / scaler.scale)[..., None]),
                   max_scale=max_scale, n_pre_count=np.intp(max(n_pre, 0)),
                   features=features)


def _recording_order(indices: tp.Sequence[int], recs: np.ndarray, starts: np.ndarray) -> list[int]:
    """Positions ``0 .. len(indices) - 1`` sorted by the items' recording, then window start."""
    items = np.asarray(indices, dtype=np.int64)
    return np.lexsort((starts[items], recs[items])).tolist()


@contextlib.contextmanager
def single_intra_op_thread() -> tp.Iterator[None]:
    """torch's ops in this block on one intra-op thread (the caller's setting is restored after it).

    Split across the intra-op threads, the small ops of a loader (a window's subtract, a group's mean) stall for
    milliseconds on a loaded machine while the threads wait for each other; the loader's own threads and
    ``DataLoader`` workers already run with one."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SegmentDataset(torch.utils.data.Dataset):
    """The windows of one split.

    Items are dictionaries (see :mod:`bm2.tasks.base` for the batch spec) with ``brain`` (C, T' + lead) or
    (C, F, T' + lead) (``lead`` = ``window.lead_ms`` in samples, 0 by default: the brain window starts that much
    before the targets'),
    ``subject_index``, ``positions`` (C, 2), ``mask`` (C,), ``index`` (row of :attr:`segments`) and the targets
    named in ``targets``: ``features`` (D, T'), ``label`` (class id, -1 = not in :attr:`vocabulary`),
    ``speech`` (T',) and ``praat`` (4, T': f0, F1, F2, F3 in Hz, NaN where undefined; :mod:`bm2.features.praat`).
    """

    def __init__(self, recordings: list[PreparedRecording], segments: pd.DataFrame, window: WindowParams,
                 norm: NormParams, feature_scaler: StandardScaler | None, targets: tp.Sequence[str] = ("features",),
                 vocabulary: list[str] | None = None, augment: AugmentParams | None = None, seed: int = 0) -> None:
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
        self.augment = augment or AugmentParams()
        self.seed = int(seed)
        self.epoch = 0
        self._rec = self.segments["recording"].to_numpy(dtype=np.int64)
        self._start = self.segments["start"].to_numpy(dtype=np.int64)
        self._label = (self.segments["label"].to_numpy(dtype=np.int64) if "label" in self.segments
                       else np.full(len(self.segments), UNKNOWN, dtype=np.int64))
        self._plans: dict[int, _WindowPlan] = {}

    def __getstate__(self) -> dict[str, tp.Any]:
        # the plans hold tensors over the memory maps: a worker process rebuilds them rather than receive copies
        return {**self.__dict__, "_plans": {}}

    def __len__(self) -> int:
        return len(self.segments)

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to run (the solver calls it on the training split): seeds the augmentation draws."""
        self.epoch = int(epoch)

    def shift_of(self, index: int, n_samples: int) -> int:
        """The augmentation shift (samples) of item ``index`` in the current epoch (0 when ``augment.shift`` is
        off), drawn from ``(seed, epoch, index)``."""
        if not self.augment.active:
            return 0
        bound = max_shift(n_samples, self.augment.shift)
        if bound == 0:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        return int(rng.integers(-bound, bound + 1))

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

    def reference_audio(self, index: int) -> tuple[np.ndarray, int] | None:
        """``(audio float32 [S], sample_rate)``: the recording's own audio (:meth:`~bm2.studies.base.Recording.
        audio_track`) over item ``index``'s target span (samples ``first / rate * sr`` to ``(first + length) /
        rate * sr``), or None when the recording has no audio track. The reconstruction task scores STOI against
        it."""
        r, first, length = self.target_span(index)
        rec = self.recordings[r]
        if rec.audio is None:
            return None
        sr = int(rec.audio.sample_rate)
        a = int(round(first / rec.sample_rate * sr))
        b = min(int(round((first + length) / rec.sample_rate * sr)), int(rec.audio.n_samples))
        return rec.audio.read(a, b), sr

    def speech_window(self, index: int) -> np.ndarray:
        """Speech (1) / silence (0) of item ``index`` on the samples of its target span, float32 (T',)."""
        r, first, length = self.target_span(index)
        speech = self.recordings[r].speech
        if speech is None:
            raise ValueError("this dataset has no speech target: build it with targets including 'speech'")
        return speech[first:first + length].astype(np.float32)

    def praat_window(self, index: int) -> np.ndarray:
        """Praat's f0, F1, F2, F3 (Hz, NaN where undefined) over item ``index``'s target span, float32 (4, T')."""
        r, first, length = self.target_span(index)
        praat = self.recordings[r].praat
        if praat is None:
            raise ValueError("this dataset has no praat target: build it with targets including 'praat'")
        return np.array(praat.array[:, first:first + length], dtype=np.float32)

    def _plan(self, rec_index: int) -> _WindowPlan:
        """What :meth:`_brain_into` needs of recording ``rec_index``, computed once per recording (and again if the
        recording or its scaler is replaced)."""
        rec = self.recordings[rec_index]
        plan = self._plans.get(rec_index)
        if plan is None or plan.rec is not rec or plan.scaler is not rec.scaler:
            plan = _WindowPlan.of(rec, self.window, self.norm)
            self._plans[rec_index] = plan  # a race between loader threads only computes the same plan twice
        return plan

    def _brain_into(self, index: int, out: np.ndarray | torch.Tensor) -> None:
        """Write the normalised brain window of item ``index`` into ``out`` (C, [F,] T' + lead), in place."""
        out_t = out if isinstance(out, torch.Tensor) else torch.from_numpy(out)
        self._brains_into([index], out_t[None])

    def _brains_into(self, indices: tp.Sequence[int], out: torch.Tensor) -> None:
        """Write the normalised brain windows of items ``indices`` into ``out`` (B, C, [F,] T' + lead), in place.

        Per window: one pass reads it and subtracts its baseline and the scaler's centre (torch: numpy's
        broadcasting subtract runs row by row at half the speed of a copy); scaling and clamping then run in place
        while the window is still in the CPU cache (the loader is memory-bound: whole-batch passes were measured
        slower). The float32 operations and their order are those of the per-item numpy code before, so the
        numbers are identical. The loop keeps Python work per window small: it runs once per window per epoch.
        Windows are visited in the order of the recording (each still written to its own row of ``out``): the
        overlapping parts and neighbouring rows of consecutive windows are then read from the CPU cache rather than
        from memory (12% less CPU time per batch of 256 random windows of the benchmark's recording; a one-off
        measurement).

        Where :mod:`bm2.data.window_kernel` is built (and without ``norm.instance``), its compiled kernel does the
        same float32 operations in one pass per window instead, bit for bit the same numbers.
        """
        plans, starts, recs = self._plans_of(indices), self._start, self._rec
        instance, augment = self.norm.instance, self.augment.active
        if not instance and self._kernel_into(indices, plans, out):
            if augment:
                for o, index in zip(out.unbind(0), indices):
                    shift_window(o.numpy(), self.shift_of(index, o.shape[-1]))
            return
        reduce, divide, sub = np.add.reduce, np.true_divide, torch.sub
        outs, order = out.unbind(0), _recording_order(indices, recs, starts)
        for o, index in zip([outs[k] for k in order], [indices[k] for k in order]):
            plan = plans[recs[index]]
            start = int(starts[index])
            if plan.n_pre > 0:
                # numpy's mean (float32 pairwise sums, then a division by the count as an intp), without its Python
                # wrapper; 3x faster on a contiguous copy than on rows strided by the recording's length
                shift = reduce(np.ascontiguousarray(plan.array[..., start:start + plan.n_pre]), axis=-1,
                               dtype=np.float32)
                divide(shift, plan.n_pre_count, out=shift, casting="unsafe")
                shift += plan.centre  # zeros + centre: the same sums as before, the sign of a zero included
            else:
                shift = plan.centre
            sub(plan.tensor.narrow(-1, start + plan.first, plan.n_out), torch.from_numpy(shift[..., None]), out=o)
            if plan.inv_scale is not None:
                o.mul_(plan.inv_scale)
            if instance:
                x = o.numpy()
                q25, median, q75 = np.quantile(x, [0.25, 0.5, 0.75], axis=-1, keepdims=True)
                x -= median
                x /= np.where(q75 - q25 > 0, q75 - q25, 1.0)
            if plan.max_scale is not None:
                o.clamp_(-plan.max_scale, plan.max_scale)
            if augment:
                shift_window(o.numpy(), self.shift_of(index, o.shape[-1]))

    def brain_window_path(self) -> str:
        """Which code normalises this dataset's brain windows, in words (logged by the solver)."""
        if self.norm.instance:
            return "torch path (norm.instance: per-window quantiles)"
        return window_kernel.status()

    def _kernel_into(self, indices: tp.Sequence[int], plans: dict[int, _WindowPlan], out: torch.Tensor) -> bool:
        """:meth:`_brains_into` by :func:`bm2.data.window_kernel.normalised_windows`, one call per recording;
        False (nothing written) where the kernel does not apply."""
        if not window_kernel.available():
            return False
        for plan, starts, rows in self._by_recording(indices, plans):
            inv = None if plan.inv_scale is None else plan.inv_scale.numpy()
            if not window_kernel.normalised_windows(plan.array, starts, rows, plan.first, plan.n_out, plan.n_pre,
                                                    plan.centre, out, multiply=inv, max_scale=plan.max_scale):
                return False  # the torch path then writes every window again
        return True

    def _by_recording(self, indices: tp.Sequence[int], plans: dict[int, _WindowPlan]
                      ) -> tp.Iterator[tuple[_WindowPlan, np.ndarray, np.ndarray]]:
        """Per recording of items ``indices``: its plan, its windows' starts and their positions in ``indices``,
        sorted by start (overlapping windows then come from the CPU cache)."""
        items = np.asarray(indices, dtype=np.int64)
        recs = self._rec[items]
        for r, plan in plans.items():
            rows = np.flatnonzero(recs == r)
            starts = self._start[items[rows]]
            order = np.argsort(starts, kind="stable")
            yield plan, starts[order], rows[order]

    def _plans_of(self, indices: tp.Sequence[int]) -> dict[int, _WindowPlan]:
        """:meth:`_plan` of every recording of items ``indices``, by recording index."""
        return {r: self._plan(r) for r in set(self._rec[np.asarray(indices, dtype=np.int64)].tolist())}

    def _brain_shape(self, rec: PreparedRecording) -> tuple[int, ...]:
        k = self.window.offset_samples(rec.sample_rate)
        lead = self.window.lead_samples(rec.sample_rate)
        return (*rec.brain.array.shape[:-1], self.window.n_samples(rec.sample_rate) - k + lead)

    def _targets_of(self, indices: tp.Sequence[int], alloc: Alloc | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "features" in self.targets:
            if alloc is None or self.feature_scaler is None:
                out["features"] = torch.from_numpy(np.stack([self.feature_window(int(i)) for i in indices]))
            else:
                out["features"] = self._features_into(indices, alloc)
        if "label" in self.targets:
            out["label"] = torch.from_numpy(self._label[np.asarray(indices, dtype=np.int64)])
        if "speech" in self.targets:
            out["speech"] = torch.from_numpy(np.stack([self.speech_window(int(i)) for i in indices]))
        if "praat" in self.targets:
            out["praat"] = torch.from_numpy(np.stack([self.praat_window(int(i)) for i in indices]))
        return out

    def _features_into(self, indices: tp.Sequence[int], alloc: Alloc) -> torch.Tensor:
        """:meth:`feature_window` of every item written into one buffer from ``alloc`` (no per-item arrays)."""
        assert self.feature_scaler is not None
        first = self.recordings[self._rec[indices[0]]]
        if first.features is None:
            raise ValueError("this dataset has no feature target: build it with targets including 'features'")
        mean, std = self.feature_scaler.mean[:, None], self.feature_scaler.std[:, None]
        mean_t, std_t = torch.from_numpy(mean), torch.from_numpy(std)
        length = self.window.n_samples(first.sample_rate) - self.window.offset_samples(first.sample_rate)
        features = alloc("features", (len(indices), first.features.array.shape[0], length))
        plans = self._plans_of(indices)
        # feature_window's float32 operations: minus the mean, divided by the std
        if window_kernel.available() and all(
                window_kernel.normalised_windows(tp.cast(LazyArray, plan.rec.features).array, starts, rows, 0, length,
                                                 0, mean, features, divide=std)
                for plan, starts, rows in self._by_recording(indices, plans)):
            return features
        outs, order = features.unbind(0), _recording_order(indices, self._rec, self._start)
        for o, i in zip([outs[k] for k in order], [indices[k] for k in order]):
            plan = plans[self._rec[i]]
            start = int(self._start[i])
            # float32 arithmetic as feature_window's (scaled, then the last k samples dropped: element-wise); torch
            # where the features are float32 (twice as fast as numpy's broadcasting row by row)
            if plan.features is not None:
                torch.sub(plan.features.narrow(-1, start, length), mean_t, out=o)
                o.div_(std_t)
            else:
                out = o.numpy()
                assert plan.rec.features is not None
                np.subtract(np.asarray(plan.rec.features.array[:, start:start + length], dtype=np.float32), mean,
                            out=out)
                np.divide(out, std, out=out)
        return features

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        rec = self.recordings[self._rec[index]]
        x = np.empty(self._brain_shape(rec), dtype=np.float32)
        with single_intra_op_thread():
            self._brain_into(index, x)
        item: dict[str, tp.Any] = {"brain": torch.from_numpy(x), "subject_index": rec.subject_index,
                                   "positions": torch.from_numpy(rec.positions), "index": index}
        item.update({k: v[0] for k, v in self._targets_of([index]).items()})
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch at once (torch's DataLoader uses this): inside a worker process the batch tensors are
        allocated in shared memory directly, so that handing them to the trainer copies nothing."""
        return self.batch(indices, _shared_alloc if torch.utils.data.get_worker_info() is not None else None)

    def batch(self, indices: tp.Sequence[int], alloc: Alloc | None = None) -> dict[str, torch.Tensor]:
        """The collated batch of items ``indices``, equal to ``collate([self[i] for i in indices])``.

        With one montage, the windows are written straight into float32 buffers from ``alloc(key, shape)``
        (``brain`` (B, C, [F,] T'), ``features`` (B, D, T')): :class:`bm2.data.loader.BatchLoader` passes buffers
        it recycles, which spares the page faults of fresh memory. Several montages: per-item windows padded by
        :func:`collate` (``alloc`` unused).
        """
        indices = [int(i) for i in indices]
        recs = [self.recordings[self._rec[i]] for i in indices]
        shapes = {(*p.shape, p.n_out) for p in self._plans_of(indices).values()}
        if len(shapes) != 1:  # several montages: per-item windows, padded by collate
            return collate([self[i] for i in indices])
        shape = (len(indices), *shapes.pop())
        brain = torch.empty(shape) if alloc is None else alloc("brain", shape)
        with single_intra_op_thread():
            self._brains_into(indices, brain)
            targets = self._targets_of(indices, alloc)
        return {"brain": brain, "positions": torch.from_numpy(np.stack([r.positions for r in recs])),
                # numpy's fill: torch's would split it across intra-op threads, which stall on a loaded machine
                "mask": torch.from_numpy(np.ones(brain.shape[:2], dtype=bool)),
                "subject_index": torch.tensor([r.subject_index for r in recs], dtype=torch.long),
                "index": torch.tensor(indices, dtype=torch.long), **targets}


Alloc = tp.Callable[[str, tuple[int, ...]], torch.Tensor]
"""``alloc(key, shape)``: an uninitialised float32 tensor of ``shape`` for the batch entry ``key``."""


def _shared_alloc(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor in shared memory (``share_memory_`` on an empty tensor would copy it there)."""
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage).view(shape)


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
    for key in ("features", "speech", "praat"):
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
        tables = [getattr(self[s], "base", self[s]).segments.assign(split=s) for s in SPLITS]  # windows, not groups
        table = pd.concat(tables, ignore_index=True)
        return table[[c for c in columns if c in table.columns]]
