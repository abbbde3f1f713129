"""LibriBrain 2025 submission files, in the competition's formats, from a trained XP.

- Phoneme classification: ``segment_idx, phoneme_1, ..., phoneme_39``, one row per segment (window or, for the
  2025 holdout, pre-averaged group) in dataset order; ``phoneme_j`` is the probability of the j-th class of
  :data:`bm2.events.ARPABET` (pnpl's id order ``aa ae ah ... zh``). Classes that the model never learnt (absent from
  its training vocabulary) get probability 0; each row sums to 1.
- Speech detection: ``idx, speech_prob``, one row per sample of the recording; the windows' per-sample
  probabilities are averaged where windows overlap, and samples no window covers take the nearest covered value.

The functions take any dataset of bm2's spine (the windows of a split): the holdout itself is not available here;
point the XP's configuration at it with overrides (e.g. ``dset.selections=[...]``) and choose its split.
``scripts/libribrain_submission.py`` is the command line.
"""

from __future__ import annotations

import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..events import ARPABET
from .base import OUTPUT, atomic_write, model_outputs
from .classification import pooled_logits
from .detection import speech_probability

PHONEME_COLUMNS = ["segment_idx"] + [f"phoneme_{i + 1}" for i in range(len(ARPABET))]
SPEECH_COLUMNS = ["idx", "speech_prob"]


class SubmissionError(ValueError):
    """A submission cannot be written; the message says why."""


def phoneme_submission(probs: np.ndarray, vocabulary: tp.Sequence[str]) -> pd.DataFrame:
    """The phoneme table from ``[N, C]`` class probabilities whose columns are the classes of ``vocabulary``
    (ARPABET symbols, any case; ``ah_B``-style position tags are stripped)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(vocabulary):
        raise SubmissionError(f"probabilities of shape {probs.shape} do not match the {len(vocabulary)} classes")
    index = {p: i for i, p in enumerate(ARPABET)}
    columns = []
    for name in vocabulary:
        symbol = str(name).split("_")[0].upper()
        if symbol not in index:
            raise SubmissionError(f"class {name!r} is not one of the 39 ARPABET phonemes: not a phoneme XP?")
        columns.append(index[symbol])
    out = np.zeros((len(probs), len(ARPABET)))
    for j, col in enumerate(columns):
        out[:, col] += probs[:, j]
    table = pd.DataFrame(out, columns=PHONEME_COLUMNS[1:])
    table.insert(0, "segment_idx", np.arange(len(probs)))
    return table


def speech_submission(prob: np.ndarray) -> pd.DataFrame:
    """The speech table from a per-sample probability timeline (NaN: uncovered, filled from the nearest covered
    sample; 0.5 when nothing is covered)."""
    series = pd.Series(np.asarray(prob, dtype=np.float64).reshape(-1))
    series = series.ffill().bfill().fillna(0.5)
    return pd.DataFrame({"idx": np.arange(len(series)), "speech_prob": series.to_numpy()})


def phoneme_probabilities(model: torch.nn.Module, dataset: tp.Any, batch_size: int = 128,
                          device: str | torch.device = "cpu", addons: tp.Callable | None = None) -> np.ndarray:
    """Softmax class probabilities ``[N, C]`` of every item of ``dataset``, in order; ``addons``
    (:class:`bm2.tasks.inference.InferenceAddOns`) denoises / augments the inputs first."""
    parts = []
    for _, outputs in model_outputs(model, dataset, batch_size, device, runner=addons):
        parts.append(torch.softmax(pooled_logits(outputs[OUTPUT]).float(), dim=-1).cpu().numpy())
    return np.concatenate(parts)


def speech_timeline(model: torch.nn.Module, dataset: tp.Any, recording: int | None = None, batch_size: int = 128,
                    device: str | torch.device = "cpu") -> np.ndarray:
    """Mean speech probability per sample of one recording of ``dataset`` (NaN where no window covers it);
    ``recording`` (index in ``dataset.recordings``) may be left out when the windows span a single one."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for batch, outputs in model_outputs(model, dataset, batch_size, device):
        prob = speech_probability(outputs[OUTPUT])
        for row, index in enumerate(batch["index"].tolist()):
            rec, first, length = dataset.target_span(int(index))
            if rec not in sums:
                n = int(dataset.recordings[rec].n_times)
                sums[rec], counts[rec] = np.zeros(n), np.zeros(n, dtype=np.int64)
            sums[rec][first:first + length] += prob[row, :length]
            counts[rec][first:first + length] += 1
    if recording is None:
        if len(sums) != 1:
            uids = [dataset.recordings[r].uid for r in sorted(sums)]
            raise SubmissionError(f"the windows span {len(sums)} recordings ({uids}): the speech submission is per "
                                  "recording; choose one")
        recording = next(iter(sums))
    if recording not in sums:
        raise SubmissionError(f"no window of recording {recording}")
    mean = np.full(len(sums[recording]), np.nan)
    np.divide(sums[recording], counts[recording], out=mean, where=counts[recording] > 0)
    return mean


def write_csv(table: pd.DataFrame, out: str | Path) -> Path:
    """Write ``table`` to ``out`` atomically (no index)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: table.to_csv(f, index=False))
    return out


def submission_from_xp(xp: tp.Any, out: str | Path, split: str = "test", overrides: tp.Sequence[str] = (),
                       device: str = "cpu", batch_size: int = 128, addons: tp.Sequence[str] = ()) -> pd.DataFrame:
    """Rebuild an XP (a Dora XP or its folder) from its checkpoint, apply ``overrides`` (``key=value``, e.g. data
    pointing at the holdout) to its configuration, predict the windows of ``split`` and write the submission of its
    task (classification: phonemes, detection: speech) to ``out``. ``addons`` (``denoise``, ``tta``; phonemes
    only) predicts with those inference add-ons together (DeMEGa's submissions used the denoising)."""
    from ..solvers.base import load_checkpoint
    from .evaluate import _xp_identity, checkpoint_config, rebuild

    _, folder, _, paths = _xp_identity(xp)
    ckpt = load_checkpoint(folder / "checkpoint.th")
    cfg = checkpoint_config(ckpt, paths, overrides)
    if addons:  # only those asked for: the XP's own test.* settings give their parameters
        for name in ("denoise", "tta"):
            if name not in addons and name in cfg.get("test", {}):
                cfg.test[name].enabled = False
    rebuilt = rebuild(ckpt, cfg, device, addons)
    dataset = rebuilt.datasets[split]
    task = str(cfg.test.get("task", "retrieval"))
    if task == "classification":
        vocabulary = rebuilt.datasets.vocabulary
        variant = rebuilt.inference[-1] if addons else None  # the last variant combines every add-on asked for
        probs = phoneme_probabilities(rebuilt.model, dataset, batch_size, device, addons=variant)
        table = phoneme_submission(probs, vocabulary)
    elif task == "detection":
        table = speech_submission(speech_timeline(rebuilt.model, dataset, batch_size=batch_size, device=device))
    else:
        raise SubmissionError(f"test.task={task!r}: submissions exist for phoneme classification and speech "
                              "detection only")
    write_csv(table, out)
    return table


__all__ = ["PHONEME_COLUMNS", "SPEECH_COLUMNS", "SubmissionError", "phoneme_probabilities", "phoneme_submission",
           "speech_submission", "speech_timeline", "submission_from_xp", "write_csv"]
