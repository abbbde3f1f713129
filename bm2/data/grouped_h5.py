"""LibriBrain "grouped" h5 files: phoneme windows already averaged K at a time, read as the classification datasets.

Where they come from (ANCHORS_WAVE2 §1.3, "the grouped h5 format"): the Hugging Face dataset
``wordcab/libribrain-meg-preprocessed`` holds ``data/grouped_{K}/{train,validation,test}_grouped.h5`` for K = 5 ... 100
(the DeMEGa authors' preprocessing, written by ``GroupedDataset.preprocess_and_save`` of the September-Labs pnpl fork).
bm2 reads them under a root that mirrors that repository: ``{root}/data/grouped_{K}/{split}_grouped.h5`` (root:
``paths.libribrain_grouped``, default ``{libribrain2025 root}/grouped``). Each file holds

* dataset ``data``: float32 ``[n_groups, 306, 125]`` (chunks ``(min(32, n), 306, 125)``): each item the mean of K
  phoneme windows [0, 0.5) s at 250 Hz, each window z-scored with **training-partition** channel statistics and
  clipped at ±10 before averaging (so nothing is standardised again here);
* dataset ``labels``: int64 ``[n_groups]``, class ids 0-38 in pnpl's sorted phoneme order (``aa ae ah ... zh``, the
  same order as bm2's sorted ARPABET vocabulary :data:`PHONEMES`);
* dataset ``group_indices``: variable-length int32 ``[n_groups]``, the indices of the averaged windows in the base
  dataset's sample list;
* file attributes ``n_groups``, ``n_channels``, ``n_timepoints``, ``grouped_samples`` (K), ``average_grouped_samples``,
  ``drop_remaining``, ``shuffle``, ``shuffle_seed`` (-1 if none), ``created_time`` (read when present, never needed).

Training groups were drawn with seed 777, validation and test groups unshuffled; the partitions are the 2025 split
(validation Sherlock1 ses-11 run-2, test ses-12 run-2). The files carry no channel names: rows are taken in the
Neuromag acquisition order of the serialised release (:func:`bm2.studies.libribrain2025.neuromag_channels`).

:func:`grouped_datasets` turns the three files into the :class:`~bm2.data.dataset.Datasets` the classification task
consumes (selected by ``dset.grouped.k`` in the config; :func:`bm2.builders.build_all_datasets`). Reads are lazy
(one h5 slice per batch, files opened read-only, once per process); a truncated file, missing datasets, a shape
that is not ``[n, 306, T]``, or labels outside the 39 classes are :class:`GroupedH5Error` naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..events import ARPABET
from ..studies.base import StudyError
from ..utils.fingerprint import file_fingerprint
from ..utils.hashing import content_hash
from .dataset import Datasets, LazyArray, NormParams, PreparedRecording
from .segments import WindowParams

logger = logging.getLogger(__name__)

FORMAT = 1  # reader version: enters the uids of the grouped "recordings"
REPO = "wordcab/libribrain-meg-preprocessed"  # the hub dataset that publishes the grouped files
STUDY = "libribrain2025_grouped"
N_CHANNELS = 306
SAMPLE_RATE = 250.0  # Hz: the serialised release's rate, at which the groups were cut (125 samples = 0.5 s)
#: Class names of label ids 0-38: pnpl's ``PHONEME_LABELS_SORTED`` (lower case, sorted) upper-cased, which keeps the
#: order; bm2's own vocabularies are sorted too, so an XP trained on windows and one trained on groups agree.
PHONEMES: tuple[str, ...] = tuple(sorted(ARPABET))
FILE_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DATASETS = ("data", "labels", "group_indices")


class GroupedH5Error(StudyError):
    """A grouped h5 file is missing, truncated, or not in the published format; the message names the file."""


def grouped_path(root: str | Path, k: int, split: str) -> Path:
    """``{root}/data/grouped_{k}/{train|validation|test}_grouped.h5`` of bm2 split ``split`` (train / valid / test)."""
    if split not in FILE_SPLITS:
        raise ValueError(f"split must be one of {list(FILE_SPLITS)}, got {split!r}")
    return Path(root) / "data" / f"grouped_{int(k)}" / f"{FILE_SPLITS[split]}_grouped.h5"


def hub_files(k: int) -> list[str]:
    """The paths of the three grouped files of level ``k`` in the hub repository :data:`REPO`."""
    return [f"data/grouped_{int(k)}/{name}_grouped.h5" for name in FILE_SPLITS.values()]


@dataclasses.dataclass(frozen=True)
class GroupedHeader:
    """What a grouped file says about itself (read without touching ``data``'s values)."""

    path: Path
    n_groups: int
    n_channels: int
    n_times: int
    labels: np.ndarray  # int64 [n_groups]
    attrs: dict[str, tp.Any]


def _attr(value: tp.Any) -> tp.Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_grouped_header(path: str | Path, n_classes: int = len(PHONEMES)) -> GroupedHeader:
    """Check the layout of a grouped file and read its labels and attributes.

    Raises :class:`GroupedH5Error` naming ``path`` when it does not exist, cannot be opened (truncated or damaged),
    lacks ``data`` / ``labels`` / ``group_indices``, has ``data`` not float ``[n, 306, T]``, datasets of different
    lengths, or labels outside ``[0, n_classes)``."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise GroupedH5Error(f"{path}: no such grouped file; fetch it (`python -m scripts.download libribrain2025 "
                             f"'libribrain2025.grouped=[K]'`) or place the hub files {REPO}/data/grouped_K/"
                             "{train,validation,test}_grouped.h5 under paths.libribrain_grouped/data/grouped_K/")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in DATASETS if name not in f]
            if missing:
                raise GroupedH5Error(f"{path}: missing dataset(s) {missing} (found {sorted(f)}); a grouped LibriBrain "
                                     f"file holds {list(DATASETS)}")
            data, labels, members = f["data"], f["labels"], f["group_indices"]
            shape, dtype = tuple(data.shape), data.dtype
            if len(shape) != 3 or shape[1] != N_CHANNELS or shape[2] < 1:
                raise GroupedH5Error(f"{path}: dataset 'data' has shape {shape}, expected (n_groups, {N_CHANNELS}, "
                                     "n_times) (306 Neuromag channels)")
            if dtype.kind != "f":
                raise GroupedH5Error(f"{path}: dataset 'data' has dtype {dtype}, expected float32")
            if tuple(labels.shape) != (shape[0],) or tuple(members.shape) != (shape[0],):
                raise GroupedH5Error(f"{path}: 'labels' {tuple(labels.shape)} and 'group_indices' "
                                     f"{tuple(members.shape)} must both have shape ({shape[0]},), one per group")
            values = np.asarray(labels[()], dtype=np.int64)
            attrs = {key: _attr(value) for key, value in f.attrs.items()}
    except GroupedH5Error:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise GroupedH5Error(f"{path}: cannot read it ({type(exc).__name__}: {exc}); the file is truncated or "
                             "damaged: download it again") from None
    bad = np.flatnonzero((values < 0) | (values >= n_classes))
    if len(bad):
        shown = ", ".join(f"row {i}: {values[i]}" for i in bad[:5]) + (f" ... {len(bad)} in all" if len(bad) > 5
                                                                        else "")
        raise GroupedH5Error(f"{path}: labels outside the {n_classes} phoneme classes (ids 0-{n_classes - 1}): "
                             f"{shown}")
    n_channels_attr = attrs.get("n_channels")
    if n_channels_attr is not None and int(n_channels_attr) != shape[1]:
        logger.warning("%s: attribute n_channels=%s but 'data' has %d channels; using the data", path,
                       n_channels_attr, shape[1])
    return GroupedHeader(path, shape[0], shape[1], shape[2], values, attrs)


class _ShapeOnly(LazyArray):
    """Stands in for a recording's memory map where only its shape is read (``Datasets.n_freqs``, the dataset
    statistics): a read-only zero-stride view, no memory, no file access. The samples live in the h5 file."""

    def __init__(self, path: str, shape: tuple[int, ...]) -> None:
        super().__init__(path)
        self.shape = shape

    @property
    def array(self) -> np.ndarray:
        return np.broadcast_to(np.zeros((), dtype=np.float32), self.shape)

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class GroupedH5Dataset(torch.utils.data.Dataset):
    """The groups of one grouped file as classification items (the batch spec of :mod:`bm2.tasks.base`).

    Items: ``brain`` float32 ``(306, T)`` (the stored average, optionally instance-normalised), ``label`` (class id),
    ``subject_index`` 0, ``positions`` ``(306, 2)`` and ``index`` (row of the file, = row of :attr:`segments`);
    batches add ``mask``. Reads are lazy: one h5 read per batch (rows sorted, as h5py needs), the
    file opened read-only once per process and reopened after pickling (DataLoader workers).

    Parameters
    ----------
    header : the checked header of the file (:func:`read_grouped_header`).
    recording : index of this file in ``recordings``.
    recordings : the prepared "recordings" of the three files (uids, positions, rate).
    norm : ``instance`` (per window and channel median / IQR over time, then clamping at ``max_scale``) is applied;
        ``baseline`` / ``robust`` / ``pooled`` are not: the files are already standardised with training statistics.
    """

    targets = ("label",)
    vocabulary = list(PHONEMES)

    def __init__(self, header: GroupedHeader, recording: int, recordings: list[PreparedRecording],
                 norm: NormParams | None = None, split: str = "train") -> None:
        self.path = header.path
        self.split = split
        self.header = header
        self.recording = int(recording)
        self.recordings = recordings
        self.norm = norm or NormParams(baseline=False, robust=False, max_scale=None)
        self.window = WindowParams(tmin=0.0, tmax=header.n_times / SAMPLE_RATE, offset_ms=0.0, anchor="phoneme")
        self._label = header.labels
        self._file: tp.Any = None
        self._segments: pd.DataFrame | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not pickle; each worker opens its own
        return state

    def __len__(self) -> int:
        return int(self.header.n_groups)

    @property
    def n_unseen(self) -> int:
        return 0  # the 39 classes are fixed: no label can be unseen

    def _h5(self) -> tp.Any:
        import h5py

        if self._file is None:
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise GroupedH5Error(f"{self.path}: cannot open it ({exc}); the file is truncated or damaged: "
                                     "download it again") from None
        return self._file

    def close(self) -> None:
        """Close the file handle of this process (reopened on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def segments(self) -> pd.DataFrame:
        """One row per group: ``recording``, ``study``, ``subject``, ``session``, ``recording_uid``, ``split``,
        ``block_uid`` (the file), ``kind`` (phoneme), ``word`` (empty), ``start`` (row of the file), ``label``,
        ``label_name``, ``group_size`` and ``members`` (the base-dataset indices averaged, space-separated).
        ``group_indices`` is read on first use."""
        if self._segments is None:
            try:
                members = self._h5()["group_indices"][()]
            except (OSError, KeyError, ValueError) as exc:
                raise GroupedH5Error(f"{self.path}: cannot read 'group_indices' ({type(exc).__name__}: {exc}); the "
                                     "file is truncated or damaged: download it again") from None
            rec = self.recordings[self.recording]
            n = len(self)
            self._segments = pd.DataFrame({
                "recording": np.full(n, self.recording, dtype=np.int64), "study": rec.study, "subject": rec.subject,
                "session": rec.session, "recording_uid": rec.uid, "split": self.split, "block_uid": rec.uid,
                "kind": "phoneme", "word": "",
                "start": np.arange(n, dtype=np.int64), "label": self._label,
                "label_name": [PHONEMES[i] for i in self._label],
                "group_size": [len(m) for m in members],
                "members": [" ".join(str(int(i)) for i in m) for m in members]})
        return self._segments

    def read(self, indices: tp.Sequence[int]) -> np.ndarray:
        """float32 ``[len(indices), 306, T]``: the groups of rows ``indices`` (any order, repeats allowed), in one h5
        read, normalised as :attr:`norm` says."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"{self.path}: rows {rows.min()}..{rows.max()} out of range (n_groups {len(self)})")
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py reads increasing, distinct rows only
        try:
            block = self._h5()["data"][unique] if len(unique) else np.zeros((0, N_CHANNELS, self.header.n_times))
        except (OSError, KeyError, ValueError) as exc:
            raise GroupedH5Error(f"{self.path}: cannot read groups {unique[:5].tolist()}... ({type(exc).__name__}: "
                                 f"{exc}); the file is truncated or damaged: download it again") from None
        out = np.asarray(block, dtype=np.float32)[inverse.reshape(-1)]
        if self.norm.instance:
            q25, median, q75 = np.quantile(out, [0.25, 0.5, 0.75], axis=-1, keepdims=True)
            out -= median
            out /= np.where(q75 - q25 > 0, q75 - q25, 1.0)
            if self.norm.max_scale is not None:
                np.clip(out, -self.norm.max_scale, self.norm.max_scale, out=out)
        return out

    def __getitem__(self, index: int) -> dict[str, tp.Any]:
        rec = self.recordings[self.recording]
        return {"brain": torch.from_numpy(self.read([int(index)])[0]), "subject_index": rec.subject_index,
                "positions": torch.from_numpy(rec.positions), "index": int(index),
                "label": int(self._label[int(index)])}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch in one h5 read (the DataLoader uses this)."""
        rec = self.recordings[self.recording]
        brain = torch.from_numpy(self.read(indices))
        index = torch.tensor([int(i) for i in indices], dtype=torch.long)
        return {"brain": brain, "positions": torch.from_numpy(np.stack([rec.positions] * len(indices))),
                "mask": torch.ones(brain.shape[:2], dtype=torch.bool),
                "subject_index": torch.full((len(indices),), rec.subject_index, dtype=torch.long),
                "index": index, "label": torch.from_numpy(self._label[index.numpy()])}


@dataclasses.dataclass(frozen=True)
class GroupedParams:
    """``dset.grouped``: read the grouped files of level ``k`` (null: off, the windows of the selected studies are
    used) instead of cutting windows from recordings; ``valid_k`` / ``test_k`` (null: as ``k``) take the validation /
    test files of another level (e.g. test on ``grouped_100``, as the 2025 competition graded)."""

    k: int | None = None
    valid_k: int | None = None
    test_k: int | None = None

    def __post_init__(self) -> None:
        for name in ("k", "valid_k", "test_k"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"dset.grouped.{name} must be >= 1 (or null), got {value}")

    @property
    def active(self) -> bool:
        return self.k is not None

    def k_of(self, split: str) -> int:
        """The grouping level of the file read for ``split``."""
        if self.k is None:
            raise ValueError("dset.grouped.k is null: no grouped file is read")
        value = {"valid": self.valid_k, "test": self.test_k}.get(split)
        return int(self.k if value is None else value)


def neuromag_positions() -> tuple[list[str], np.ndarray]:
    """The 306 Neuromag channel names in the release's row order and their 2-D positions in [0, 1] (``(306, 2)``),
    as the serialised recordings get them."""
    from ..studies.base import layout_positions
    from ..studies.libribrain2025 import neuromag_channels, neuromag_info

    names, _ = neuromag_channels()
    return names, layout_positions(neuromag_info(SAMPLE_RATE, names), names)


def grouped_datasets(root: str | Path, params: GroupedParams, norm: NormParams | None = None) -> Datasets:
    """The train / valid / test :class:`~bm2.data.dataset.Datasets` of the grouped files under ``root``
    (:func:`grouped_path`), with the 39-phoneme vocabulary and the targets of the classification task.

    Raises :class:`GroupedH5Error` naming the file for a missing, truncated or malformed file, or when the three
    files disagree on the window length."""
    if not params.active:
        raise ValueError("dset.grouped.k is null: set it to a grouping level (e.g. 100) to read grouped files")
    headers = {split: read_grouped_header(grouped_path(root, params.k_of(split), split)) for split in FILE_SPLITS}
    lengths = {split: h.n_times for split, h in headers.items()}
    if len(set(lengths.values())) != 1:
        raise GroupedH5Error(f"the grouped files under {root} have windows of different lengths {lengths} (samples); "
                             "train, validation and test must share one window")
    names, positions = neuromag_positions()
    recordings = []
    for split, header in headers.items():
        k = params.k_of(split)
        identity = {"format": FORMAT, "file": f"data/grouped_{k}/{header.path.name}",
                    "fingerprint": file_fingerprint(header.path), "n_groups": header.n_groups}
        recordings.append(PreparedRecording(
            study=STUDY, subject="0", session=FILE_SPLITS[split], task=f"grouped_{k}", uid=content_hash(identity),
            subject_index=0, brain=_ShapeOnly(str(header.path), (N_CHANNELS, header.n_groups * header.n_times)),
            features=None, positions=positions, ch_names=list(names), sample_rate=SAMPLE_RATE,
            n_times=header.n_groups * header.n_times))
        logger.info("dset.grouped: %s split reads %s (%d groups of K=%s, %d x %d)", split, header.path,
                    header.n_groups, header.attrs.get("grouped_samples", k), N_CHANNELS, header.n_times)
    norm = norm or NormParams(baseline=False, robust=False, max_scale=None)
    if norm.pooled or norm.robust or norm.baseline:
        logger.info("dset.grouped: the files are already standardised with training statistics and clipped at ±10; "
                    "norm.baseline / robust / pooled are not applied (norm.instance is, when set)")
    splits = {split: GroupedH5Dataset(headers[split], i, recordings, norm, split)
              for i, split in enumerate(FILE_SPLITS)}
    return Datasets(n_subjects=1, feature_dim=0, recordings=recordings, vocabulary=list(PHONEMES),
                    targets=("label",), **splits)  # type: ignore[arg-type]
