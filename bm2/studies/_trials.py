"""Data that come already cut into trials (trials x channels x time) as a :class:`~bm2.studies.base.Recording`.

Trials are laid end to end on one continuous timeline, each one a **block** that no window crosses (the same
data model as continuous recordings), with one event per trial at its time zero carrying the trial's label; a
window anchored at that event with ``[tmin, tmax]`` equal to the trial's span is the trial itself. So epoched
datasets (Du-IN's 3-s word epochs, lee2024's imagined-speech trials) reuse the preprocessing cache, the splits,
the label vocabulary and the batches of continuous recordings, with no parallel code path.

Preprocessing runs trial by trial (:attr:`~bm2.studies.base.Recording.trial_samples` is the trial length): filters,
resampling and ``preprocess.tf`` see one trial at a time, so nothing leaks across a trial border (before, filters ran
on the concatenated timeline). Each trial must then resample to a whole number of samples.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import pandas as pd

from ..utils.hashing import content_hash
from .base import Recording

if tp.TYPE_CHECKING:
    import mne


def trials_events(labels: tp.Sequence[str], n_samples: int, sfreq: float, tmin: float = 0.0,
                  kind: str = "word", trial_ids: tp.Sequence[str] | None = None) -> pd.DataFrame:
    """Events of trials laid end to end: per trial a ``block`` (uid = trial id) and a ``kind`` event at time zero.

    ``n_samples`` per trial at ``sfreq`` Hz; ``tmin`` (s) is the trial's first sample relative to its time zero
    (e.g. -0.5 for epochs starting 0.5 s before word onset). Word events get ``sentence_id`` = trial id and
    ``word_index`` 0.
    """
    duration = n_samples / sfreq
    ids = [str(t) for t in (trial_ids if trial_ids is not None else range(len(labels)))]
    rows = []
    for i, (label, uid) in enumerate(zip(labels, ids)):
        start = i * duration
        rows.append(dict(kind="block", onset=start, duration=duration, uid=f"trial {uid}"))
        event = dict(kind=kind, onset=start - tmin, duration=0.0, text=str(label))
        if kind == "word":
            event.update(sentence_id=f"trial {uid}", word_index=0)
        rows.append(event)
    return pd.DataFrame(rows)


class TrialsRecording(Recording):
    """Trials ``data[n_trials, n_channels, n_samples]`` (volts) with one label each, as one recording.

    Parameters
    ----------
    study, subject, session, task : as :class:`~bm2.studies.base.Recording`.
    data : float array ``(n_trials, n_channels, n_samples)``.
    labels : one class label per trial (str).
    sfreq : sampling rate (Hz).
    ch_names, ch_types : channel names and mne channel types (``seeg``, ``ecog``, ``eeg``, ``mag`` ...).
    positions : 2-D layout positions ``(n_channels, 2)`` in [0, 1] (None: from the montage in ``info``).
    tmin : the trials' first sample relative to their time zero (s).
    kind : the event kind carrying the label (``word`` by default; phoneme labels must be ARPABET).
    identity : what identifies the content (file fingerprints ...); the data's shape and labels are added.

    Raises ``ValueError`` when shapes or labels disagree.
    """

    def __init__(self, study: str, subject: str, data: np.ndarray, labels: tp.Sequence[str], sfreq: float,
                 ch_names: tp.Sequence[str], ch_types: str | tp.Sequence[str] = "seeg",
                 positions: np.ndarray | None = None, tmin: float = 0.0, kind: str = "word", session: str = "0",
                 task: str = "0", trial_ids: tp.Sequence[str] | None = None,
                 identity: dict[str, tp.Any] | None = None) -> None:
        data = np.asarray(data)
        if data.ndim != 3:
            raise ValueError(f"trials must be (n_trials, n_channels, n_samples), got shape {data.shape}")
        if len(labels) != data.shape[0] or len(ch_names) != data.shape[1]:
            raise ValueError(f"{data.shape[0]} trials x {data.shape[1]} channels but {len(labels)} labels and "
                             f"{len(ch_names)} channel names")
        ident = {"n_trials": int(data.shape[0]), "shape": list(data.shape), "sfreq": float(sfreq),
                 "labels": content_hash([str(x) for x in labels]), **(identity or {})}
        super().__init__(study, subject, session, task, identity=ident)
        self._data, self._labels, self._sfreq = data, [str(x) for x in labels], float(sfreq)
        self._ch_names, self._ch_types = list(ch_names), ch_types
        self._positions, self._tmin, self._kind, self._trial_ids = positions, tmin, kind, trial_ids
        self.trial_samples = int(data.shape[2])  # bm2.preprocessing.preprocess: one trial at a time

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        n_trials, n_channels, n_samples = self._data.shape
        continuous = self._data.transpose(1, 0, 2).reshape(n_channels, n_trials * n_samples)
        info = mne.create_info(self._ch_names, self._sfreq, self._ch_types)  # type: ignore[arg-type]
        return mne.io.RawArray(continuous.astype(np.float64), info, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        return trials_events(self._labels, self._data.shape[2], self._sfreq, self._tmin, self._kind, self._trial_ids)

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """The given positions of ``ch_names``, else the layout of the raw's montage."""
        if self._positions is None:
            return super().sensor_positions(ch_names)
        index = {n: i for i, n in enumerate(self._ch_names)}
        return np.asarray(self._positions, dtype=np.float32)[[index[c] for c in ch_names]]


__all__ = ["TrialsRecording", "trials_events"]
