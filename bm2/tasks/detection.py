"""Speech detection: is speech heard at each brain sample? Scored per sample of the recordings' timelines.

The model's ``output`` is ``[B, T']`` or ``[B, 1, T']`` logits; their sigmoid is the probability of speech at
each sample of the window's target span (``dataset.target_span(index)`` gives the recording and the samples).
Windows overlap (strided windows), so the probabilities are **averaged back onto each recording's sample
timeline** (a sum and a count per sample), thresholded (speech where the mean probability >= ``threshold``,
0.5 by default) and compared with ``dataset.speech_timeline(recording)`` on the samples that some window
covers. Every metric pools the covered samples of all test recordings (per recording and per subject in
``groups``).

Metrics (scikit-learn): ``f1_macro`` (F1 of speech and of silence, averaged; ``labels=[0, 1]``,
``zero_division=0``, so a class absent from the truth counts as 0), ``f1_speech``, ``accuracy``,
``balanced_accuracy`` (macro recall over the classes present), ``roc_auc`` (of the mean probabilities; NaN when
the truth has one class).

Chance levels: ``chance_f1_macro`` is the expected F1-macro of a guess that says "speech" at random with
probability equal to the test speech prior ``p`` (from its expected confusion matrix: F1 speech = p,
F1 silence = 1 - p, so 0.5 whatever the prior); ``chance_majority_f1_macro`` is the F1-macro of answering the
majority class of the test truth everywhere (p_m / (1 + p_m)); ``chance_accuracy`` = max(p, 1 - p),
``chance_balanced_accuracy`` = ``chance_roc_auc`` = 0.5.

Outputs (:meth:`DetectionResult.save`): ``timelines.npz`` (for each recording uid ``prob_<uid>``: mean
probability per sample, NaN where no window covers it, and ``truth_<uid>``: 0 / 1, int8), ``recordings.csv``
(per recording: metrics, sample rate, covered samples), ``items.csv`` (per window: span, mean probability,
speech fraction of the truth) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import io
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .base import OUTPUT, QuickResult, Task, atomic_write, model_outputs, write_summary


def speech_probability(output: torch.Tensor) -> np.ndarray:
    """``[B, T']`` float64 probabilities (sigmoid) from ``[B, T']`` or ``[B, 1, T']`` logits."""
    if output.dim() == 3 and output.shape[1] == 1:
        output = output[:, 0]
    if output.dim() != 2:
        raise ValueError(f"detection logits must be [B, T'] or [B, 1, T'], got {tuple(output.shape)}")
    return torch.sigmoid(output.detach().float()).cpu().numpy().astype(np.float64)


def detection_metrics(truth: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Per-sample metrics of probabilities ``prob`` against 0 / 1 ``truth`` (module docstring), as fractions."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

    truth = np.asarray(truth).astype(np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    n = len(truth)
    out: dict[str, float] = {"n_samples": float(n), "n_speech": float(truth.sum())}
    if n == 0:
        return {**out, **{k: float("nan") for k in ("f1_macro", "f1_speech", "accuracy", "balanced_accuracy",
                                                      "roc_auc", "speech_prior")}}
    pred = (prob >= threshold).astype(np.int64)
    present = np.unique(truth)
    out["f1_macro"] = float(f1_score(truth, pred, labels=[0, 1], average="macro", zero_division=0))
    out["f1_speech"] = float(f1_score(truth, pred, labels=[1], average="macro", zero_division=0))
    out["accuracy"] = float(accuracy_score(truth, pred))
    out["balanced_accuracy"] = float(recall_score(truth, pred, labels=present, average="macro", zero_division=0))
    out["roc_auc"] = float(roc_auc_score(truth, prob)) if len(present) == 2 else float("nan")
    p = float(truth.mean())
    out["speech_prior"] = p
    out.update(chance_detection(truth))
    return out


def random_f1_macro(p: float, q: float) -> float:
    """Expected F1-macro of guessing speech with probability ``q`` when a fraction ``p`` of samples is speech.

    From the expected confusion matrix (per sample: TP = p q, FP = (1 - p) q, FN = p (1 - q)); a class with
    no sample and no guess counts 0 (``zero_division=0``).
    """
    def f1(a: float, b: float) -> float:
        return 2 * a * b / (a + b) if a + b > 0 else 0.0

    return (f1(p, q) + f1(1 - p, 1 - q)) / 2


def chance_detection(truth: np.ndarray) -> dict[str, float]:
    """Chance levels of detection on ``truth`` (module docstring)."""
    from sklearn.metrics import f1_score

    p = float(np.mean(truth))
    majority = int(p > 0.5)
    constant = np.full(len(truth), majority)
    return {"chance_f1_macro": random_f1_macro(p, p),
            "chance_majority_f1_macro": float(f1_score(truth, constant, labels=[0, 1], average="macro",
                                                       zero_division=0)),
            "chance_accuracy": max(p, 1 - p), "chance_balanced_accuracy": 0.5, "chance_roc_auc": 0.5}


class TimelineAccumulator:
    """Averages window probabilities onto each recording's sample timeline (sum and count per sample)."""

    def __init__(self, dataset: tp.Any, threshold: float = 0.5, keep_items: bool = False) -> None:
        self.dataset = dataset
        self.threshold = threshold
        self.keep_items = keep_items
        self.sums: dict[int, np.ndarray] = {}
        self.counts: dict[int, np.ndarray] = {}
        self.truth: dict[int, np.ndarray] = {}
        self.items: list[tuple[int, int, int, int, float, float]] = []

    def _timeline(self, rec: int) -> None:
        if rec not in self.sums:
            truth = np.asarray(self.dataset.speech_timeline(rec)).reshape(-1)
            self.truth[rec] = (truth >= 0.5).astype(np.int8)
            self.sums[rec] = np.zeros(len(truth), dtype=np.float64)
            self.counts[rec] = np.zeros(len(truth), dtype=np.int32)

    def update(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Add the probabilities of one batch to the timelines of their recordings."""
        prob = speech_probability(outputs[OUTPUT])
        for row, index in enumerate(batch["index"].cpu().tolist()):
            rec, first, length = (int(v) for v in self.dataset.target_span(index))
            if prob.shape[1] != length:
                raise ValueError(f"window {index}: the model gives {prob.shape[1]} samples but its target span "
                                 f"has {length}: a detection model must output one logit per target sample")
            self._timeline(rec)
            if first < 0 or first + length > len(self.sums[rec]):
                raise ValueError(f"window {index}: span [{first}, {first + length}) is outside recording {rec} "
                                 f"({len(self.sums[rec])} samples)")
            self.sums[rec][first:first + length] += prob[row]
            self.counts[rec][first:first + length] += 1
            if self.keep_items:
                speech = float(self.truth[rec][first:first + length].mean()) if length else float("nan")
                self.items.append((index, rec, first, length, float(prob[row].mean()), speech))

    def timelines(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per recording index: mean probability per sample (NaN where uncovered) and the 0 / 1 truth."""
        out = {}
        for rec in sorted(self.sums):
            count = self.counts[rec]
            mean = np.full(len(count), np.nan)
            np.divide(self.sums[rec], count, out=mean, where=count > 0)
            out[rec] = (mean, self.truth[rec])
        return out

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """Truth and mean probability of every covered sample of every recording, concatenated."""
        truth, prob = [], []
        for mean, t in self.timelines().values():
            covered = ~np.isnan(mean)
            truth.append(t[covered])
            prob.append(mean[covered])
        if not truth:
            return np.zeros(0, dtype=np.int8), np.zeros(0)
        return np.concatenate(truth), np.concatenate(prob)

    def compute(self) -> dict[str, float]:
        """:func:`detection_metrics` of the pooled timelines."""
        truth, prob = self.pooled()
        return detection_metrics(truth, prob, self.threshold)


@dataclasses.dataclass
class DetectionResult:
    """Everything the detection evaluation produces for one XP (see the module docstring)."""

    task: tp.ClassVar[str] = "detection"

    metrics: dict[str, float]
    groups: dict[str, dict[str, dict[str, float]]]
    recordings: pd.DataFrame
    items: pd.DataFrame
    timelines: dict[str, tuple[np.ndarray, np.ndarray]]

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write ``timelines.npz``, ``recordings.csv``, ``items.csv`` and ``summary.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for uid, (prob, truth) in self.timelines.items():
            arrays[f"prob_{uid}"] = prob.astype(np.float32)
            arrays[f"truth_{uid}"] = truth.astype(np.int8)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write(folder / "timelines.npz", lambda f: f.write(buffer.getbuffer()))
        atomic_write(folder / "recordings.csv", lambda f: self.recordings.to_csv(f, index=False))
        atomic_write(folder / "items.csv", lambda f: self.items.to_csv(f, index=False))
        write_summary(folder, "detection", meta, self.metrics, self.groups)


def _recording_meta(dataset: tp.Any, rec: int) -> dict[str, tp.Any]:
    """uid, subject and study of recording ``rec`` (from the recording, else from the segments table)."""
    recording = dataset.recordings[rec]
    out: dict[str, tp.Any] = {"recording": rec, "recording_uid": str(getattr(recording, "uid", rec)),
                              "sample_rate": float(getattr(recording, "sample_rate", float("nan")))}
    rows = dataset.segments[dataset.segments["recording"] == rec]
    for col in ("subject", "study"):
        if col in rows.columns and len(rows):
            out[col] = rows[col].iloc[0]
    return out


def detection_result(acc: TimelineAccumulator) -> DetectionResult:
    """The full result of a :class:`TimelineAccumulator` that was fed the whole test split."""
    dataset = acc.dataset
    timelines = acc.timelines()
    rows = []
    truths, probs, keys = [], [], []
    for rec, (mean, truth) in timelines.items():
        covered = ~np.isnan(mean)
        meta = _recording_meta(dataset, rec)
        metrics = detection_metrics(truth[covered], mean[covered], acc.threshold)
        rows.append({**meta, "n_covered": int(covered.sum()), "n_times": len(mean), **metrics})
        truths.append(truth[covered])
        probs.append(mean[covered])
        keys.append(meta)
    recordings = pd.DataFrame(rows)
    metrics = detection_metrics(np.concatenate(truths), np.concatenate(probs), acc.threshold)
    metrics.update(n_recordings=float(len(rows)), n_windows=float(len(acc.items)), threshold=acc.threshold)
    groups: dict[str, dict[str, dict[str, float]]] = {"recording": {}}
    for meta, t, p in zip(keys, truths, probs):
        groups["recording"][meta["recording_uid"]] = _group_metrics(t, p, acc.threshold)
    for col in ("subject", "study"):
        if col not in recordings.columns:
            continue
        groups[col] = {}
        for value in sorted(recordings[col].astype(str).unique()):
            member = [i for i, m in enumerate(keys) if str(m.get(col)) == value]
            groups[col][value] = _group_metrics(np.concatenate([truths[i] for i in member]),
                                                np.concatenate([probs[i] for i in member]), acc.threshold)
    items = pd.DataFrame(acc.items, columns=["index", "recording", "first", "length", "prob_mean", "speech_fraction"])
    segments = dataset.segments
    for col in ("subject", "study", "recording_uid"):
        if col in segments.columns:
            items.insert(1, col, segments[col].to_numpy()[items["index"].to_numpy()])
    named = {str(m["recording_uid"]): timelines[m["recording"]] for m in keys}
    return DetectionResult(metrics, groups, recordings, items, named)


def _group_metrics(truth: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    m = detection_metrics(truth, prob, threshold)
    return {k: m[k] for k in ("f1_macro", "balanced_accuracy", "roc_auc", "accuracy", "n_samples", "speech_prior")}


def detection_table(metrics: dict[str, float]) -> str:
    """Markdown table of the per-sample test metrics (%) next to their chance levels."""
    def pct(key: str) -> str:
        value = metrics.get(key)
        return "–" if value is None or value != value else f"{100 * value:.1f}"

    lines = ["| metric | test % | chance % |", "|---|---:|---:|",
             f"| F1-macro | {pct('f1_macro')} | {pct('chance_f1_macro')} |",
             f"| balanced accuracy | {pct('balanced_accuracy')} | {pct('chance_balanced_accuracy')} |",
             f"| ROC AUC | {pct('roc_auc')} | {pct('chance_roc_auc')} |",
             f"| majority class F1-macro | – | {pct('chance_majority_f1_macro')} |"]
    note = (f"\n{int(metrics.get('n_samples', 0))} samples of {int(metrics.get('n_recordings', 0))} recordings, "
            f"{pct('speech_prior')} % speech; chance F1-macro: random guess at the speech prior")
    return "\n".join(lines) + note


class DetectionTask(Task):
    """Speech vs silence per sample: F1-macro of window probabilities averaged onto the sample timeline.

    The best epoch is chosen by validation ``f1_macro`` (max), the task's headline metric.
    """

    name = "detection"
    targets = ("speech",)
    valid_metrics = ("f1_macro", "f1_speech", "accuracy", "balanced_accuracy", "roc_auc")
    headline = ("f1_macro", "balanced_accuracy", "roc_auc")
    main_metric = "f1_macro"
    best = ("f1_macro", "max")

    def accumulator(self, dataset: tp.Any = None, **kwargs: tp.Any) -> TimelineAccumulator:
        return TimelineAccumulator(dataset, **kwargs)

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None, *,
                 ks: tp.Sequence[int] = (), keep_probs: bool = True, batch_size: int = 128,
                 device: str | torch.device = "cpu", num_workers: int = 0, n_boot: int = 0, quick: bool = False,
                 train: tp.Any = None, threshold: float = 0.5, **kwargs: tp.Any) -> DetectionResult | QuickResult:
        """Detect speech on every window of ``dataset``; ``quick`` returns the metrics only.

        ``scorer``, ``ks``, ``keep_probs``, ``n_boot`` and ``train`` are accepted for a uniform call and unused.
        """
        kwargs.pop("objective", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for the detection task: {sorted(kwargs)}")
        if quick:
            return QuickResult(self.name, self.quick_metrics(model, dataset, batch_size, device, num_workers,
                                                             threshold=threshold))
        acc = TimelineAccumulator(dataset, threshold, keep_items=True)
        for batch, outputs in model_outputs(model, dataset, batch_size, device, num_workers):
            acc.update(batch, outputs)
        return detection_result(acc)

    def table(self, metrics: dict[str, float]) -> str:
        return detection_table(metrics)
