"""Studies and recordings: the data model every dataset of bm2 is mapped onto.

A :class:`Study` is one source of brain recordings with its metadata (modality, device, licence ...).
Subclasses register themselves by name when they are defined. A :class:`Recording` is one continuous
recording: a lazily loaded :class:`mne.io.BaseRaw`, sensor positions and a validated events table
(schema in :mod:`bm2.events`).
"""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..events import validate_events
from ..utils.fingerprint import file_fingerprint, files_fingerprint
from ..utils.hashing import content_hash

if tp.TYPE_CHECKING:  # mne is heavy; import it where it is used
    import mne

METADATA = ("modality", "device", "language", "paradigm", "licence", "url", "doi", "description")
MODALITIES = ("meg", "eeg", "ecog", "seeg")
DATA_ENV = "BM2_DATA"


class StudyError(RuntimeError):
    """A study cannot be found, prepared or read; the message says how to fix it."""


class UnknownSubjectError(StudyError, ValueError):
    """A selected subject id (``dset.subjects``) matches no subject of the selected recordings."""


class UnknownStudyError(StudyError, KeyError):
    """No study is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Spectra(tp.Protocol):
    """Precomputed time-frequency trials of a recording (:meth:`Recording.spectra`), read lazily.

    ``shape`` is ``(n_trials, n_channels, n_freqs, n_times)``; trials are laid end to end in time, as
    :class:`~bm2.studies._trials.TrialsRecording` lays raw trials. ``sfreq`` (Hz) is the rate of the time axis,
    ``foi`` the centre frequencies (Hz, None when the release does not say), ``ch_names`` the channels.
    ``scale`` multiplies the values read into the SI unit squared that bm2's superlet step gives (V^2 for EEG),
    so that released spectra and spectra computed from raw trials share a unit (lee2024: ``unit_scale ** 2``).
    """

    shape: tuple[int, int, int, int]
    scale: float
    sfreq: float
    foi: list[float] | None
    ch_names: list[str]

    def read(self, channels: slice, trials: slice) -> np.ndarray:
        """float32 ``[n_trials_read, n_channels_read, n_freqs, n_times]``."""


class AudioTrack(tp.Protocol):
    """The continuous audio of a recording (:meth:`Recording.audio_track`), on the recording's own timeline: sample
    0 at time 0 of the brain signal. Read lazily and small to pickle (a path and a key), so that datasets carry it
    to loader workers.

    ``sample_rate`` (Hz), ``n_samples``; ``read(start, stop)`` returns float32 ``[stop - start]`` (``stop`` None:
    to the end), raising :class:`StudyError` naming the file when it cannot be read.
    """

    sample_rate: int
    n_samples: int

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 samples ``[start, stop)``."""


class Recording:
    """One continuous recording of brain activity and its events.

    Subclasses implement :meth:`_load_raw` and :meth:`_load_events`; this class caches them,
    validates the events and computes a stable :attr:`uid` from everything that shapes them.

    Parameters
    ----------
    study : name of the study.
    subject, session, task : identifiers inside the study (strings).
    identity : anything else that identifies the content (relative file names, study options, loader
        versions ...); it enters :attr:`signal_uid` and :attr:`uid`, hence every cache key derived from this
        recording.

    What enters the uid
    -------------------
    :attr:`signal_uid`: the ids, ``identity`` and the content fingerprints of :meth:`input_files` (the raw
    file(s) and the sidecars that shape the signal, its channels, bad channels and positions). :attr:`uid`: the
    signal uid and, when :attr:`events_in_uid` (every built-in study), a content hash of the validated events
    table whose sound file paths are replaced by the fingerprints of the files (:func:`events_fingerprint`).
    So an edit of ``channels.tsv``, of an onset in ``events.tsv``, of a TextGrid or of a stimulus gives a new
    uid, and every cache entry is rebuilt; touching a file without changing it does not. Computing the uid of
    such a recording loads its events.
    """

    #: whether the events table enters :attr:`uid` (the built-in studies: yes; a Recording made in code keeps
    #: the uid of its identity alone unless it says so)
    events_in_uid: tp.ClassVar[bool] = False

    #: samples per trial when the raw signal is trials of equal length laid end to end (None: a continuous
    #: recording). :func:`bm2.preprocessing.preprocess` then filters, resamples and transforms (``preprocess.tf``)
    #: each trial on its own, so that no step runs across a trial border.
    trial_samples: int | None = None

    def __init__(self, study: str, subject: str, session: str = "0", task: str = "0",
                 identity: dict[str, tp.Any] | None = None) -> None:
        self.study = study
        self.subject = str(subject)
        self.session = str(session)
        self.task = str(task)
        self.identity = dict(identity or {})
        self._raw: mne.io.BaseRaw | None = None
        self._events: pd.DataFrame | None = None
        self._uids: dict[str, str] = {}

    @property
    def dataset_name(self) -> str:
        """Name of the dataset the recording belongs to (the study name; the root's name, or the ``name``
        option, for the generic ``bids`` study)."""
        return self.study

    def input_files(self) -> dict[str, Path]:
        """Files whose content shapes the raw signal, its channels and positions, ``{stable name: path}``
        (names relative to the study root, so that moving the data keeps the uid). None by default."""
        return {}

    @property
    def signal_uid(self) -> str:
        """A content hash of the ids, the identity and the fingerprints of :meth:`input_files` (computed once
        per instance). It changes with the signal, not with the events."""
        if "signal" not in self._uids:
            base = {"study": self.study, "subject": self.subject, "session": self.session, "task": self.task,
                    **self.identity}
            files = self.input_files()
            if files:
                base["inputs"] = files_fingerprint(files)
            self._uids["signal"] = content_hash(base)
        return self._uids["signal"]

    @property
    def uid(self) -> str:
        """A content hash of everything that shapes the recording's cache entries, stable across runs and
        machines: :attr:`signal_uid`, and the events when :attr:`events_in_uid` (see the class docstring)."""
        if "uid" not in self._uids:
            if self.events_in_uid:
                self._uids["uid"] = content_hash({"signal": self.signal_uid,
                                                  "events": events_fingerprint(self.events())})
            else:
                self._uids["uid"] = self.signal_uid
        return self._uids["uid"]

    @property
    def subject_uid(self) -> str:
        """Subject identifier unique across studies (``study/subject``)."""
        return f"{self.study}/{self.subject}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(study={self.study!r}, subject={self.subject!r}, "
                f"session={self.session!r}, task={self.task!r})")

    def raw(self) -> mne.io.BaseRaw:
        """The raw signal, loaded lazily (no data in memory until asked) and kept."""
        if self._raw is None:
            self._raw = self._load_raw()
        return self._raw

    def events(self) -> pd.DataFrame:
        """The validated events table (see :mod:`bm2.events`)."""
        if self._events is None:
            self._events = validate_events(self._load_events(), source=repr(self))
        return self._events

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """2-D layout positions of ``ch_names`` in [0, 1], shape ``(len(ch_names), 2)``."""
        return layout_positions(self.raw().info, ch_names)

    def audio_track(self) -> AudioTrack | None:
        """The audio recorded alongside the brain signal on the same timeline (e.g. the participant's own speech in
        the Neural Speech Decoding release), or None (default: the audio, if any, is in the ``sound`` events' files).
        Features computed from the recording's audio (``nsd_spec``) and the reference audio of the
        reconstruction task's STOI (:meth:`bm2.data.dataset.SegmentDataset.reference_audio`) read it."""
        return None

    def spectra(self) -> Spectra | None:
        """Time-frequency data the release already holds (e.g. lee2024's superlet spectra), or None (default):
        then :func:`bm2.preprocessing.preprocess` stores them as the ``[C, F, T]`` brain instead of reading
        :meth:`raw`."""
        return None

    def _load_raw(self) -> mne.io.BaseRaw:
        raise NotImplementedError

    def _load_events(self) -> pd.DataFrame:
        raise NotImplementedError


def events_fingerprint(events: pd.DataFrame) -> str:
    """A content hash of an events table in which each sound ``filepath`` is replaced by the file's name and
    content fingerprint (so the hash follows the audio, not where it lies). A ``line`` column (where a row came
    from) is left out."""
    ev = events.drop(columns=[c for c in ("line",) if c in events.columns])
    if "filepath" in ev.columns:
        paths = ev["filepath"].dropna().astype(str).unique()
        prints = {p: f"{Path(p).name}:{file_fingerprint(p)}" for p in paths}
        ev = ev.assign(filepath=ev["filepath"].map(lambda p: prints.get(str(p)) if isinstance(p, str) else None))
    return content_hash(ev.to_csv(index=False, lineterminator="\n"))


#: order of the channel types laid out side by side when a recording mixes several
TYPE_ORDER = ("mag", "grad", "eeg", "ecog", "seeg", "dbs")
#: part of each type's cell left empty between types
TYPE_GAP = 0.1
#: how far apart (in the unit square) sensors that share one position are moved
SPREAD = 0.004
#: channel types whose positions come from electrode locations (never from a layout file by name)
ELECTRODES = ("eeg", "ecog", "seeg", "dbs")


class MissingPositionsError(StudyError):
    """Some channels have neither a layout nor 3-D locations; :attr:`channels` names them."""

    def __init__(self, message: str, channels: list[str]) -> None:
        super().__init__(message)
        self.channels = channels


def layout_positions(info: mne.Info, ch_names: tp.Sequence[str]) -> np.ndarray:
    """Positions of ``ch_names`` in [0, 1], shape ``(len(ch_names), 2)``, distinct for distinct channels.

    Each channel type is laid out on its own (:func:`type_positions`): mne's 2-D layout when it knows the
    sensors (``Vectorview-mag``, ``Vectorview-grad`` ... where the two gradiometers of a Neuromag triplet have
    their own boxes), else the electrodes' layout (EEG / iEEG with a montage), else an azimuthal projection of the
    3-D locations stored in ``info``. Several types (e.g. magnetometers, gradiometers and EEG of a Neuromag
    FIF, whose MEG and EEG locations are in device and head coordinates) are placed side by side on a grid, one
    cell per type (order :data:`TYPE_ORDER`), so that no two sensors share a position and no frame is mixed
    with another. Sensors that still share a position are moved :data:`SPREAD` apart.

    Raises a :class:`MissingPositionsError` naming every channel without a position.
    """
    import mne

    names = list(ch_names)
    index = {n: i for i, n in enumerate(info["ch_names"])}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise StudyError(f"channels {unknown} are not in the recording")
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(mne.channel_type(info, index[name]), []).append(i)
    order = sorted(groups, key=lambda t: (TYPE_ORDER.index(t) if t in TYPE_ORDER else len(TYPE_ORDER), t))
    placed: dict[str, np.ndarray] = {}
    missing: list[str] = []
    for kind in order:
        try:
            placed[kind] = type_positions(info, [names[i] for i in groups[kind]], kind)
        except MissingPositionsError as exc:
            missing += exc.channels
    if missing:
        types = sorted({mne.channel_type(info, index[n]) for n in missing})
        shown = ", ".join(missing[:30]) + (f" ... and {len(missing) - 30} more" if len(missing) > 30 else "")
        raise MissingPositionsError(
            f"{len(missing)} of {len(names)} channels have no sensor position (type {'/'.join(types)}): "
            f"{shown}. Give them positions (electrodes.tsv, or a montage: `studies.bids.montage` for the bids study, "
            "a name of mne.channels.get_builtin_montages() such as 'easycap-M1' or a montage file), mark them bad "
            "(channels.tsv), or leave their type out of `preprocess.picks`", missing)
    pos = np.zeros((len(names), 2))
    if len(order) == 1:
        pos[:] = placed[order[0]]
    else:
        cols = int(np.ceil(np.sqrt(len(order))))
        rows = int(np.ceil(len(order) / cols))
        for k, kind in enumerate(order):
            row, col = divmod(k, cols)
            pos[groups[kind]] = (placed[kind] * (1 - TYPE_GAP) + [col, rows - 1 - row]) / [cols, rows]
    return _unit_square(_spread_duplicates(pos))


def type_positions(info: mne.Info, ch_names: tp.Sequence[str], kind: str | None = None) -> np.ndarray:
    """Positions in [0, 1] of channels of ONE type: a known layout, else the electrodes' layout, else a
    projection of their 3-D locations (:class:`MissingPositionsError` naming those without any)."""
    import warnings

    import mne

    names = list(ch_names)
    if kind in ELECTRODES:
        _require_locations(info, names)  # a layout would silently put electrodes without position at 0
    picked = mne.pick_info(info, mne.pick_channels(info["ch_names"], names, ordered=True))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                layout = mne.channels.find_layout(picked)
            except (RuntimeError, ValueError):
                layout = mne.channels.make_eeg_layout(picked)  # EEG / iEEG with a montage
        index = {n.replace(" ", ""): i for i, n in enumerate(layout.names)}
        rows = [index[c.replace(" ", "")] for c in names]
    except (RuntimeError, ValueError, KeyError, IndexError):
        return _projected_positions(info, names)
    return _unit_square(layout.pos[rows, :2] + layout.pos[rows, 2:4] / 2)  # centre of each box


def _locations(info: mne.Info, ch_names: tp.Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {n: i for i, n in enumerate(info["ch_names"])}
    locs = np.array([info["chs"][index[c]]["loc"][:3] for c in ch_names], dtype=float).reshape(-1, 3)
    ok = np.isfinite(locs).all(axis=1) & ~np.all(np.abs(locs) < 1e-12, axis=1)
    return locs, ok


def _require_locations(info: mne.Info, ch_names: tp.Sequence[str]) -> np.ndarray:
    locs, ok = _locations(info, ch_names)
    if not ok.all():
        missing = [c for c, good in zip(ch_names, ok) if not good]
        raise MissingPositionsError(f"no 3-D location for channels {missing}", missing)
    return locs


def _projected_positions(info: mne.Info, ch_names: tp.Sequence[str]) -> np.ndarray:
    """Azimuthal projection of the 3-D sensor locations, seen from below the sensor array's centre."""
    locs = _require_locations(info, ch_names)
    origin = np.array([*locs[:, :2].mean(axis=0), locs[:, 2].min() - np.ptp(locs[:, 2]) - 1e-3])
    vec = locs - origin
    r = np.linalg.norm(vec, axis=1)
    theta = np.arccos(np.clip(vec[:, 2] / np.maximum(r, 1e-12), -1, 1))
    phi = np.arctan2(vec[:, 1], vec[:, 0])
    return _unit_square(np.stack([theta * np.cos(phi), theta * np.sin(phi)], axis=1))


def _spread_duplicates(pos: np.ndarray, radius: float = SPREAD) -> np.ndarray:
    """``pos`` where each set of k > 1 equal rows is moved onto a circle of ``radius`` around their position
    (e.g. the magnetometer-free gradiometer pairs of a projection, which share one location)."""
    pos = np.asarray(pos, dtype=float).copy()
    if len(pos) < 2:
        return pos
    span = max(float(np.ptp(pos, axis=0).max()), 1e-12)
    keys = np.round(pos / span, 6)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    for group in np.flatnonzero(counts > 1):
        members = np.flatnonzero(inverse.ravel() == group)
        angles = 2 * np.pi * np.arange(len(members)) / len(members)
        pos[members] += radius * span * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return pos


def _unit_square(pos: np.ndarray) -> np.ndarray:
    pos = pos - pos.min(axis=0)
    return (pos / np.maximum(pos.max(axis=0), 1e-12)).astype(np.float32)


class Study:
    """Base class of all studies; subclasses declare metadata and register themselves.

    Class attributes to declare: ``name`` and every key of :data:`METADATA`. Set
    ``abstract = True`` on intermediate base classes to keep them out of the registry.
    """

    name: tp.ClassVar[str]
    modality: tp.ClassVar[str]
    device: tp.ClassVar[str]
    language: tp.ClassVar[str]
    paradigm: tp.ClassVar[str]
    licence: tp.ClassVar[str]
    url: tp.ClassVar[str]
    doi: tp.ClassVar[str]
    description: tp.ClassVar[str]
    abstract: tp.ClassVar[bool] = True
    _registry: tp.ClassVar[dict[str, type[Study]]] = {}

    def __init_subclass__(cls, **kwargs: tp.Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        cls.abstract = False
        missing = [k for k in ("name",) + METADATA if not isinstance(getattr(cls, k, None), str)]
        if missing:
            raise TypeError(f"study class {cls.__name__} must declare string attributes {missing}")
        if cls.modality not in MODALITIES:
            raise TypeError(f"study {cls.name}: modality must be one of {MODALITIES}, got {cls.modality!r}")
        previous = Study._registry.get(cls.name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise TypeError(f"study name {cls.name!r} is already used by {previous.__qualname__}")
        Study._registry[cls.name] = cls

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    #: whether ``python -m scripts.download NAME`` can fetch the study (the missing-root error then says so)
    downloadable: tp.ClassVar[bool] = True

    def prepare(self) -> None:
        """Make the data available on disk (download, generate); by default check that the root exists."""
        if not self.root.exists():
            fetch = (f", or fetch it: `python -m scripts.download {self.name}` (or `dora run download_only=true "
                     f"'dset.selections=[{self.name}]'`)") if self.downloadable else ""
            raise StudyError(
                f"study {self.name!r}: data root {self.root} does not exist. Point `paths.studies.{self.name}` "
                f"(or the environment variable {DATA_ENV}, the parent of every study folder) to the data{fetch}.")

    def iter_recordings(self) -> tp.Iterator[Recording]:
        """Yield the recordings of the study in a deterministic order."""
        raise NotImplementedError

    def iter_continuous(self) -> tp.Iterator[Recording]:
        """Continuous recordings for pre-training crops (``dset.crops``, :mod:`bm2.data.crops`), if the study has
        any besides :meth:`iter_recordings` (e.g. Du-IN's ``pretrain`` folders next to its word epochs); none by
        default. Each must carry the same ``study`` and ``subject`` as that subject's recordings and the same
        channels in the same order, so that per-subject layers learnt on crops apply to the epochs."""
        return iter(())

    @classmethod
    def metadata(cls) -> dict[str, str]:
        """The declared metadata as a dictionary."""
        return {"name": cls.name, **{k: getattr(cls, k) for k in METADATA}}


def study_names() -> list[str]:
    """Names of every registered study."""
    _import_builtin_studies()
    return sorted(Study._registry)


def get_study_class(name: str) -> type[Study]:
    """The study class registered as ``name``; the error lists the valid names."""
    _import_builtin_studies()
    try:
        return Study._registry[name]
    except KeyError:
        raise UnknownStudyError(f"unknown study {name!r}; valid studies are {study_names()}") from None


def study_root(name: str, data_root: str | Path | None = None, override: str | Path | None = None) -> Path:
    """Where the files of study ``name`` live: ``override``, else ``data_root/name``, else ``$BM2_DATA/name``."""
    if override:
        return Path(override).expanduser().resolve()
    base = data_root or os.environ.get(DATA_ENV)
    if not base:
        raise StudyError(f"no data root for study {name!r}: set `paths.data` in the config, the environment "
                         f"variable {DATA_ENV}, or `paths.studies.{name}`")
    return (Path(base).expanduser() / name).resolve()


def _import_builtin_studies() -> None:
    """Import every module of :mod:`bm2.studies` once: study classes register themselves on import."""
    import importlib
    import pkgutil

    from .. import studies

    for module in pkgutil.iter_modules(studies.__path__):
        if module.name != "base" and not module.name.startswith("_"):
            importlib.import_module(f"{studies.__name__}.{module.name}")
