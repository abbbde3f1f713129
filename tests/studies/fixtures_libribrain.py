"""Write LibriBrain 2025 runs in the exact serialised layout: an h5 (``data`` 306 x N float32, attribute
``sample_frequency``, chunked like pnpl's ``fif_to_h5``) and the events TSV (``kind``, ``segment``, ``timemeg``,
``duration``, ``sentenceidx``)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from bm2.studies.libribrain2025 import PREPROC, events_path, h5_path


def write_h5(path: Path, data: np.ndarray, sfreq: float = 250.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.asarray(data, dtype=np.float32), chunks=(data.shape[0], 50))
        f.create_dataset("times", data=np.arange(data.shape[1]) / sfreq)
        f.attrs["sample_frequency"] = sfreq
    return path


def write_events(path: Path, rows: list[tuple]) -> Path:
    """``rows``: ``(kind, segment, timemeg, duration, sentenceidx)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["kind", "segment", "timemeg", "duration", "sentenceidx"])
    table.to_csv(path, sep="\t", index=False)
    return path


#: a short run: silence, two words of one sentence with their phonemes (one oov, one sil), silence, a word
EVENTS = [
    ("silence", "", 0.2, 0.8, ""),
    ("word", "the", 1.0, 0.2, 0),
    ("phoneme", "dh_B", 1.0, 0.1, 0),
    ("phoneme", "ah_E", 1.1, 0.1, 0),
    ("word", "holmes", 1.2, 0.5, 0),
    ("phoneme", "hh_B", 1.2, 0.1, 0),
    ("phoneme", "ow_I", 1.3, 0.1, 0),
    ("phoneme", "oov_S", 1.4, 0.1, 0),
    ("phoneme", "z_E", 1.6, 0.1, 0),
    ("silence", "", 1.7, 0.6, ""),
    ("phoneme", "sil", 1.7, 0.6, ""),
    ("word", "said", 2.3, 0.4, 1),
    ("phoneme", "s_B", 2.3, 0.1, 1),
    ("phoneme", "eh_I", 2.4, 0.15, 1),
    ("phoneme", "d_E", 2.55, 0.15, 1),
]


def write_run(root: Path, subject: str, session: str, book: str, run: str, seconds: float = 4.0,
              sfreq: float = 250.0, seed: int = 0, events: list[tuple] | None = None) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((306, int(seconds * sfreq))).astype(np.float32) * 1e-12
    h5 = write_h5(h5_path(root, subject, session, book, run, PREPROC), data, sfreq)
    tsv = write_events(events_path(root, subject, session, book, run), EVENTS if events is None else events)
    return h5, tsv
