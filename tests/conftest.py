"""Shared fixtures: a tiny in-memory recording with a real sensor layout and valid events."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("BM2_NO_PROGRESS", "1")


class ArrayRecording:
    """Factory of small recordings backed by ``mne.io.RawArray`` (no files needed)."""

    @staticmethod
    def make(data: np.ndarray | None = None, sfreq: float = 200.0, seconds: float = 20.0, seed: int = 0,
             events: pd.DataFrame | None = None, subject: str = "01"):
        import mne

        from bm2.studies.base import Recording

        layout = mne.channels.read_layout("Vectorview-mag")
        names = layout.names[:12]
        if data is None:
            data = np.random.default_rng(seed).standard_normal((len(names), int(sfreq * seconds))) * 1e-12
        info = mne.create_info(names, sfreq, "eeg")
        raw = mne.io.RawArray(data, info, verbose="error")
        if events is None:
            rows = [dict(kind="block", onset=1.0, duration=8.0, uid="the cat sat"),
                    dict(kind="block", onset=10.0, duration=8.0, uid="a dog ran")]
            for b, start in ((0, 2.0), (1, 11.0)):
                for w in range(4):
                    rows.append(dict(kind="word", onset=start + 0.6 * w, duration=0.4, text=f"w{b}{w}",
                                     sentence_id=f"s{b}", word_index=w))
            events = pd.DataFrame(rows)

        class _Rec(Recording):
            def _load_raw(self):
                return raw

            def _load_events(self):
                return events

            def sensor_positions(self, ch_names):
                pos = layout.pos[[layout.names.index(c) for c in ch_names], :2]
                pos = pos - pos.min(0)
                return (pos / pos.max(0)).astype(np.float32)

        return _Rec("toy", subject, identity={"seed": seed, "shape": list(data.shape), "sfreq": sfreq})


@pytest.fixture
def array_recording():
    """The :class:`ArrayRecording` factory."""
    return ArrayRecording.make
