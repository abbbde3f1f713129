"""A small in-memory dataset that follows the datasets' contract, and a model that echoes planned outputs.

The planned model output of each window is stored as its ``brain`` input, so that :class:`Echo` (the identity)
returns exactly the logits / features a test wants.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np
import pandas as pd
import torch


@dataclasses.dataclass
class FakeRecording:
    """What the tasks read of a prepared recording."""

    uid: str
    sample_rate: float = 100.0


class FakeDataset(torch.utils.data.Dataset):
    """Windows with planned ``brain`` (= model output) and per-item targets (``label``, ``speech``, ``features``).

    ``spans`` are ``(recording, first, length)`` per window; ``timelines`` the speech truth per recording;
    ``audio`` maps a window to its ``(reference audio, sample rate)``; ``extra`` adds batch keys per window.
    """

    def __init__(self, brain: tp.Sequence[np.ndarray], segments: pd.DataFrame,
                 targets: dict[str, tp.Sequence[tp.Any]] | None = None, vocabulary: list[str] | None = None,
                 recordings: list[FakeRecording] | None = None, spans: list[tuple[int, int, int]] | None = None,
                 timelines: list[np.ndarray] | None = None,
                 audio: dict[int, tuple[np.ndarray, float]] | None = None,
                 extra: dict[str, tp.Sequence[np.ndarray]] | None = None) -> None:
        self.brain = [np.asarray(b, dtype=np.float32) for b in brain]
        self.segments = segments.reset_index(drop=True)
        self.targets = targets or {}
        self.vocabulary = vocabulary
        self.recordings = recordings or [FakeRecording(f"rec{i}") for i in range(int(segments.recording.max()) + 1)]
        self.spans = spans
        self.timelines = timelines
        self.audio = audio
        self.extra = extra or {}

    def __len__(self) -> int:
        return len(self.brain)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        brain = torch.from_numpy(np.stack([self.brain[i] for i in indices]))
        batch: dict[str, torch.Tensor] = {
            "brain": brain,
            "mask": torch.ones(len(indices), brain.shape[1] if brain.dim() > 2 else 1, dtype=torch.bool),
            "positions": torch.zeros(len(indices), 1, 2),
            "subject_index": torch.zeros(len(indices), dtype=torch.long),
            "index": torch.tensor(indices, dtype=torch.long)}
        for key, values in self.targets.items():
            batch[key] = torch.as_tensor(np.stack([np.asarray(values[i]) for i in indices]))
        for key, values in self.extra.items():
            batch[key] = torch.from_numpy(np.stack([np.asarray(values[i], dtype=np.float32) for i in indices]))
        return batch

    def target_span(self, index: int) -> tuple[int, int, int]:
        assert self.spans is not None
        return self.spans[index]

    def speech_timeline(self, recording: int) -> np.ndarray:
        assert self.timelines is not None
        return np.asarray(self.timelines[recording], dtype=np.float32)

    def feature_window(self, index: int) -> np.ndarray:
        return np.asarray(self.targets["features"][index], dtype=np.float32)

    def reference_audio(self, index: int) -> tuple[np.ndarray, float] | None:
        return None if self.audio is None else self.audio.get(index)


class Echo(torch.nn.Module):
    """Returns its ``brain`` input (a parameter makes it a real module); with ``wave`` also a ``waveform``."""

    def __init__(self, inputs: tuple[str, ...] = ("brain",)) -> None:
        super().__init__()
        self.inputs = inputs
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, brain: torch.Tensor, wave: torch.Tensor | None = None) -> tp.Any:
        out = brain * self.scale
        if wave is None:
            return out
        return {"output": out, "waveform": wave}


def segments(n: int, recording: tp.Sequence[int] | None = None, subject: tp.Sequence[str] | None = None,
             **columns: tp.Sequence[tp.Any]) -> pd.DataFrame:
    """A segments table of ``n`` windows with the contract's columns."""
    recording = list(recording if recording is not None else [0] * n)
    subject = list(subject if subject is not None else ["01"] * n)
    table = pd.DataFrame({"recording": recording, "start": np.arange(n) * 10, "subject": subject,
                          "study": "toy", "recording_uid": [f"rec{r}" for r in recording]})
    for key, values in columns.items():
        table[key] = list(values)
    return table
