"""Lee et al. (2024): imagined speech of 88 words and phrase words, 127-channel EEG, as released (HDF5).

On disk (the release's layout, ``Speech-BCI/Interpretable-Neural-Representation``, ``data/README.md``)::

    <root>/<name>.h5            x_data: (trials, 127 channels, 64 frequencies, 512 times) superlet power at 256 Hz
                                y_data: (trials,) integer class ids, 0-based (the README draws them with
                                        np.random.randint(0, 88)); (trials, 1), (1, trials) and one-hot
                                        (trials, 88) are read too
    <root>/ch_information.mat   MATLAB v7.3 (HDF5): ch_names, srate, ch_locs (EEGLAB: labels, X, Y, Z)

A file whose ``x_data`` is 3-D ``(trials, channels, times)`` is raw EEG: it goes through the usual path
(``preprocess.tf=superlet`` computes the spectra, cached) **trial by trial** (:attr:`Lee2024Recording.trial_samples`:
filters, resampling and superlets never run across a trial border). The release does not give the 64 centre
frequencies: ``foi`` (Hz) can be set, else the cached meta says ``foi: null``.

Units: raw ``x_data`` is taken to be in uV and brought to V by ``unit_scale`` (1e-6), as every bm2 EEG signal; the
released spectra are taken to be the superlet power of those uV signals (uV^2; the release does not state it) and
are stored multiplied by ``unit_scale ** 2``. Both paths therefore give spectra in **V^2**, the unit of bm2's
superlet step, and the same values for the same superlet settings (tested on ``lee2024_synthetic``).

Class names (``CLASSES``, index = label): the order of the release's ``labels_word_classes`` list
(``modules/all_word_classes.py``), which the authors' plots use to name label indices. It holds 36 words in 12
triplets (word, synonym, phonological neighbour: barrier / wall / war ...; :data:`TRIPLETS`) and 52 words of
phrases ("hey google how is the weather today" ...). That this list is the order of ``y_data`` is an assumption
(the release states no mapping); the triplets are from the same file.

Mapping onto bm2: one recording per HDF5 file (subject from ``sub_<n>_`` in its name, else the file stem), its
trials end to end, each a block, one ``word`` event at each trial's start whose ``text`` is the class name
(:mod:`bm2.studies._trials`). Spectra are never loaded whole: :class:`Lee2024Spectra` reads slices of
``x_data`` when the preprocessing step stores them (read-only). Sensor positions: ``ch_locs`` X, Y, Z (EEGLAB's
frame: X to the nose, Y to the left ear) turned into MNE's head frame and laid out by mne (as the original's
``mne.find_layout``), normalised to [0, 1].

Errors name the file: labels out of range, a channel file whose names disagree with the data's channel count
(or with each other), truncated or unreadable HDF5 files.
"""

from __future__ import annotations

import logging
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._trials import trials_events
from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import h5py
    import mne

logger = logging.getLogger(__name__)

SFREQ = 256.0
N_CHANNELS = 127
#: loader version: enters the recording uid with the file fingerprints and the options
FORMAT = 2  # 2: raw trials processed one by one, released spectra in V^2

#: 12 triplets of (word, synonym, phonological neighbour), from the release's ``aligned_word_classes``
TRIPLETS: tuple[tuple[str, str, str], ...] = (
    ("barrier", "wall", "war"), ("shop", "store", "score"), ("ship", "boat", "coat"), ("father", "dad", "dead"),
    ("sheep", "lamb", "lab"), ("ocean", "sea", "key"), ("pants", "trousers", "browsers"),
    ("gift", "present", "presence"), ("money", "cash", "cat"), ("road", "street", "stream"),
    ("automobile", "car", "card"), ("exam", "test", "taste"))

#: the 88 class names; index = label (order of the release's ``labels_word_classes``)
CLASSES: tuple[str, ...] = (
    "wall", "barrier", "shop", "store", "boat", "ship", "father", "dad", "sheep", "lamb",
    "ocean", "sea", "pants", "trousers", "gift", "present", "cash", "money", "road", "street",
    "car", "automobile", "test", "exam", "war", "score", "coat", "dead", "lab", "key",
    "browsers", "presence", "cat", "stream", "card", "taste", "hey", "google", "how", "is", "the", "weather",
    "today", "what", "time", "it", "take", "a", "picture", "turn", "flashlight", "on", "I", "need", "new", "and",
    "water", "resistant", "my", "Christmas", "so", "pretty", "at", "from", "lay", "beneath", "turned", "left",
    "right", "with", "inside", "of", "behind", "was", "clear", "can", "help", "you", "get", "your", "tasted", "to",
    "good", "taking", "find", "ingredients", "takes", "in")
N_CLASSES = len(CLASSES)


def class_groups(classes: tp.Sequence[str]) -> list[int]:
    """A group id per class: the index of its triplet in :data:`TRIPLETS`, or a group of its own (ids after the
    triplets) for phrase words and names outside them. Used to keep a class's triplet out of its negatives."""
    triplet = {word: i for i, words in enumerate(TRIPLETS) for word in words}
    out, extra = [], len(TRIPLETS)
    for name in classes:
        if name in triplet:
            out.append(triplet[name])
        else:
            out.append(extra)
            extra += 1
    return out


def triplet_role(name: str) -> str:
    """``word``, ``semantic`` (the synonym) or ``phonological`` (the neighbour) inside a triplet, else ``phrase``."""
    for words in TRIPLETS:
        if name in words:
            return ("word", "semantic", "phonological")[words.index(name)]
    return "phrase"


TRIPLET_COLUMNS = ("n", "correct", "semantic", "phonological", "same_triplet", "outside")


def triplet_confusion(labels: tp.Sequence[str], predictions: tp.Sequence[str]) -> pd.DataFrame:
    """Where the top-1 predictions of triplet words land, per triplet (rows ``word/synonym/neighbour``) and in all.

    Columns (counts of test trials): ``n``; ``correct``; ``semantic`` (a word predicted as its synonym or back);
    ``phonological`` (a word predicted as its phonological neighbour or back); ``same_triplet`` (synonym <->
    neighbour); ``outside`` (any other class). Trials of phrase words are left out. Lee et al. compare the
    semantic and phonological neighbours' similarities; this is the same question asked of the confusions.
    """
    rows: dict[str, dict[str, int]] = {"/".join(t): dict.fromkeys(TRIPLET_COLUMNS, 0) for t in TRIPLETS}
    which = {w: t for t in TRIPLETS for w in t}
    for label, pred in zip(labels, predictions):
        triplet = which.get(str(label))
        if triplet is None:
            continue
        row = rows["/".join(triplet)]
        row["n"] += 1
        roles = {triplet_role(str(label)), triplet_role(str(pred))} if str(pred) in triplet else set()
        if str(pred) == str(label):
            row["correct"] += 1
        elif roles == {"word", "semantic"}:
            row["semantic"] += 1
        elif roles == {"word", "phonological"}:
            row["phonological"] += 1
        elif roles == {"semantic", "phonological"}:
            row["same_triplet"] += 1
        else:
            row["outside"] += 1
    table = pd.DataFrame.from_dict(rows, orient="index")[list(TRIPLET_COLUMNS)]
    table.loc["all"] = table.sum()
    table.index.name = "triplet"
    return table


# --------------------------------------------------------------------------- HDF5 / MATLAB v7.3 reading

def _open(path: Path) -> h5py.File:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StudyError(f"study 'lee2024': cannot read {path} as HDF5 (truncated or not an HDF5 / MATLAB v7.3 "
                         f"file: {exc}); download it again") from exc


def _matlab_value(f: h5py.File, obj: tp.Any, path: Path, what: str) -> tp.Any:
    """A MATLAB v7.3 value: char arrays (uint16 code units, stored transposed) become str (a 2-D char matrix a
    list of its rows), cells (object references) lists, numeric arrays numpy arrays in MATLAB's shape."""
    import h5py

    if isinstance(obj, h5py.Group):
        return {k: _matlab_value(f, obj[k], path, f"{what}.{k}") for k in obj if not k.startswith("#")}
    cls = obj.attrs.get("MATLAB_class", b"")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if obj.attrs.get("MATLAB_empty", 0):  # MATLAB stores an empty array as its dimensions, flagged
        return "" if cls == "char" else np.zeros((0,))
    try:
        data = obj[()]
    except (OSError, RuntimeError) as exc:
        raise StudyError(f"study 'lee2024': {path}: cannot read {what} ({exc}); the file is damaged") from exc
    if obj.dtype == h5py.ref_dtype or data.dtype == object:
        flat = np.asarray(data).T.reshape(-1)  # column-major, as MATLAB stores the cell
        return [_matlab_value(f, f[ref], path, f"{what}{{{i + 1}}}") for i, ref in enumerate(flat)]
    if cls == "char" or data.dtype == np.uint16:
        arr = np.atleast_2d(np.asarray(data)).T  # HDF5 holds the transpose of the MATLAB array
        rows = ["".join(chr(c) for c in row).rstrip("\x00 ") for row in arr]
        return rows[0] if len(rows) == 1 else rows
    if data.dtype.kind in "SU":  # strings written by other tools (hdf5storage options, h5py)
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(data).reshape(-1)]
        return values[0] if len(values) == 1 else values
    return np.asarray(data).T


def _as_names(value: tp.Any, path: Path) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    raise StudyError(f"study 'lee2024': {path}: ch_names must be a cell of strings or a char matrix, got "
                     f"{type(value).__name__}")


def _field(locs: dict[str, tp.Any], key: str, n: int, path: Path) -> np.ndarray:
    if key not in locs:
        raise StudyError(f"study 'lee2024': {path}: ch_locs has no field {key!r} (found {sorted(locs)})")
    value = locs[key]
    if isinstance(value, list):  # a struct array: one reference per channel
        out = []
        for v in value:
            arr = np.asarray(v, dtype=float).reshape(-1)
            out.append(arr[0] if arr.size else np.nan)  # EEGLAB leaves X / Y / Z empty for unplaced channels
        value = np.asarray(out)
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.size != n:
        raise StudyError(f"study 'lee2024': {path}: ch_locs.{key} has {arr.size} values for {n} channels")
    return arr


def read_channel_info(path: str | Path) -> tuple[list[str], float, np.ndarray]:
    """``(ch_names, srate in Hz, xyz[n, 3])`` of the release's channel file (MATLAB v7.3, read with h5py).

    ``xyz`` is in EEGLAB's frame (``ch_locs`` X, Y, Z, NaN where a channel has none). Raises
    :class:`StudyError` naming the file when it is unreadable, misses a variable, or when ``ch_locs.labels``
    disagree with ``ch_names``.
    """
    path = Path(path)
    with _open(path) as f:
        missing = [k for k in ("ch_names", "srate", "ch_locs") if k not in f]
        if missing:
            raise StudyError(f"study 'lee2024': {path} has no {missing} (found {sorted(k for k in f)}); expected "
                             "the release's ch_information file (ch_names, srate, ch_locs)")
        names = _as_names(_matlab_value(f, f["ch_names"], path, "ch_names"), path)
        srate = float(np.asarray(_matlab_value(f, f["srate"], path, "srate")).reshape(-1)[0])
        locs = _matlab_value(f, f["ch_locs"], path, "ch_locs")
    if not isinstance(locs, dict):
        raise StudyError(f"study 'lee2024': {path}: ch_locs must be a struct (EEGLAB chanlocs)")
    xyz = np.stack([_field(locs, k, len(names), path) for k in ("X", "Y", "Z")], axis=1)
    if "labels" in locs:
        labels = _as_names(locs["labels"], path)
        if [x.lower() for x in labels] != [x.lower() for x in names]:
            bad = [(a, b) for a, b in zip(names, labels) if a.lower() != b.lower()][:5]
            raise StudyError(f"study 'lee2024': {path}: ch_locs.labels disagree with ch_names (e.g. {bad})")
    return names, srate, xyz


def eeglab_to_head(xyz: np.ndarray) -> np.ndarray:
    """EEGLAB coordinates (X nose, Y left ear, Z up) -> MNE's head frame (x right ear, y nose, z up), unit kept."""
    xyz = np.asarray(xyz, dtype=float)
    return np.stack([-xyz[:, 1], xyz[:, 0], xyz[:, 2]], axis=1)


def montage_info(ch_names: tp.Sequence[str], xyz: np.ndarray, sfreq: float) -> mne.Info:
    """An EEG ``mne.Info`` with the channels placed at EEGLAB positions ``xyz`` (any unit: scaled to a 9-cm head)."""
    import mne

    head = eeglab_to_head(xyz)
    radius = np.nanmax(np.linalg.norm(head, axis=1))
    head = head / (radius if radius > 0 else 1.0) * 0.09
    info = mne.create_info(list(ch_names), sfreq, "eeg")
    placed = {n: p for n, p in zip(ch_names, head) if np.isfinite(p).all()}
    info.set_montage(mne.channels.make_dig_montage(ch_pos=placed, coord_frame="head"), on_missing="ignore")
    return info


def read_labels(f: h5py.File, path: Path, n_trials: int, label_base: int = 0) -> np.ndarray:
    """Class ids (0-based, int64) from ``y_data``: integers (any of (n,), (n, 1), (1, n)) or one-hot (n, 88).

    Raises :class:`StudyError` naming the file for a wrong count, a row that is not one-hot, or ids outside
    ``[0, 88)`` after subtracting ``label_base``.
    """
    if "y_data" not in f:
        raise StudyError(f"study 'lee2024': {path} has no y_data (found {sorted(f)})")
    try:
        y = np.asarray(f["y_data"][()])
    except (OSError, RuntimeError) as exc:
        raise StudyError(f"study 'lee2024': {path}: cannot read y_data ({exc}); the file is truncated") from exc
    if y.ndim == 2 and y.shape == (n_trials, N_CLASSES) and n_trials != 1:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise StudyError(f"study 'lee2024': {path}: y_data of shape {y.shape} is not one-hot")
        return y.argmax(axis=1).astype(np.int64)
    if y.size != n_trials:
        raise StudyError(f"study 'lee2024': {path}: y_data has shape {y.shape} for {n_trials} trials of x_data")
    y = y.reshape(-1)
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise StudyError(f"study 'lee2024': {path}: y_data holds non-integer values")
    ids = y.astype(np.int64) - int(label_base)
    bad = (ids < 0) | (ids >= N_CLASSES)
    if bad.any():
        raise StudyError(f"study 'lee2024': {path}: labels out of range [{label_base}, {label_base + N_CLASSES}): "
                         f"found {int(y.min())}..{int(y.max())} ({int(bad.sum())} trials). The release's labels are "
                         "0-based; set studies.lee2024.label_base=1 for 1-based files")
    return ids


class Lee2024Spectra:
    """Lazy reader of the 4-D ``x_data`` of one file (:class:`~bm2.studies.base.Spectra`)."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int], sfreq: float, foi: list[float] | None,
                 ch_names: list[str], scale: float = 1.0) -> None:
        self.path, self.shape, self.sfreq, self.foi, self.ch_names = path, shape, sfreq, foi, ch_names
        self.scale = float(scale)  # to V^2: the released uV^2 times unit_scale^2 (module docstring, Units)

    def read(self, channels: slice, trials: slice) -> np.ndarray:
        """float32 ``[trials, channels, F, T]``; :class:`StudyError` naming the file if it is truncated."""
        with _open(self.path) as f:
            try:
                return np.asarray(f["x_data"][trials, channels], dtype=np.float32)
            except (OSError, RuntimeError) as exc:
                raise StudyError(f"study 'lee2024': {self.path}: cannot read x_data ({exc}); the file is "
                                 "truncated or damaged") from exc


class Lee2024Recording(Recording):
    """The trials of one HDF5 file (see the module docstring)."""

    events_in_uid = True

    def __init__(self, study: Lee2024, path: Path, subject: str, shape: tuple[int, ...], labels: np.ndarray,
                 ch_names: list[str], xyz: np.ndarray, sfreq: float) -> None:
        super().__init__(study.name, subject, identity={"format": FORMAT, "file": path.name, "shape": list(shape),
                                                        "foi": study.foi, "unit_scale": study.unit_scale})
        self.path, self.shape, self.labels = path, tuple(int(s) for s in shape), labels
        self.ch_names, self.xyz, self.sfreq = ch_names, xyz, sfreq
        self._files = {path.name: path, study.channel_path.name: study.channel_path}
        self._foi, self._unit_scale = study.foi, study.unit_scale

    def input_files(self) -> dict[str, Path]:
        return dict(self._files)

    @property
    def is_spectra(self) -> bool:
        """Whether ``x_data`` holds spectra (4-D) rather than raw EEG (3-D)."""
        return len(self.shape) == 4

    def spectra(self) -> Lee2024Spectra | None:
        if not self.is_spectra:
            return None
        n, c, n_f, n_t = self.shape
        if self._foi is not None and len(self._foi) != n_f:
            raise StudyError(f"study 'lee2024': studies.lee2024.foi has {len(self._foi)} frequencies but "
                             f"{self.path} has {n_f}")
        return Lee2024Spectra(self.path, (n, c, n_f, n_t), self.sfreq, self._foi, self.ch_names,
                              scale=self._unit_scale ** 2)

    @property
    def trial_samples(self) -> int | None:  # type: ignore[override]
        """Samples per trial of a raw file (its trials are laid end to end), so that preprocessing works trial by
        trial; None for spectra files."""
        return None if self.is_spectra else self.shape[-1]

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        if self.is_spectra:
            raise StudyError(f"study 'lee2024': {self.path} holds spectra (4-D x_data), not raw EEG: preprocessing "
                             "stores them as they are (preprocess.tf=null)")
        with _open(self.path) as f:
            try:
                data = np.asarray(f["x_data"][()], dtype=np.float64)
            except (OSError, RuntimeError) as exc:
                raise StudyError(f"study 'lee2024': {self.path}: cannot read x_data ({exc}); the file is "
                                 "truncated or damaged") from exc
        n, c, t = data.shape
        continuous = data.transpose(1, 0, 2).reshape(c, n * t) * self._unit_scale
        info = montage_info(self.ch_names, self.xyz, self.sfreq)
        return mne.io.RawArray(continuous, info, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        n_times = self.shape[-1]
        return trials_events([CLASSES[i] for i in self.labels], n_times, self.sfreq,
                             trial_ids=[f"{self.path.stem}/{i}" for i in range(len(self.labels))])

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """Layout positions in [0, 1] from ``ch_locs`` (:class:`StudyError` naming the channel file if missing)."""
        from .base import MissingPositionsError, layout_positions

        try:
            return layout_positions(montage_info(self.ch_names, self.xyz, self.sfreq), ch_names)
        except MissingPositionsError as exc:
            raise StudyError(f"study 'lee2024': channels {exc.channels[:10]} have no X, Y, Z in ch_locs of "
                             f"{self._files}") from exc


class Lee2024(Study):
    """The imagined-speech EEG release of Lee et al. (2024) (see the module docstring).

    Parameters
    ----------
    root : folder of the ``*.h5`` files and the channel file.
    pattern : glob of the data files under ``root`` (default ``*.h5``), sorted.
    channel_file : the MATLAB v7.3 channel-information file (relative to ``root``).
    subjects : subjects to keep (``"1"`` for ``sub_1_...``); null = every file.
    label_base : subtracted from ``y_data`` (0: the release's 0-based ids).
    foi : the centre frequencies (Hz) of the spectra, if known (the release does not give them).
    unit_scale : multiplier bringing raw ``x_data`` (3-D files) to volts (1e-6: uV); its square brings the
        released spectra (4-D files, taken to be in uV^2) to V^2, so both give spectra in V^2.
    """

    name = "lee2024"
    modality = "eeg"
    device = "127-channel EEG, 256 Hz (released as superlet spectra)"
    language = "en"
    paradigm = "imagined speech of 36 words in 12 triplets and 52 phrase words, one 2-s trial per word"
    licence = "code Apache-2.0 (Speech-BCI/Interpretable-Neural-Representation); data: the terms of its OSF release"
    url = "https://github.com/Speech-BCI/Interpretable-Neural-Representation"
    doi = "Lee et al. 2024, Interpretable Neural Speech Decoding (code release)"
    description = ("Imagined speech of 88 English words from 127-channel EEG, released as HDF5 x_data (trials, "
                   "127, 64 frequencies, 512 times) superlet power and y_data labels, with a MATLAB v7.3 channel "
                   "file (ch_names, srate, EEGLAB ch_locs).")
    downloadable = False

    def __init__(self, root: str | Path, pattern: str = "*.h5", channel_file: str = "ch_information.mat",
                 subjects: tp.Sequence[str | int] | None = None, label_base: int = 0,
                 foi: tp.Sequence[float] | None = None, unit_scale: float = 1e-6) -> None:
        super().__init__(root)
        self.pattern, self.channel_file = str(pattern), str(channel_file)
        self.subjects = None if subjects is None else [str(s) for s in subjects]
        self.label_base = int(label_base)
        self.foi = None if foi is None else [float(x) for x in foi]
        self.unit_scale = float(unit_scale)

    @property
    def data_root(self) -> Path:
        """The folder of the data files and the channel file."""
        return self.root

    @property
    def channel_path(self) -> Path:
        """The channel-information file."""
        return self.data_root / self.channel_file

    def files(self) -> list[Path]:
        """The data files matching ``pattern`` (sorted), the channel file excluded."""
        return sorted(p for p in self.data_root.glob(self.pattern) if p.is_file() and p != self.channel_path)

    def iter_recordings(self) -> tp.Iterator[Lee2024Recording]:
        """One recording per data file, in file-name order."""
        if not self.channel_path.is_file():
            raise StudyError(f"study '{self.name}': no channel file {self.channel_path} (set "
                             f"studies.{self.name}.channel_file to the release's ch_information .mat)")
        files = self.files()
        if not files:
            raise StudyError(f"study '{self.name}': no file matching {self.pattern!r} in {self.data_root}")
        ch_names, srate, xyz = read_channel_info(self.channel_path)
        for path in files:
            match = re.search(r"sub[_-]?(\w+?)_", path.name)
            subject = match.group(1) if match else path.stem
            if self.subjects is not None and subject not in self.subjects:
                continue
            with _open(path) as f:
                if "x_data" not in f:
                    raise StudyError(f"study '{self.name}': {path} has no x_data (found {sorted(f)})")
                shape = tuple(int(s) for s in f["x_data"].shape)
                if len(shape) not in (3, 4):
                    raise StudyError(f"study '{self.name}': {path}: x_data must be (trials, channels, freqs, times) "
                                     f"or raw (trials, channels, times), got shape {shape}")
                if shape[1] != len(ch_names):
                    raise StudyError(f"study '{self.name}': {path} has {shape[1]} channels but the channel file "
                                     f"{self.channel_path} names {len(ch_names)}: they disagree")
                if "ch_names" in f:  # not in the release; checked when a file carries its channel names
                    own = _as_names(_matlab_value(f, f["ch_names"], path, "ch_names"), path)
                    if [x.lower() for x in own] != [x.lower() for x in ch_names]:
                        bad = [(a, b) for a, b in zip(own, ch_names) if a.lower() != b.lower()][:5]
                        raise StudyError(f"study '{self.name}': the channel names of {path} disagree with the "
                                         f"channel file {self.channel_path} (e.g. {bad})")
                labels = read_labels(f, path, shape[0], self.label_base)
            yield Lee2024Recording(self, path, subject, shape, labels, ch_names, xyz, srate)


__all__ = ["CLASSES", "Lee2024", "Lee2024Recording", "Lee2024Spectra", "N_CLASSES", "TRIPLETS", "class_groups",
           "eeglab_to_head", "montage_info", "read_channel_info", "read_labels", "triplet_confusion", "triplet_role"]
