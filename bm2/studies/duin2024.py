"""Du-IN (Zheng et al., NeurIPS 2024): 61-word Chinese word reading, bipolar sEEG at 1 kHz, 12 subjects.

On disk (the released layout)::

    data/seeg.he2023xuanwu/{001..012}/word-recitation/{run}/dataset.bipolar.default.{aligned,unaligned}/{data,info}

``data`` is a pickle of a list of attribute-dict items, each with ``.name`` (the word), ``.data_s``
(channels x time, 3000 samples at 1 kHz: a 3-s epoch from -0.5 s around word onset) and ``.data_n``
(not used); ``info`` is a pickle of an attribute dict with ``.ch_names``. The original classifier reads the
``unaligned`` folders (the default here, ``aligned=false`` reads the other).

Safety: the pickles are read with :func:`bm2.utils.safe_pickle.load_restricted`, which only constructs the
release's attribute-dict class (``utils.DotDict.DotDict``, read as bm2's own :class:`AttrDict`) and numpy arrays,
and refuses any other global naming the file. Never open them with a plain :func:`pickle.load`.

Mapping onto bm2: one :class:`~bm2.studies._trials.TrialsRecording` per subject, the trials of every run
laid end to end in run order (runs sorted naturally, items in file order; the original shuffles them with
the global numpy RNG, bm2's split is seeded instead), one ``word`` event at each epoch's time zero (0.5 s into
it) whose ``text`` is the item's ``name``. Channels: those shared by **all** runs of the subject, in the first
run's order; when runs disagree the others are dropped with a warning naming them (the original asserts that
its hard-coded channels are in every run). ``channels`` selects channels per subject (Du-IN's 10 per subject).

Continuous data for pre-training (:meth:`Duin2024.iter_continuous`, used by ``dset.crops``): the original
pre-trains on 4-s crops of ``data/seeg.he2023xuanwu/{subject}/pretrain/dataset.default.1000hz/``, an ``info``
pickle (``.ch_names``) and ``.npy`` files each holding an array ``(2, channels, time)`` at 1 kHz (``X_s``, ``X_n``;
only ``X_s`` is used, as for the epochs). It is not certain that the public release includes these folders; when
a subject has one, bm2 reads it as one :class:`~bm2.studies._continuous.ContinuousRecording` (the files in
natural order, each cut into 10-s blocks) with the subject's epoch channels in the same order (a subject whose
folder lacks one of them is skipped with a warning naming the file). ``.npy`` files are read with
``allow_pickle=False``.

Positions: the release has no electrode coordinates, so each channel gets a deterministic 2-D layout from its
name: the shaft (the name without its trailing contact number, e.g. ``SM`` of ``SM8``, ``TI'`` of ``TI'3``; for
a bipolar pair ``A1-A2`` the first contact) gives the column (shafts sorted by name), the contact number the
row. It only keeps channels apart for models with a spatial attention; it says nothing about the anatomy.
"""

from __future__ import annotations

import logging
import re
import typing as tp
from pathlib import Path

import numpy as np

from ..utils.safe_pickle import PickleReadError, load_restricted
from ._continuous import ContinuousRecording
from ._seeg import parse_contact
from ._trials import TrialsRecording
from .base import Study, StudyError

logger = logging.getLogger(__name__)

#: the attribute-dict class(es) the release's pickles name, read as bm2's AttrDict
RELEASE_CLASSES = ("utils.DotDict.DotDict",)
DATASET = "seeg.he2023xuanwu"
TASK = "word-recitation"
PRETRAIN = ("pretrain", "dataset.default.1000hz")  # the continuous data of a subject (see the module docstring)
SFREQ = 1000.0
TMIN = -0.5
#: loader version: enters the recording uid with the content of the pickles and the options
FORMAT = 1


def natural_key(text: str) -> tuple:
    """Sort key with digit runs compared as numbers (``run2`` < ``run10``)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def channel_layout(ch_names: tp.Sequence[str]) -> np.ndarray:
    """Deterministic 2-D positions in [0, 1] from sEEG contact names: a column per shaft, a row per contact
    number (see the module docstring); distinct names get distinct positions."""
    shafts, numbers = [], []
    for name in ch_names:
        first = str(name).split("-")[0].strip()  # a bipolar pair "A1-A2" sits at its anode
        shaft, number = parse_contact(first) or (first, 0)  # the same parsing as the BIDS re-referencing
        shafts.append(shaft)
        numbers.append(number)
    column = {s: i for i, s in enumerate(sorted(set(shafts)))}
    pos = np.array([[column[s], n] for s, n in zip(shafts, numbers)], dtype=float)
    seen: dict[tuple[float, float], int] = {}
    for i, key in enumerate(map(tuple, pos.tolist())):  # equal (shaft, number) of different names ("A1", "A01")
        pos[i, 0] += 0.25 * seen.get(key, 0)
        seen[key] = seen.get(key, 0) + 1
    pos -= pos.min(axis=0)
    return (pos / np.maximum(pos.max(axis=0), 1e-12)).astype(np.float32)


def read_run(folder: Path) -> tuple[list[str], list[str], list[np.ndarray]]:
    """``(ch_names, labels, epochs)`` of one ``dataset.bipolar.default.*`` folder, read with the restricted
    unpickler; :class:`StudyError` naming the file when anything is missing or malformed."""
    files = {name: folder / name for name in ("data", "info")}
    for path in files.values():
        if not path.is_file():
            raise StudyError(f"study 'duin2024': {path} is missing (each run folder holds `data` and `info`)")
    ch_names = read_info(files["info"])
    try:
        items = load_restricted(files["data"], classes=RELEASE_CLASSES)
    except PickleReadError as exc:
        raise StudyError(str(exc)) from exc
    if not isinstance(items, (list, tuple)):
        raise StudyError(f"{files['data']}: expected a list of items, got {type(items).__name__}")
    labels, epochs = [], []
    for i, item in enumerate(items):
        name, data = _get(item, "name", files["data"], i), _get(item, "data_s", files["data"], i)
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != len(ch_names) or not np.issubdtype(data.dtype, np.number):
            raise StudyError(f"{files['data']} item {i}: data_s must be numbers (channels x time) with "
                             f"{len(ch_names)} channels (info's ch_names), got {data.dtype} {data.shape}")
        labels.append(str(name))
        epochs.append(data)
    if not epochs:
        raise StudyError(f"{files['data']}: no items")
    lengths = sorted({e.shape[1] for e in epochs})
    if len(lengths) > 1:
        raise StudyError(f"{files['data']}: epochs of different lengths {lengths}")
    return list(ch_names), labels, epochs


def read_info(path: Path) -> list[str]:
    """``ch_names`` of an ``info`` pickle (restricted unpickler); :class:`StudyError` naming the file."""
    if not path.is_file():
        raise StudyError(f"study 'duin2024': {path} is missing (each data folder holds an `info` pickle)")
    try:
        info = load_restricted(path, classes=RELEASE_CLASSES)
    except PickleReadError as exc:
        raise StudyError(str(exc)) from exc
    ch_names = _get(info, "ch_names", path)
    if isinstance(ch_names, np.ndarray):
        ch_names = ch_names.tolist()
    if not isinstance(ch_names, (list, tuple)) or not all(isinstance(c, str) for c in ch_names):
        raise StudyError(f"{path}: ch_names must be a list of strings, got {type(ch_names).__name__}")
    return list(ch_names)


def pretrain_shapes(folder: Path) -> list[tuple[Path, tuple[int, ...]]]:
    """The ``.npy`` files of a ``pretrain/dataset.default.1000hz`` folder (natural order) with their shapes, read
    from the headers (``allow_pickle=False``); :class:`StudyError` naming a file that is not ``(2, C, T)`` numbers."""
    out = []
    for path in sorted(folder.glob("*.npy"), key=lambda p: natural_key(p.name)):
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise StudyError(f"{path}: not a readable .npy array ({exc}); expected (2, channels, time) numbers "
                             "(X_s, X_n)") from exc
        if array.ndim != 3 or array.shape[0] != 2 or not np.issubdtype(array.dtype, np.number):
            raise StudyError(f"{path}: expected an array (2, channels, time) of numbers (X_s, X_n), got "
                             f"{array.dtype} {array.shape}")
        out.append((path, tuple(array.shape)))
    return out


def _get(obj: tp.Any, key: str, path: Path, index: int | None = None) -> tp.Any:
    where = f"{path}" + (f" item {index}" if index is not None else "")
    if not isinstance(obj, dict) or key not in obj:
        raise StudyError(f"{where}: no attribute {key!r} (found {type(obj).__name__}"
                         f"{' with ' + str(sorted(obj)) if isinstance(obj, dict) else ''})")
    return obj[key]


class Duin2024Recording(TrialsRecording):
    """Every run of one subject as one recording of 3-s trials (see the module docstring)."""

    events_in_uid = True

    def __init__(self, study: Duin2024, subject: str, runs: list[Path]) -> None:
        self.runs, self.root = runs, study.data_root
        ch_names, labels, trial_ids, data = study.read_subject(subject, runs)
        super().__init__(study.name, subject, data, labels, SFREQ, ch_names, "seeg",
                         positions=channel_layout(ch_names), tmin=TMIN, kind="word", task=TASK,
                         trial_ids=trial_ids,
                         identity={"format": FORMAT, "variant": study.variant,
                                   "runs": [r.relative_to(study.data_root).as_posix() for r in runs],
                                   "options": {"channels": study.channels_of(subject),
                                               "unit_scale": study.unit_scale}})

    def input_files(self) -> dict[str, Path]:
        """The ``data`` and ``info`` pickles of every run."""
        return {(run / name).relative_to(self.root).as_posix(): run / name
                for run in self.runs for name in ("data", "info")}


class Duin2024Continuous(ContinuousRecording):
    """A subject's ``pretrain`` folder as one continuous recording (see the module docstring)."""

    def __init__(self, study: Duin2024, subject: str, folder: Path, ch_names: list[str], index: list[int],
                 files: list[tuple[Path, tuple[int, ...]]]) -> None:
        self.files, self.root = [f for f, _ in files], study.data_root
        scale = np.float32(study.unit_scale)

        def load(i: int) -> np.ndarray:
            return np.asarray(np.load(self.files[i], mmap_mode="r", allow_pickle=False)[0][index]) * scale

        super().__init__(study.name, subject, [f.name for f in self.files], [shape[2] for _, shape in files], load,
                         SFREQ, ch_names, "seeg", positions=channel_layout(ch_names),
                         identity={"format": FORMAT, "folder": folder.relative_to(study.data_root).as_posix(),
                                   "channels": ch_names, "unit_scale": study.unit_scale})
        self.folder = folder

    def input_files(self) -> dict[str, Path]:
        """The ``info`` pickle and the ``.npy`` files."""
        return {p.relative_to(self.root).as_posix(): p for p in [self.folder / "info", *self.files]}


class Duin2024(Study):
    """The Du-IN word-reading sEEG release (see the module docstring).

    Parameters
    ----------
    root : the folder holding ``data/seeg.he2023xuanwu`` (or ``seeg.he2023xuanwu``, or the subject folders).
    subjects : subject ids to keep (``"001"`` ...; ints are zero-padded); null = every subject found.
    aligned : read ``dataset.bipolar.default.aligned`` (true) or ``...unaligned`` (false, the original classifier's).
    channels : channels to keep, a list for every subject or ``{subject: [names]}`` (Du-IN's 10 per subject);
        null = every channel shared by all runs of the subject. A named channel missing from a run is an error.
    unit_scale : multiplier bringing ``data_s`` to volts (the release does not state its unit; bm2's per-channel
        scaler makes training independent of it).
    """

    name = "duin2024"
    modality = "seeg"
    device = "bipolar sEEG (stereo-EEG depth electrodes), 1 kHz"
    language = "zh"
    paradigm = "reading aloud 61 Chinese words, one 3-s epoch per word"
    licence = "code MIT (liulab-repository/Du-IN); data: the terms of the Hugging Face dataset"
    url = "https://huggingface.co/datasets/liulab-repository/Du-IN"
    doi = "arXiv:2405.11459"
    description = ("Du-IN's released sEEG word-reading data (he2023xuanwu): 12 subjects, bipolar channels, "
                   "3-s epochs from -0.5 s around each of 61 words, as pickles read with a restricted unpickler.")
    downloadable = False

    def __init__(self, root: str | Path, subjects: tp.Sequence[str | int] | None = None, aligned: bool = False,
                 channels: tp.Sequence[str] | tp.Mapping[str, tp.Sequence[str]] | None = None,
                 unit_scale: float = 1e-6) -> None:
        super().__init__(root)
        self.subjects = None if subjects is None else [_subject_id(s) for s in subjects]
        self.variant = "aligned" if aligned else "unaligned"
        if isinstance(channels, tp.Mapping):
            self.channels: tp.Any = {_subject_id(k): [str(c) for c in v] for k, v in channels.items()}
        else:
            self.channels = None if channels is None else [str(c) for c in channels]
        self.unit_scale = float(unit_scale)

    def prepare(self) -> None:
        super().prepare()
        self.data_root  # noqa: B018 (raises when the layout is not found)

    @property
    def data_root(self) -> Path:
        """The ``seeg.he2023xuanwu`` folder (subject folders inside)."""
        for candidate in (self.root / "data" / DATASET, self.root / DATASET, self.root):
            if candidate.is_dir() and any(p.is_dir() and p.name.isdigit() for p in candidate.iterdir()):
                return candidate
        raise StudyError(f"study 'duin2024': no subject folders under {self.root} (expected "
                         f"{self.root}/data/{DATASET}/001/{TASK}/<run>/dataset.bipolar.default.unaligned/data)")

    def channels_of(self, subject: str) -> list[str] | None:
        """The channels asked for ``subject`` (None: all shared)."""
        if isinstance(self.channels, dict):
            return self.channels.get(subject)
        return self.channels

    def runs_of(self, subject: str) -> list[Path]:
        """The run folders of ``subject`` holding the chosen variant, in natural order."""
        task = self.data_root / subject / TASK
        if not task.is_dir():
            return []
        folder = f"dataset.bipolar.default.{self.variant}"
        return [run / folder for run in sorted(task.iterdir(), key=lambda p: natural_key(p.name))
                if (run / folder).is_dir()]

    def subject_channels(self, subject: str, runs: list[Path]) -> list[str]:
        """The channels of ``subject``'s epochs (the ``channels`` option, else those shared by every run), from
        the runs' ``info`` pickles alone."""
        wanted = self.channels_of(subject)
        if wanted is not None:
            return list(wanted)
        names = [read_info(run / "info") for run in runs]
        return [c for c in names[0] if all(c in other for other in names[1:])]

    def iter_continuous(self) -> tp.Iterator[Duin2024Continuous]:
        """Each selected subject's ``pretrain/dataset.default.1000hz`` folder (when present) as one continuous
        recording with the channels of its epochs, in the same order."""
        root = self.data_root
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        for subject in found:
            if self.subjects is not None and subject not in self.subjects:
                continue
            folder = root / subject / PRETRAIN[0] / PRETRAIN[1]
            runs = self.runs_of(subject)
            if not folder.is_dir() or not runs:
                continue
            files = pretrain_shapes(folder)
            if not files:
                logger.warning("duin2024: %s holds no .npy file; subject %s has no continuous data", folder, subject)
                continue
            names = read_info(folder / "info")
            ch_names = self.subject_channels(subject, runs)
            missing = [c for c in ch_names if c not in names]
            if missing:
                logger.warning("duin2024: subject %s: channels %s of its epochs are not in %s; its continuous data "
                               "are not used", subject, missing, folder / "info")
                continue
            bad = [f for f, shape in files if shape[1] != len(names)]
            if bad:
                raise StudyError(f"{bad[0]}: {np.load(bad[0], mmap_mode='r').shape[1]} channels, but "
                                 f"{folder / 'info'} names {len(names)}")
            yield Duin2024Continuous(self, subject, folder, ch_names, [names.index(c) for c in ch_names], files)

    def read_subject(self, subject: str, runs: list[Path]) -> tuple[list[str], list[str], list[str], np.ndarray]:
        """``(ch_names, labels, trial_ids, data[trials, channels, time])`` of every run of ``subject``."""
        read = [(run, *read_run(run)) for run in runs]
        wanted = self.channels_of(subject)
        if wanted is not None:
            for run, names, _, _ in read:
                missing = [c for c in wanted if c not in names]
                if missing:
                    raise StudyError(f"study 'duin2024': subject {subject}: channels {missing} (asked in "
                                     f"`studies.duin2024.channels`) are not in {run / 'info'}")
            ch_names = list(wanted)
        else:
            ch_names = [c for c in read[0][1] if all(c in names for _, names, _, _ in read[1:])]
            dropped = sorted({c for _, names, _, _ in read for c in names} - set(ch_names))
            if dropped:
                logger.warning("duin2024: subject %s: the runs disagree on channels; keeping the %d shared by "
                               "every run, dropping %s", subject, len(ch_names), dropped)
            if not ch_names:
                raise StudyError(f"study 'duin2024': subject {subject}: no channel is shared by all runs {runs}")
        lengths = {epochs[0].shape[1] for *_, epochs in read}
        if len(lengths) > 1:
            raise StudyError(f"study 'duin2024': subject {subject}: runs have epochs of different lengths {lengths}")
        labels, ids, blocks = [], [], []
        for run, names, run_labels, epochs in read:
            index = [names.index(c) for c in ch_names]
            blocks.append(np.stack(epochs)[:, index, :].astype(np.float32))
            labels += run_labels
            ids += [f"{run.parent.name}/{i}" for i in range(len(run_labels))]
        data = np.concatenate(blocks) * np.float32(self.unit_scale)
        return ch_names, labels, ids, data

    def iter_recordings(self) -> tp.Iterator[Duin2024Recording]:
        """One recording per subject (sorted), all its runs of the chosen variant."""
        root = self.data_root
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        if self.subjects is not None:
            unknown = [s for s in self.subjects if s not in found]
            if unknown:
                raise StudyError(f"study 'duin2024': subjects {unknown} are not in {root} (found {found})")
            found = [s for s in found if s in self.subjects]
        for subject in found:
            runs = self.runs_of(subject)
            if not runs:
                if self.subjects is not None:
                    raise StudyError(f"study 'duin2024': subject {subject} has no {TASK}/<run>/"
                                     f"dataset.bipolar.default.{self.variant} folder in {root / subject}")
                logger.warning("duin2024: subject %s has no %s runs; skipped", subject, self.variant)
                continue
            yield Duin2024Recording(self, subject, runs)


def _subject_id(value: str | int) -> str:
    text = str(value)
    return f"{int(text):03d}" if text.isdigit() else text


__all__ = ["Duin2024", "Duin2024Continuous", "Duin2024Recording", "PRETRAIN", "RELEASE_CLASSES", "channel_layout",
           "pretrain_shapes", "read_info", "read_run"]
