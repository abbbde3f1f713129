"""Classification: one class per window (the word or phoneme at the anchor, or any events column).

The model's ``output`` is ``[B, K]`` logits, or ``[B, K, T]`` per-time logits that are averaged over time
(global average pooling: the evidence of every time step counts equally, before the softmax). ``K`` is the
size of the dataset's ``vocabulary`` (built from the training split, sorted) when it has one.

Conventions (all metrics from scikit-learn)
-------------------------------------------
- Windows whose ``label`` is -1 (not in the training vocabulary) are left out of every metric and counted as
  ``n_unseen``; they stay in ``items.csv`` with an empty ``correct``.
- ``top1`` (also ``accuracy``) scores the argmax (the first class on ties), like ``prediction`` in ``items.csv``;
  ``top<k>`` for k > 1 is ``top_k_accuracy_score(labels=range(K))``, and 1 when k >= K.
- ``balanced_accuracy`` and ``f1_macro`` average over the classes **present in the test labels**
  (``labels=`` those classes, ``zero_division=0``): a class absent from the test set has no recall to
  average, so it does not enter the mean; predicting it is still an error that lowers the recall (and F1) of
  the true class. ``per_class.csv`` lists every class of the vocabulary (support 0 for the absent ones).
- Chance levels: ``chance_top<k>`` = min(k / K, 1) (uniform guessing); ``chance_balanced_accuracy`` =
  1 / (classes present), the best any guess that ignores the brain reaches; ``chance_f1_macro`` = F1-macro of
  uniform guessing, from its expected confusion matrix (class c of test frequency p: F1 = 2p / (1 + K p));
  ``chance_majority`` (and ``chance_majority_f1_macro``) = always answering the most frequent **training**
  class when the training labels are given (``train=``), else the most frequent test class;
  ``chance_adjusted`` = the smallest accuracy above chance at p < ``alpha`` for n test windows and K classes
  (binomial inverse CDF, Combrisson & Jerbi 2015, J. Neurosci. Methods 250: 126-136): an accuracy must
  exceed it to be significant; ``chance_adjusted_majority`` uses the majority rate as the null's success
  probability (stricter when the classes are imbalanced); ``top1_p_value`` is the binomial tail
  P(X >= hits) under p = 1 / K.

Outputs (:meth:`ClassificationResult.save`): ``items.csv``, ``probs.npy`` (softmax) and ``logits.npy`` (the
pooled logits, what stacking over models reads: ``bm2.stacking``), both row-aligned with ``items.csv``, whose
``recording_uid`` / ``start`` / ``members`` identify each window or group across XPs, ``confusion.csv`` (true
classes as rows, predictions as columns), ``per_class.csv`` and ``summary.json``.

Inference add-ons (``test.denoise``, ``test.tta``; :mod:`bm2.tasks.inference`): ``evaluate(..., addons=...)`` scores
the denoised / augmented inputs instead (``logits.npy`` then holds the combined scores); the solver and the offline
evaluation add each variant's metrics to the plain ones under its suffix (:func:`addon_metrics`: ``f1_macro_tta``
...) and :func:`classification_table` gives them one row each.
"""

from __future__ import annotations

import dataclasses
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..metrics import bootstrap_ci
from .base import OUTPUT, QuickResult, Task, atomic_write, model_outputs, write_probs, write_summary


def pooled_logits(output: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` float32 logits on the CPU from ``[B, K]`` or ``[B, K, T]`` (mean over time)."""
    if output.dim() == 3:
        output = output.float().mean(dim=-1)
    if output.dim() != 2:
        raise ValueError(f"classification logits must be [B, K] or [B, K, T], got {tuple(output.shape)}")
    return output.detach().float().cpu()


def batch_labels(batch: dict[str, torch.Tensor], dataset: tp.Any) -> np.ndarray:
    """The class ids of a batch: its ``label`` key, else the ``label`` column of ``dataset.segments``."""
    if "label" in batch:
        return batch["label"].detach().cpu().numpy().astype(np.int64)
    index = batch["index"].cpu().numpy()
    return dataset.segments["label"].to_numpy(dtype=np.int64)[index]


def _present(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels)


def core_metrics(prediction: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and F1-macro over the classes present in ``labels`` (all seen, >= 0)."""
    from sklearn.metrics import accuracy_score, f1_score, recall_score

    if len(labels) == 0:
        return {"accuracy": float("nan"), "top1": float("nan"), "balanced_accuracy": float("nan"),
                "f1_macro": float("nan")}
    present = _present(labels)
    acc = float(accuracy_score(labels, prediction))
    # balanced accuracy = macro recall over the true classes (sklearn's balanced_accuracy_score definition,
    # which warns when a prediction is a class absent from the test labels; the value is the same)
    bal = float(recall_score(labels, prediction, labels=present, average="macro", zero_division=0))
    f1 = float(f1_score(labels, prediction, labels=present, average="macro", zero_division=0))
    return {"accuracy": acc, "top1": acc, "balanced_accuracy": bal, "f1_macro": f1}


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Top-k accuracy of ``[N, K]`` scores (sklearn's ``top_k_accuracy_score`` for 1 < k < K)."""
    from sklearn.metrics import accuracy_score, top_k_accuracy_score

    n_classes = scores.shape[1]
    if len(labels) == 0:
        return float("nan")
    if k >= n_classes:
        return 1.0
    if k == 1:
        return float(accuracy_score(labels, scores.argmax(axis=1)))
    return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(n_classes)))


def chance_metrics(labels: np.ndarray, n_classes: int, ks: tp.Sequence[int] = (1, 5),
                   prior: np.ndarray | None = None, alpha: float = 0.05) -> dict[str, float]:
    """Chance levels of classifying ``labels`` (seen test labels) among ``n_classes`` (module docstring).

    ``prior`` holds the training count of each class (length ``n_classes``); without it the majority class is
    the most frequent test class.
    """
    from scipy.stats import binom
    from sklearn.metrics import f1_score

    n = len(labels)
    out: dict[str, float] = {f"chance_top{k}": min(k / n_classes, 1.0) for k in ks}
    out["chance_accuracy"] = out["chance_top1"] = 1.0 / n_classes
    if n == 0:
        return out
    present = _present(labels)
    freq = np.bincount(labels, minlength=n_classes)[present] / n
    out["chance_balanced_accuracy"] = 1.0 / len(present)
    out["chance_f1_macro"] = float(np.mean(2 * freq / (1 + n_classes * freq)))
    counts = np.bincount(labels, minlength=n_classes) if prior is None else np.asarray(prior)
    majority = int(np.argmax(counts))
    constant = np.full(n, majority)
    out["chance_majority"] = float(np.mean(labels == majority))
    out["chance_majority_f1_macro"] = float(f1_score(labels, constant, labels=present, average="macro",
                                                     zero_division=0))
    out["chance_adjusted"] = float(binom.ppf(1 - alpha, n, 1.0 / n_classes) / n)
    out["chance_adjusted_majority"] = float(binom.ppf(1 - alpha, n, max(out["chance_majority"], 1.0 / n_classes))
                                            / n)
    return out


def classification_metrics(scores: np.ndarray, labels: np.ndarray, ks: tp.Sequence[int] = (1, 5),
                           prior: np.ndarray | None = None, alpha: float = 0.05, n_boot: int = 1000
                           ) -> dict[str, float]:
    """Every metric of ``[N, K]`` scores (logits or probabilities) against ``labels`` (-1: unseen, left out).

    Returns fractions: ``top1`` / ``accuracy``, ``top<k>``, ``balanced_accuracy``, ``f1_macro``, the chance
    levels of :func:`chance_metrics`, ``top1_p_value``, bootstrap intervals ``top1_ci_low`` / ``top1_ci_high``
    (``n_boot`` > 0) and the counts ``n_items``, ``n_unseen``, ``n_scored``, ``n_classes``,
    ``n_classes_present``.
    """
    from scipy.stats import binom

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = scores.shape[1]
    if labels.max(initial=-1) >= n_classes:
        raise ValueError(f"label {labels.max()} out of range for {n_classes} classes")
    seen = labels >= 0
    y, s = labels[seen], scores[seen]
    ks = sorted(set(ks) | {1, 5})
    prediction = s.argmax(axis=1)
    out = core_metrics(prediction, y)
    for k in ks:
        out[f"top{k}"] = topk_accuracy(s, y, k)
    out.update(chance_metrics(y, n_classes, ks, prior, alpha))
    n = len(y)
    hits = int((prediction == y).sum())
    out["top1_p_value"] = float(binom.sf(hits - 1, n, 1.0 / n_classes)) if n else float("nan")
    if n_boot:
        out["top1_ci_low"], out["top1_ci_high"] = bootstrap_ci((prediction == y).astype(np.float64), n_boot)
    out.update(n_items=float(len(labels)), n_unseen=float((~seen).sum()), n_scored=float(n),
               n_classes=float(n_classes), n_classes_present=float(len(_present(y))))
    return out


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64, shifted by the row maximum)."""
    z = np.asarray(scores, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def class_prior(train: tp.Any, n_classes: int) -> np.ndarray | None:
    """Training count of each class: ``train`` is an array of counts or a dataset with ``segments.label``."""
    if train is None:
        return None
    if isinstance(train, np.ndarray):
        return train
    labels = train.segments["label"].to_numpy(dtype=np.int64)
    labels = labels[(labels >= 0) & (labels < n_classes)]
    return np.bincount(labels, minlength=n_classes) if len(labels) else None


@dataclasses.dataclass
class ClassificationResult:
    """Everything the classification evaluation produces for one XP (see the module docstring)."""

    task: tp.ClassVar[str] = "classification"

    metrics: dict[str, float]
    groups: dict[str, dict[str, dict[str, float]]]
    items: pd.DataFrame
    confusion: pd.DataFrame
    per_class: pd.DataFrame
    probs: np.ndarray | None = None
    logits: np.ndarray | None = None

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write ``items.csv``, ``probs.npy``, ``logits.npy``, ``confusion.csv``, ``per_class.csv`` and
        ``summary.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_probs(folder, self.probs)
        if self.logits is not None:
            logits = self.logits.astype(np.float32)
            atomic_write(folder / "logits.npy", lambda f: np.save(f, logits))
        else:  # an older file would not match these items (stacking reads it)
            (folder / "logits.npy").unlink(missing_ok=True)
        atomic_write(folder / "items.csv", lambda f: self.items.to_csv(f, index=False))
        atomic_write(folder / "confusion.csv", lambda f: self.confusion.to_csv(f))
        atomic_write(folder / "per_class.csv", lambda f: self.per_class.to_csv(f, index=False))
        write_summary(folder, "classification", meta, self.metrics, self.groups)


class ClassificationAccumulator:
    """Streaming classification metrics: keeps the predicted and true class of every window (cheap)."""

    def __init__(self, dataset: tp.Any = None, keep_scores: bool = False) -> None:
        self.dataset = dataset
        self.keep_scores = keep_scores
        self.scores: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.index: list[np.ndarray] = []

    def update(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Add the pooled logits of one batch."""
        logits = pooled_logits(outputs[OUTPUT])
        self.predictions.append(logits.argmax(dim=1).numpy())
        self.labels.append(batch_labels(batch, self.dataset))
        self.index.append(batch["index"].cpu().numpy())
        if self.keep_scores:
            self.scores.append(logits.numpy())

    def compute(self) -> dict[str, float]:
        """``accuracy`` (= ``top1``), ``balanced_accuracy``, ``f1_macro`` of the seen windows and ``n_unseen``."""
        pred, labels = np.concatenate(self.predictions), np.concatenate(self.labels)
        seen = labels >= 0
        out = core_metrics(pred[seen], labels[seen])
        out["n_unseen"] = float((~seen).sum())
        return out


def _names(dataset: tp.Any, n_classes: int) -> list[str]:
    vocabulary = getattr(dataset, "vocabulary", None)
    if vocabulary is None:
        return [str(i) for i in range(n_classes)]
    if len(vocabulary) != n_classes:
        raise ValueError(f"the model gives {n_classes} class scores but the vocabulary has {len(vocabulary)} "
                         "classes: build the model with the vocabulary size (datasets' vocabulary)")
    return [str(v) for v in vocabulary]


def _groups(items: pd.DataFrame, group_by: tp.Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[str, dict[str, dict[str, float]]] = {}
    seen = items[items["label"] >= 0]
    for col in group_by:
        if col not in seen.columns:
            continue
        groups[col] = {}
        for value, part in seen.groupby(seen[col].astype(str), sort=True):
            metrics = core_metrics(part["prediction"].to_numpy(), part["label"].to_numpy())
            metrics["n_scored"] = float(len(part))
            groups[col][str(value)] = metrics
    return groups


def evaluate_classification(scores: np.ndarray, labels: np.ndarray, segments: pd.DataFrame,
                            names: tp.Sequence[str], ks: tp.Sequence[int] = (1, 5), prior: np.ndarray | None = None,
                            keep_probs: bool = True, n_boot: int = 1000, alpha: float = 0.05,
                            group_by: tp.Sequence[str] = ("subject", "study")) -> ClassificationResult:
    """The full result from ``[N, K]`` scores, labels and the segments rows of the N windows (in order).

    ``keep_probs`` keeps the softmax of the scores and the scores themselves (``probs.npy``, ``logits.npy``)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    n_classes = scores.shape[1]
    metrics = classification_metrics(scores, labels, ks, prior, alpha, n_boot)
    probs = softmax(scores)
    prediction = probs.argmax(axis=1)
    seen = labels >= 0
    index = segments["index"].to_numpy() if "index" in segments.columns else np.arange(len(segments))
    items = pd.DataFrame({"index": index})
    for col in ("subject", "study", "recording_uid", "start", "members", "group_size"):  # members: dset.grouping
        if col in segments.columns:
            items[col] = segments[col].to_numpy()
    items["label"] = labels
    if "label_name" in segments.columns:
        items["label_name"] = segments["label_name"].astype(str).to_numpy()
    else:
        items["label_name"] = [names[i] if i >= 0 else "" for i in labels]
    items["prediction"] = prediction
    items["prediction_name"] = [names[i] for i in prediction]
    items["p_true"] = np.where(seen, probs[np.arange(len(labels)), np.clip(labels, 0, None)], np.nan)
    correct = pd.array(prediction == labels, dtype="boolean")
    correct[~seen] = pd.NA  # unseen classes are not scored
    items["correct"] = correct
    classes = np.arange(n_classes)
    y, p = labels[seen], prediction[seen]
    confusion = pd.DataFrame(confusion_matrix(y, p, labels=classes), index=pd.Index(names, name="true"),
                             columns=list(names))
    with warnings.catch_warnings():  # classes absent from the test set have no recall: zero_division covers it
        warnings.simplefilter("ignore")
        precision, recall, f1, support = precision_recall_fscore_support(y, p, labels=classes, zero_division=0)
    per_class = pd.DataFrame({"class": classes, "name": list(names), "precision": precision, "recall": recall,
                              "f1": f1, "support": support, "predicted": np.bincount(p, minlength=n_classes)})
    if prior is not None:
        per_class["train_count"] = np.asarray(prior)
    return ClassificationResult(metrics, _groups(items, group_by), items, confusion, per_class,
                                probs.astype(np.float32) if keep_probs else None,
                                np.asarray(scores, dtype=np.float32) if keep_probs else None)


def classification_table(metrics: dict[str, float]) -> str:
    """Markdown table of the headline test metrics (%) next to chance, and the majority / adjusted levels."""
    ks = sorted(int(k[3:]) for k in metrics if k.startswith("top") and k[3:].isdigit())
    rows = [(f"top-{k}", f"top{k}", f"chance_top{k}") for k in ks]
    rows += [("balanced accuracy", "balanced_accuracy", "chance_balanced_accuracy"),
             ("F1-macro", "f1_macro", "chance_f1_macro")]

    def pct(key: str) -> str:
        value = metrics.get(key)
        return "–" if value is None or value != value else f"{100 * value:.1f}"

    lines = ["| metric | test % | chance % |", "|---|---:|---:|"]
    lines += [f"| {name} | {pct(key)} | {pct(chance)} |" for name, key, chance in rows]
    lines.append(f"| majority class: accuracy / F1-macro | – | {pct('chance_majority')} / "
                 f"{pct('chance_majority_f1_macro')} |")
    lines.append(f"| adjusted chance (binomial, p < 0.05) | – | {pct('chance_adjusted')} |")
    n = int(metrics.get("n_scored", 0))
    note = (f"\n{n} windows, {int(metrics.get('n_classes', 0))} classes ({int(metrics.get('n_classes_present', 0))} "
            f"in the test set); left out: {int(metrics.get('n_unseen', 0))} windows of a class unseen in training")
    return "\n".join(lines) + note + addons_table(metrics)


#: metric-name suffixes of the inference add-ons (:mod:`bm2.tasks.inference`) and their row labels
ADDON_ROWS = (("", "none"), ("_denoise", "wavelet denoising"), ("_tta", "test-time augmentation"),
              ("_denoise_tta", "wavelet denoising + test-time augmentation"))


def addon_metrics(plain: dict[str, float], variant: dict[str, float], suffix: str) -> dict[str, float]:
    """``plain`` plus the metrics of an add-on ``variant`` under ``<name><suffix>`` (chance levels and counts,
    identical for every variant, are not repeated)."""
    out = dict(plain)
    out.update({f"{k}{suffix}": v for k, v in variant.items() if not k.startswith(("chance_", "n_"))})
    return out


def addons_table(metrics: dict[str, float]) -> str:
    """Markdown rows of top-1, balanced accuracy and F1-macro (%) without and with each inference add-on present
    in ``metrics`` (keys ``f1_macro_tta`` ...); empty when none was evaluated."""
    rows = [(label, suffix) for suffix, label in ADDON_ROWS if f"f1_macro{suffix}" in metrics]
    if len(rows) < 2:
        return ""

    def pct(key: str) -> str:
        value = metrics.get(key)
        return "–" if value is None or value != value else f"{100 * value:.1f}"

    lines = ["", "", "| inference add-on | top-1 % | balanced accuracy % | F1-macro % |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {pct('top1' + s)} | {pct('balanced_accuracy' + s)} | {pct('f1_macro' + s)} |"
              for label, s in rows]
    return "\n".join(lines)


class ClassificationTask(Task):
    """One class per window: top-k, balanced accuracy, F1-macro, confusion, per-class table and chance levels.

    The best epoch is chosen by validation ``f1_macro`` (max): it is the metric of the methods it serves
    (LibriBrain's phoneme task), and unlike accuracy it does not reward predicting the frequent classes only.
    """

    name = "classification"
    targets = ("label",)
    per_sample = False
    valid_metrics = ("accuracy", "top1", "balanced_accuracy", "f1_macro")
    headline = ("top1", "top5", "balanced_accuracy", "f1_macro")
    main_metric = "top1"
    best = ("f1_macro", "max")

    def accumulator(self, dataset: tp.Any = None, **kwargs: tp.Any) -> ClassificationAccumulator:
        return ClassificationAccumulator(dataset, **kwargs)

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None, *,
                 ks: tp.Sequence[int] = (1, 5), keep_probs: bool = True, batch_size: int = 128,
                 device: str | torch.device = "cpu", num_workers: int = 0, n_boot: int = 1000,
                 quick: bool = False, train: tp.Any = None, alpha: float = 0.05,
                 addons: tp.Callable | None = None, **kwargs: tp.Any) -> ClassificationResult | QuickResult:
        """Classify every window of ``dataset``; ``train`` (training split or class counts) sets the majority
        class; ``quick`` returns only accuracy, balanced accuracy and F1-macro (``scorer`` is unused);
        ``addons`` (:class:`bm2.tasks.inference.InferenceAddOns`) denoises and / or augments the inputs at test
        time (the scores are then the combined views')."""
        kwargs.pop("objective", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for the classification task: {sorted(kwargs)}")
        if quick:
            if addons is not None:
                raise ValueError("inference add-ons apply to the full test evaluation, not to quick=True")
            return QuickResult(self.name, self.quick_metrics(model, dataset, batch_size, device, num_workers))
        acc = ClassificationAccumulator(dataset, keep_scores=True)
        for batch, outputs in model_outputs(model, dataset, batch_size, device, num_workers, runner=addons):
            acc.update(batch, outputs)
        scores, labels = np.concatenate(acc.scores), np.concatenate(acc.labels)
        index = np.concatenate(acc.index)
        names = _names(dataset, scores.shape[1])
        segments = dataset.segments.iloc[index].reset_index(drop=True)
        segments.insert(0, "index", index)
        return evaluate_classification(scores, labels, segments, names, ks, class_prior(train, len(names)),
                                       keep_probs, n_boot, alpha)

    def table(self, metrics: dict[str, float]) -> str:
        return classification_table(metrics)
