"""Continuous signal held in arrays (one or more pieces of ``channels x time``) as a :class:`Recording` cut into
fixed-length blocks, for pre-training crops (:mod:`bm2.data.crops`).

The pieces (e.g. the ``.npy`` files of Du-IN's ``pretrain`` folder) are laid end to end on one timeline; each
piece is cut into blocks of ``block_seconds`` (the last, shorter one kept if it is at least half as long), so
that no crop crosses the border between two pieces, and blocks go to train / valid / test by a hash of their
uid (``<piece name>/<k>``). The events table holds the blocks only: there is nothing to decode.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import pandas as pd

from .base import Recording

if tp.TYPE_CHECKING:
    import mne

#: default block length (s): short enough that a few minutes of signal give the valid and test splits blocks
BLOCK_SECONDS = 10.0


def piece_blocks(names: tp.Sequence[str], lengths: tp.Sequence[int], sfreq: float,
                 block_seconds: float = BLOCK_SECONDS) -> pd.DataFrame:
    """Block events of pieces of ``lengths`` samples laid end to end: ``block_seconds`` each, uid
    ``<piece>/<k>``; a piece's last block is kept when it is at least half a block long."""
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds}")
    rows, start = [], 0.0
    for name, n in zip(names, lengths):
        duration = n / sfreq
        k, at = 0, 0.0
        while at < duration - 1e-9:
            span = min(block_seconds, duration - at)
            if span >= block_seconds / 2 or (k == 0 and span > 0):
                rows.append(dict(kind="block", onset=start + at, duration=span, uid=f"{name}/{k}"))
            k, at = k + 1, at + block_seconds
        start += duration
    return pd.DataFrame(rows, columns=["kind", "onset", "duration", "uid"])


class ContinuousRecording(Recording):
    """Pieces of continuous signal of one subject, read on demand, as one recording of blocks.

    Parameters
    ----------
    study, subject, session, task : as :class:`~bm2.studies.base.Recording`.
    names : a stable name per piece (e.g. its file name): it enters the block uids.
    lengths : samples per piece (known without reading the data, e.g. from ``.npy`` headers).
    load : ``load(i) -> float array (n_channels, lengths[i])`` in volts, the piece ``i``.
    sfreq : sampling rate (Hz); ch_names, ch_types : channels (mne names and types).
    positions : 2-D layout ``(n_channels, 2)`` in [0, 1] (None: from the raw's montage).
    block_seconds : block length (s).
    identity : what identifies the content (file fingerprints come from :meth:`input_files` of subclasses).
    """

    def __init__(self, study: str, subject: str, names: tp.Sequence[str], lengths: tp.Sequence[int],
                 load: tp.Callable[[int], np.ndarray], sfreq: float, ch_names: tp.Sequence[str],
                 ch_types: str | tp.Sequence[str] = "seeg", positions: np.ndarray | None = None,
                 session: str = "continuous", task: str = "continuous", block_seconds: float = BLOCK_SECONDS,
                 identity: dict[str, tp.Any] | None = None) -> None:
        if len(names) != len(lengths) or not names:
            raise ValueError(f"need one length per piece, got {len(names)} names and {len(lengths)} lengths")
        super().__init__(study, subject, session, task,
                         identity={"pieces": list(map(str, names)), "lengths": [int(n) for n in lengths],
                                   "sfreq": float(sfreq), "block_seconds": float(block_seconds), **(identity or {})})
        self._names, self._lengths, self._load = [str(n) for n in names], [int(n) for n in lengths], load
        self._sfreq, self._ch_names, self._ch_types = float(sfreq), list(ch_names), ch_types
        self._positions, self.block_seconds = positions, float(block_seconds)

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        # one float64 timeline filled piece by piece: a list of pieces then a concatenation would hold the whole
        # signal twice (hours of sEEG in float64 are gigabytes)
        signal = np.empty((len(self._ch_names), sum(self._lengths)), dtype=np.float64)
        at = 0
        for i, n in enumerate(self._lengths):
            data = np.asarray(self._load(i))
            if data.shape != (len(self._ch_names), n):
                raise ValueError(f"{self!r}: piece {self._names[i]} has shape {data.shape}, expected "
                                 f"({len(self._ch_names)}, {n})")
            signal[:, at:at + n] = data
            at += n
            del data
        info = mne.create_info(self._ch_names, self._sfreq, self._ch_types)  # type: ignore[arg-type]
        return mne.io.RawArray(signal, info, copy="info", verbose="error")  # the data is not copied

    def _load_events(self) -> pd.DataFrame:
        return piece_blocks(self._names, self._lengths, self._sfreq, self.block_seconds)

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """The given positions of ``ch_names``, else the layout of the raw's montage."""
        if self._positions is None:
            return super().sensor_positions(ch_names)
        index = {n: i for i, n in enumerate(self._ch_names)}
        return np.asarray(self._positions, dtype=np.float32)[[index[c] for c in ch_names]]


__all__ = ["BLOCK_SECONDS", "ContinuousRecording", "piece_blocks"]
