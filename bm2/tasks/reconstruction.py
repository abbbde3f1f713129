"""Reconstruction: dense speech features (e.g. a mel spectrogram) decoded from the brain, and audio where it exists.

The model's ``output`` is ``[B, D, T']`` like the batch's ``features``. Scores:

- ``pcc``: Pearson correlation of each feature bin (frequency bin), computed over **all samples of all test
  windows** pooled (streaming, torchmetrics' ``PearsonCorrCoef`` in float64), then averaged over the bins
  (``per_bin.csv`` lists each bin). A bin whose prediction or target is constant has no correlation (NaN) and
  is left out of the mean (``n_bins_constant`` counts them).
- A **trial-shuffled null**: each prediction is paired with the target of another window (a random
  permutation without fixed points, ``n_null`` repeats from ``seed``) and ``pcc`` is recomputed:
  ``pcc_null_mean`` (also ``chance_pcc``, the tables' chance row) and its 95th percentile ``pcc_null_p95``;
  ``pcc_p_value`` = (1 + #{null >= pcc}) / (1 + n_null). The null keeps at most ``null_items`` windows (a seeded
  random subset; all of them when the split is smaller), cropped to the shortest window when lengths differ;
  with fewer windows the null is wider, so the bound errs on the strict side. Strided windows that overlap in
  time share target samples, which also widens the null.
- ``pcc_window`` (``items.csv``): per window, the correlation over time of each bin, averaged over the bins.
- ``pcc_trial``: per window, the correlation of the whole decoded ``[D, T]`` spectrogram with the true one
  (flattened: frequency and time together), averaged over the windows — Neural Speech Decoding's "PCC between
  decoded and true spectrograms per trial" (Chen et al. 2024) — with its own trial-shuffled null from the same
  derangements (``pcc_trial_null_mean``, ``pcc_trial_null_p95``, ``pcc_trial_p_value``).
- Audio: when the model also returns ``"waveform"`` ``[B, S]`` (decoded audio at ``audio_sample_rate`` Hz) and
  the dataset provides ``reference_audio(index) -> (audio, sample_rate) | None``, ``stoi`` is the mean STOI
  (pystoi, Taal et al. 2011) of the decoded audio (resampled to the reference rate, both cut to the shorter)
  against the reference; a window too short or too silent for STOI's 30-frame segments gets NaN. The decoded
  audio of the first ``max_audio`` windows is written as ``audio/<index>.wav`` (32-bit float), and the reference
  audio of the same windows as ``audio/<index>.true.wav``.

Figures: the true and decoded features of the first ``max_examples`` windows are kept (``examples.npz``: ``index``,
``pred``, ``target``) and drawn side by side in ``spectrograms.png`` (and in ``scripts.report``).

Outputs (:meth:`ReconstructionResult.save`): ``per_bin.csv``, ``items.csv``, ``audio/``, ``examples.npz``,
``spectrograms.png`` and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import io
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .base import OUTPUT, QuickResult, Task, atomic_write, model_outputs, write_summary

WAVEFORM = "waveform"


def _pearson(preds: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Per-column Pearson r of ``[N, D]`` tensors (torchmetrics), NaN for constant columns, float64 ``[D]``."""
    from torchmetrics.functional import pearson_corrcoef

    with warnings.catch_warnings():  # constant columns: torchmetrics warns and returns NaN, which we keep
        warnings.filterwarnings("ignore", message="The variance of predictions or target is close to zero")
        if preds.shape[1] == 1:
            return np.atleast_1d(pearson_corrcoef(preds[:, 0].double(), target[:, 0].double()).numpy())
        return pearson_corrcoef(preds.double(), target.double()).numpy().reshape(-1)


def _as_samples(x: torch.Tensor) -> torch.Tensor:
    """``[B, D, T]`` -> ``[B * T, D]`` (every time sample of every window is one observation)."""
    return x.permute(0, 2, 1).reshape(-1, x.shape[1])


class StreamingPearson:
    """Per-bin Pearson correlation over every sample of every window added (torchmetrics, float64)."""

    def __init__(self) -> None:
        self.metric: tp.Any = None
        self.n_bins = 0

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``[B, D, T]`` predictions and targets."""
        from torchmetrics.regression import PearsonCorrCoef

        if preds.shape != target.shape:
            raise ValueError(f"reconstruction output {tuple(preds.shape)} and features {tuple(target.shape)} "
                             "differ: the model must give one value per feature bin and target sample")
        if self.metric is None:
            self.n_bins = preds.shape[1]
            self.metric = PearsonCorrCoef(num_outputs=self.n_bins).double()
        x, y = _as_samples(preds.double()), _as_samples(target.double())
        if self.n_bins == 1:
            x, y = x[:, 0], y[:, 0]
        self.metric.update(x, y)

    def compute(self) -> np.ndarray:
        """``[D]`` correlations (NaN for a constant bin); empty before any update."""
        if self.metric is None:
            return np.zeros(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The variance of predictions or target is close to zero")
            return np.atleast_1d(self.metric.compute().numpy()).reshape(-1)


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(n)`` without fixed points (n >= 2): a random cycle order, shifted."""
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    partner[order] = order[(np.arange(n) + int(rng.integers(1, n))) % n]
    return partner


def shuffled_null(preds: np.ndarray, targets: np.ndarray, n_null: int = 100, seed: int = 0) -> np.ndarray:
    """``[n_null, D]`` per-bin correlations of ``[N, D, T]`` predictions paired with other windows' targets."""
    n = len(preds)
    if n < 2 or n_null <= 0:
        return np.full((0, preds.shape[1] if preds.ndim == 3 else 0), np.nan)
    rng = np.random.default_rng(seed)
    x = _as_samples(torch.from_numpy(preds))
    out = []
    for _ in range(n_null):
        partner = derangement(n, rng)
        out.append(_pearson(x, _as_samples(torch.from_numpy(targets[partner]))))
    return np.stack(out)


def flat_pearson(preds: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pearson r of each ``preds[i]`` with ``targets[i]``, both ``[N, D, T]`` flattened per window: float64 ``[N]``,
    NaN where either is constant."""
    x = preds.reshape(len(preds), -1).astype(np.float64)
    y = targets.reshape(len(targets), -1).astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    denom = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (x * y).sum(axis=1) / np.where(denom > 0, denom, 1.0), np.nan)


def trial_null(preds: np.ndarray, targets: np.ndarray, n_null: int = 100, seed: int = 0) -> np.ndarray:
    """``[n_null]`` mean :func:`flat_pearson` of ``[N, D, T]`` predictions paired with other windows' targets (the
    same derangements as :func:`shuffled_null` for the same seed)."""
    n = len(preds)
    if n < 2 or n_null <= 0:
        return np.full(0, np.nan)
    rng = np.random.default_rng(seed)
    return np.array([_mean(flat_pearson(preds, targets[derangement(n, rng)])) for _ in range(n_null)])


def pearson_metrics(r: np.ndarray, null: np.ndarray | None = None) -> dict[str, float]:
    """``pcc`` (mean over bins) and, with a ``[n_null, D]`` null, its mean, 95th percentile and p-value."""
    pcc = _mean(r)
    out = {"pcc": pcc, "n_bins": float(len(r)), "n_bins_constant": float(np.isnan(r).sum())}
    if null is not None and len(null):
        means = np.array([_mean(row) for row in null])
        finite = means[np.isfinite(means)]
        out.update(pcc_null_mean=_mean(finite),
                   pcc_null_p95=float(np.percentile(finite, 95)) if len(finite) else float("nan"),
                   pcc_p_value=float((1 + np.sum(finite >= pcc)) / (1 + len(finite))), n_null=float(len(finite)))
        out["chance_pcc"] = out["pcc_null_mean"]
    return out


def stoi_score(decoded: np.ndarray, decoded_rate: float, reference: np.ndarray, reference_rate: float) -> float:
    """STOI (pystoi) of ``decoded`` audio against ``reference``; NaN when too short to score."""
    from pystoi import stoi

    ref = np.asarray(reference, dtype=np.float64)
    if ref.ndim == 2:  # channels first or last: mix to mono
        ref = ref.mean(axis=0 if ref.shape[0] < ref.shape[1] else 1)
    dec = np.asarray(decoded, dtype=np.float64).reshape(-1)
    if int(decoded_rate) != int(reference_rate):
        import julius

        dec = julius.resample_frac(torch.from_numpy(dec).float(), int(decoded_rate), int(reference_rate)
                                   ).double().numpy()
    n = min(len(ref), len(dec))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref[:n], dec[:n], int(reference_rate), extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return float("nan")
    return value


class ReconstructionAccumulator:
    """Streaming ``pcc`` per bin (and per subject), plus what the full evaluation keeps (null subset, audio)."""

    def __init__(self, dataset: tp.Any = None, full: bool = False, null_items: int = 1000, seed: int = 0,
                 audio_sample_rate: float | None = None, max_audio: int = 100, max_examples: int = 4) -> None:
        self.dataset = dataset
        self.full = full
        self.pearson = StreamingPearson()
        self.by_subject: dict[str, StreamingPearson] = {}
        self.items: list[dict[str, tp.Any]] = []
        self.null_pred: list[np.ndarray] = []
        self.null_target: list[np.ndarray] = []
        self.audio: list[tuple[int, np.ndarray]] = []
        self.references: list[tuple[int, np.ndarray, float]] = []
        self.audio_sample_rate = audio_sample_rate
        self.max_audio = max_audio
        self.max_examples = max_examples
        self.examples: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.keep: set[int] = set()
        if full and dataset is not None:
            n = len(dataset)
            rng = np.random.default_rng(seed)
            self.keep = set(range(n)) if n <= null_items else set(rng.choice(n, null_items, replace=False).tolist())

    def update(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> None:
        """Add one batch of predicted and true features (and decoded audio)."""
        preds = outputs[OUTPUT].detach().float().cpu()
        target = batch["features"].float().cpu()
        self.pearson.update(preds, target)
        if not self.full:
            return
        index = batch["index"].cpu().tolist()
        segments = self.dataset.segments
        subjects = segments["subject"].astype(str).to_numpy()[index] if "subject" in segments else None
        if subjects is not None:
            for subject in dict.fromkeys(subjects):
                rows = torch.from_numpy(np.flatnonzero(subjects == subject))
                self.by_subject.setdefault(str(subject), StreamingPearson()).update(preds[rows], target[rows])
        waveform = outputs.get(WAVEFORM)
        if waveform is not None and self.audio_sample_rate is None:
            raise ValueError("the model returns a waveform: give the task its sample rate (audio_sample_rate)")
        reference_audio = getattr(self.dataset, "reference_audio", None)
        trial = flat_pearson(preds.numpy(), target.numpy())
        for row, idx in enumerate(index):
            item: dict[str, tp.Any] = {"index": idx,
                                       "pcc_window": _mean(_pearson(preds[row].T, target[row].T)),
                                       "pcc_trial": float(trial[row])}
            if len(self.examples) < self.max_examples:
                self.examples.append((idx, preds[row].numpy().copy(), target[row].numpy().copy()))
            if idx in self.keep:
                self.null_pred.append(preds[row].numpy())
                self.null_target.append(target[row].numpy())
            if waveform is not None:
                decoded = waveform[row].detach().float().cpu().numpy().reshape(-1)
                reference = reference_audio(idx) if reference_audio is not None else None
                if reference is not None:
                    item["stoi"] = stoi_score(decoded, float(self.audio_sample_rate),  # type: ignore[arg-type]
                                              reference[0], float(reference[1]))
                if len(self.audio) < self.max_audio:
                    self.audio.append((idx, decoded))
                    if reference is not None:  # the true audio beside it, to listen to both
                        self.references.append((idx, np.asarray(reference[0], np.float32), float(reference[1])))
            self.items.append(item)

    def compute(self) -> dict[str, float]:
        """``pcc`` (mean over bins of the pooled per-bin correlation) and the bin counts."""
        return pearson_metrics(self.pearson.compute())


@dataclasses.dataclass
class ReconstructionResult:
    """Everything the reconstruction evaluation produces for one XP (see the module docstring)."""

    task: tp.ClassVar[str] = "reconstruction"

    metrics: dict[str, float]
    groups: dict[str, dict[str, dict[str, float]]]
    per_bin: pd.DataFrame
    items: pd.DataFrame
    audio: list[tuple[int, np.ndarray]] = dataclasses.field(default_factory=list)
    audio_sample_rate: float | None = None
    examples: list[tuple[int, np.ndarray, np.ndarray]] = dataclasses.field(default_factory=list)
    references: list[tuple[int, np.ndarray, float]] = dataclasses.field(default_factory=list)

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write ``per_bin.csv``, ``items.csv``, ``audio/<index>.wav``, ``examples.npz``, ``spectrograms.png``
        and ``summary.json``."""
        import soundfile

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / "per_bin.csv", lambda f: self.per_bin.to_csv(f, index=False))
        atomic_write(folder / "items.csv", lambda f: self.items.to_csv(f, index=False))
        if self.audio:
            (folder / "audio").mkdir(exist_ok=True)
            files = [(f"{index}.wav", wave, float(self.audio_sample_rate or 0)) for index, wave in self.audio]
            files += [(f"{index}.true.wav", wave, rate) for index, wave, rate in self.references]
            for name, wave, rate in files:
                buffer = io.BytesIO()
                soundfile.write(buffer, wave.astype(np.float32), int(rate), format="WAV", subtype="FLOAT")
                data = buffer.getvalue()
                atomic_write(folder / "audio" / name, lambda f: f.write(data))  # noqa: B023 (runs now)
        if self.examples:
            from ..results.plots import figure_png, plot_examples

            shown = np.array([e[0] for e in self.examples])
            pred, target = np.stack([e[1] for e in self.examples]), np.stack([e[2] for e in self.examples])
            atomic_write(folder / "examples.npz", lambda f: np.savez(f, index=shown, pred=pred, target=target))
            png = figure_png(plot_examples(shown, pred, target))
            atomic_write(folder / "spectrograms.png", lambda f: f.write(png))
        write_summary(folder, "reconstruction", meta, self.metrics, self.groups)


def reconstruction_result(acc: ReconstructionAccumulator, n_null: int = 100, seed: int = 0) -> ReconstructionResult:
    """The full result of a ``full`` :class:`ReconstructionAccumulator` fed the whole test split."""
    r = acc.pearson.compute()
    null = None
    if acc.null_pred:
        length = min(p.shape[-1] for p in acc.null_pred)
        null = shuffled_null(np.stack([p[..., :length] for p in acc.null_pred]),
                             np.stack([t[..., :length] for t in acc.null_target]), n_null, seed)
    metrics = pearson_metrics(r, null)
    metrics["n_windows"] = float(len(acc.items))
    if acc.items:
        metrics["pcc_trial"] = _mean(np.array([item["pcc_trial"] for item in acc.items], dtype=np.float64))
    if acc.null_pred:
        length = min(p.shape[-1] for p in acc.null_pred)
        nulls = trial_null(np.stack([p[..., :length] for p in acc.null_pred]),
                           np.stack([t[..., :length] for t in acc.null_target]), n_null, seed)
        finite = nulls[np.isfinite(nulls)]
        if len(finite) and "pcc_trial" in metrics:
            metrics.update(pcc_trial_null_mean=_mean(finite), pcc_trial_null_p95=float(np.percentile(finite, 95)),
                           pcc_trial_p_value=float((1 + np.sum(finite >= metrics["pcc_trial"])) / (1 + len(finite))))
    metrics["n_null_windows"] = float(len(acc.null_pred))
    per_bin = pd.DataFrame({"bin": np.arange(len(r)), "pcc": r})
    if null is not None and len(null):
        with warnings.catch_warnings():  # a constant bin is NaN in every repeat
            warnings.simplefilter("ignore", RuntimeWarning)
            per_bin["null_mean"] = np.nanmean(null, axis=0)
            per_bin["null_p95"] = np.nanpercentile(null, 95, axis=0)
    items = pd.DataFrame(acc.items)
    segments = acc.dataset.segments
    for col in ("recording_uid", "study", "subject"):
        if col in segments.columns and len(items):
            items.insert(1, col, segments[col].to_numpy()[items["index"].to_numpy()])
    if "stoi" in items.columns:
        metrics["stoi"] = _mean(items["stoi"].to_numpy(dtype=np.float64))
        metrics["n_stoi"] = float(items["stoi"].notna().sum())
    groups: dict[str, dict[str, dict[str, float]]] = {}
    if acc.by_subject:
        groups["subject"] = {s: {"pcc": _mean(p.compute())} for s, p in sorted(acc.by_subject.items())}
    if "study" in items.columns:
        groups["study"] = {}
        for study, part in items.groupby(items["study"].astype(str)):
            groups["study"][str(study)] = {"pcc_window": _mean(part["pcc_window"].to_numpy(dtype=np.float64))}
    return ReconstructionResult(metrics, groups, per_bin, items, acc.audio, acc.audio_sample_rate, acc.examples,
                                acc.references)


def reconstruction_table(metrics: dict[str, float]) -> str:
    """Markdown table of the test correlation (and STOI) next to the trial-shuffled null."""
    def num(key: str) -> str:
        value = metrics.get(key)
        return "–" if value is None or value != value else f"{value:.3f}"

    lines = ["| metric | test | null mean | null 95th pct |", "|---|---:|---:|---:|",
             f"| PCC (mean over {int(metrics.get('n_bins', 0))} bins) | {num('pcc')} | {num('pcc_null_mean')} | "
             f"{num('pcc_null_p95')} |"]
    if "pcc_trial" in metrics:
        lines.append(f"| PCC per trial (whole spectrogram) | {num('pcc_trial')} | {num('pcc_trial_null_mean')} | "
                     f"{num('pcc_trial_null_p95')} |")
    if "stoi" in metrics:
        lines.append(f"| STOI ({int(metrics.get('n_stoi', 0))} windows) | {num('stoi')} | – | – |")
    note = (f"\n{int(metrics.get('n_windows', 0))} windows; null: predictions paired with other windows' targets, "
            f"{int(metrics.get('n_null', 0))} repeats, p = {num('pcc_p_value')}")
    return "\n".join(lines) + note


class ReconstructionTask(Task):
    """Dense features decoded from the brain: per-bin Pearson r against a trial-shuffled null, STOI on audio.

    The best epoch is chosen by validation ``pcc`` (max).
    """

    name = "reconstruction"
    targets = ("features",)
    valid_metrics = ("pcc",)
    headline = ("pcc", "pcc_trial", "stoi")
    main_metric = "pcc"
    best = ("pcc", "max")

    def accumulator(self, dataset: tp.Any = None, **kwargs: tp.Any) -> ReconstructionAccumulator:
        return ReconstructionAccumulator(dataset, **kwargs)

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None, *,
                 ks: tp.Sequence[int] = (), keep_probs: bool = True, batch_size: int = 128,
                 device: str | torch.device = "cpu", num_workers: int = 0, n_boot: int = 0, quick: bool = False,
                 train: tp.Any = None, n_null: int = 100, null_items: int = 1000, seed: int = 0,
                 audio_sample_rate: float | None = None, max_audio: int = 100, **kwargs: tp.Any
                 ) -> ReconstructionResult | QuickResult:
        """Reconstruct every window of ``dataset``; ``quick`` returns ``pcc`` only (no null, no audio).

        ``scorer``, ``ks``, ``keep_probs``, ``n_boot`` and ``train`` are accepted for a uniform call and unused.
        ``audio_sample_rate`` defaults to the model's ``audio_sample_rate`` attribute (e.g. ``model=nsd``, 16 kHz),
        which the solver's test stage relies on.
        """
        kwargs.pop("objective", None)
        if audio_sample_rate is None:
            audio_sample_rate = getattr(getattr(model, "module", model), "audio_sample_rate", None)
        if kwargs:
            raise TypeError(f"unexpected arguments for the reconstruction task: {sorted(kwargs)}")
        if quick:
            return QuickResult(self.name, self.quick_metrics(model, dataset, batch_size, device, num_workers))
        acc = ReconstructionAccumulator(dataset, full=True, null_items=null_items, seed=seed,
                                        audio_sample_rate=audio_sample_rate, max_audio=max_audio)
        for batch, outputs in model_outputs(model, dataset, batch_size, device, num_workers):
            acc.update(batch, outputs)
        return reconstruction_result(acc, n_null, seed)

    def table(self, metrics: dict[str, float]) -> str:
        return reconstruction_table(metrics)
