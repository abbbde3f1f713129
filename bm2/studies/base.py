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
from ..utils.hashing import content_hash

if tp.TYPE_CHECKING:  # mne is heavy; import it where it is used
    import mne

METADATA = ("modality", "device", "language", "paradigm", "licence", "url", "doi", "description")
MODALITIES = ("meg", "eeg", "ecog", "seeg")
DATA_ENV = "BM2_DATA"


class StudyError(RuntimeError):
    """A study cannot be found, prepared or read; the message says how to fix it."""


class UnknownStudyError(StudyError, KeyError):
    """No study is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Recording:
    """One continuous recording of brain activity and its events.

    Subclasses implement :meth:`_load_raw` and :meth:`_load_events`; this class caches them,
    validates the events and computes a stable :attr:`uid` from the recording's identity.

    Parameters
    ----------
    study : name of the study.
    subject, session, task : identifiers inside the study (strings).
    identity : anything else that identifies the content (file sizes, generation parameters ...);
        it enters :attr:`uid`, hence every cache key derived from this recording.
    """

    def __init__(self, study: str, subject: str, session: str = "0", task: str = "0",
                 identity: dict[str, tp.Any] | None = None) -> None:
        self.study = study
        self.subject = str(subject)
        self.session = str(session)
        self.task = str(task)
        self.identity = dict(identity or {})
        self._raw: mne.io.BaseRaw | None = None
        self._events: pd.DataFrame | None = None

    @property
    def uid(self) -> str:
        """A content hash of the recording's identity, stable across runs and machines."""
        return content_hash({"study": self.study, "subject": self.subject, "session": self.session,
                             "task": self.task, **self.identity})

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

    def _load_raw(self) -> mne.io.BaseRaw:
        raise NotImplementedError

    def _load_events(self) -> pd.DataFrame:
        raise NotImplementedError


def layout_positions(info: mne.Info, ch_names: tp.Sequence[str]) -> np.ndarray:
    """Positions of ``ch_names`` in [0, 1], shape ``(len(ch_names), 2)``.

    mne's 2-D sensor layout when it knows the sensors; otherwise an azimuthal projection of the 3-D sensor
    locations stored in ``info`` (e.g. KIT / CTF data converted to FIF). Raises a :class:`StudyError` naming
    the channels when neither exists.
    """
    import mne

    picked = mne.pick_info(info, mne.pick_channels(info["ch_names"], list(ch_names), ordered=True))
    try:
        try:
            layout = mne.channels.find_layout(picked)
        except (RuntimeError, ValueError):
            layout = mne.channels.make_eeg_layout(picked)  # EEG / iEEG with a montage
        index = {n.replace(" ", ""): i for i, n in enumerate(layout.names)}
        rows = [index[c.replace(" ", "")] for c in ch_names]
    except (RuntimeError, ValueError, KeyError):
        return _projected_positions(info, ch_names)
    return _unit_square(layout.pos[rows, :2] + layout.pos[rows, 2:4] / 2)  # centre of each box


def _projected_positions(info: mne.Info, ch_names: tp.Sequence[str]) -> np.ndarray:
    """Azimuthal projection of the 3-D sensor locations, seen from below the sensor array's centre."""
    index = {n: i for i, n in enumerate(info["ch_names"])}
    locs = np.array([info["chs"][index[c]]["loc"][:3] for c in ch_names], dtype=float)
    if not np.isfinite(locs).all() or np.allclose(locs, 0):
        raise StudyError(f"no sensor layout nor 3-D locations for channels {list(ch_names)[:5]}; set a montage "
                         "on the raw or override Recording.sensor_positions")
    origin = np.array([*locs[:, :2].mean(axis=0), locs[:, 2].min() - np.ptp(locs[:, 2]) - 1e-3])
    vec = locs - origin
    r = np.linalg.norm(vec, axis=1)
    theta = np.arccos(np.clip(vec[:, 2] / np.maximum(r, 1e-12), -1, 1))
    phi = np.arctan2(vec[:, 1], vec[:, 0])
    return _unit_square(np.stack([theta * np.cos(phi), theta * np.sin(phi)], axis=1))


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

    def prepare(self) -> None:
        """Make the data available on disk (download, generate); by default check that the root exists."""
        if not self.root.exists():
            raise StudyError(
                f"study {self.name!r}: data root {self.root} does not exist. Point `paths.studies.{self.name}` "
                f"(or the environment variable {DATA_ENV}, the parent of every study folder) to the data, or "
                f"fetch it: `python -m scripts.download {self.name}` (or `dora run download_only=true "
                f"'dset.selections=[{self.name}]'`).")

    def iter_recordings(self) -> tp.Iterator[Recording]:
        """Yield the recordings of the study in a deterministic order."""
        raise NotImplementedError

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
