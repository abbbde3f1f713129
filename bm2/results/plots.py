"""Figures of results (bare matplotlib figures, no pyplot)."""

from __future__ import annotations

import io
import math
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

if tp.TYPE_CHECKING:
    from matplotlib.figure import Figure

from .load import Labeler, Result, is_percent
from .labels import _labeler, order_labels
from .tables import collect
from .stats import chance_curve, prior_curve, subject_table, topk_curve


# ----------------------------------------------------------------------------------------------- figures

def _colors(labels: tp.Sequence[str]) -> dict[str, tp.Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {lab: cmap(i % 10) for i, lab in enumerate(order_labels(labels))}


def _new_figure(n_panels: int, width: float = 5.0, height: float = 3.8) -> tuple[Figure, list]:
    # A bare Figure (no pyplot): nothing global to close, works under Agg and in notebooks alike.
    from matplotlib.figure import Figure

    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def plot_topk(results: tp.Sequence[Result], level: str = "segment", kmax: int = 50,
              label: Labeler | tp.Sequence[str] | None = None) -> Figure:
    """Top-k accuracy (k = 1..kmax) of every XP, one panel per study, against chance (and the word prior)."""
    labeler = _labeler(label)
    labels = {r["sig"]: labeler(r) for r in results}
    colors = _colors(list(labels.values()))
    studies = sorted({"+".join(map(str, r["meta"].get("selections") or ["?"])) for r in results})
    fig, axes = _new_figure(len(studies))
    for ax, study in zip(axes, studies):
        members = [r for r in results if "+".join(map(str, r["meta"].get("selections") or ["?"])) == study]
        seen: set[str] = set()
        for res in members:
            if res["segments"] is None:
                continue
            lab = labels[res["sig"]]
            curve = 100 * topk_curve(res["segments"], level, kmax)
            ax.plot(curve.index, curve.to_numpy(), color=colors[lab], alpha=0.85, lw=1.5,
                    label=None if lab in seen else lab)
            seen.add(lab)
        n_key = "n_candidates" if level == "segment" else "n_words"
        for i, n in enumerate(sorted({r["metrics"].get(n_key) for r in members if r["metrics"].get(n_key)})):
            chance = 100 * chance_curve(n, kmax)
            ax.plot(chance.index, chance.to_numpy(), "k--", lw=1, label=f"chance (1/{n:.0f})" if i == 0 else None)
        if level == "word" and members and members[0]["segments"] is not None:
            prior = 100 * prior_curve(members[0]["segments"], kmax)
            ax.plot(prior.index, prior.to_numpy(), "k:", lw=1, label="word-frequency prior")
        ax.set(title=f"{study}: top-k ({level} level)", xlabel="k", ylabel="accuracy (%)", xlim=(1, kmax),
               ylim=(0, 101))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return fig


def plot_subjects(subjects: pd.DataFrame, metric: str = "top10_segment",
                  chance: dict[str, float] | None = None) -> Figure:
    """Per-subject bars of ``metric`` (mean ± sd over seeds) per configuration, one panel per study.

    ``subjects`` is a :func:`subject_table`; ``chance`` maps a study to its chance level (in the table's units).
    """
    percent = is_percent(metric)
    studies = sorted(subjects["study"].unique())
    colors = _colors(list(subjects["model"]))
    labels = order_labels(subjects["model"])
    fig, axes = _new_figure(len(studies), width=max(5.0, 0.6 * subjects["subject"].nunique() * len(labels)))
    for ax, study in zip(axes, studies):
        part = subjects[subjects.study == study]
        stats = part.groupby(["model", "subject"])["value"].agg(
            mean="mean", sd=lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else 0.0)
        subj = sorted(part["subject"].unique())
        present = [lab for lab in labels if lab in set(part["model"])]
        width = 0.8 / max(len(present), 1)
        x = np.arange(len(subj))
        for i, lab in enumerate(present):
            vals = stats.loc[lab].reindex(subj)
            ax.bar(x + (i - (len(present) - 1) / 2) * width, vals["mean"].to_numpy(), width,
                   yerr=vals["sd"].fillna(0).to_numpy(), capsize=2, color=colors[lab], label=lab)
        if chance and study in chance:
            ax.axhline(chance[study], color="k", ls="--", lw=1, label="chance")
        ax.set_xticks(x, subj, rotation=90 if len(subj) > 12 else 0)
        ax.set(title=f"{study}: {metric} per subject", xlabel="subject",
               ylabel=f"{metric} ({'%, ' if percent else ''}mean ± sd over seeds)")
        if percent:
            ax.set_ylim(0, 101)
        ax.legend(fontsize=8)
    return fig


def plot_training(results: tp.Sequence[Result], label: Labeler | tp.Sequence[str] | None = None) -> Figure:
    """Train (solid) and valid (dashed) loss per epoch, one panel per label (losses differ in scale)."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    labeler = _labeler(label)
    by_label: dict[str, list[Result]] = {}
    for res in results:
        by_label.setdefault(labeler(res), []).append(res)
    labels = order_labels(by_label)
    fig, axes = _new_figure(len(labels))
    cmap = colormaps["tab10"]
    for ax, lab in zip(axes, labels):
        for i, res in enumerate(sorted(by_label[lab], key=lambda r: (r["meta"].get("seed", 0), r["sig"]))):
            hist = res["history"]
            epochs = np.arange(1, len(hist) + 1)
            name = f"seed {res['meta'].get('seed', '?')} ({res['sig']})"
            train = [h.get("train", {}).get("loss", np.nan) for h in hist]
            valid = [h.get("valid", {}).get("loss", np.nan) for h in hist]
            ax.plot(epochs, train, "-o", ms=3, color=cmap(i % 10), label=f"train, {name}")
            if not np.all(np.isnan(valid)):
                ax.plot(epochs, valid, "--s", ms=3, color=cmap(i % 10), label=f"valid, {name}")
        ax.set(title=lab, xlabel="epoch", ylabel="loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _panels(results: tp.Sequence[Result], labeler: Labeler, limit: int = 6) -> list[tuple[str, Result]]:
    """One result per label (the lowest seed), at most ``limit``, in label order."""
    first: dict[str, Result] = {}
    for res in sorted(results, key=lambda r: (r["meta"].get("seed", 0), r["sig"])):
        first.setdefault(labeler(res), res)
    return [(lab, first[lab]) for lab in order_labels(first)][:limit]


def plot_confusion(results: tp.Sequence[Result], label: Labeler | tp.Sequence[str] | None = None) -> Figure:
    """Row-normalised confusion matrices (``eval/confusion.csv``) of classification XPs, one panel per label."""
    labeler = _labeler(label)
    panels = _panels(results, labeler)
    fig, axes = _new_figure(len(panels), width=4.5, height=4.2)
    for ax, (lab, res) in zip(axes, panels):
        confusion = pd.read_csv(Path(res["folder"]) / "eval" / "confusion.csv", index_col=0)
        counts = confusion.to_numpy(dtype=np.float64)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(100 * rates, vmin=0, vmax=100, cmap="viridis", aspect="auto", interpolation="nearest")
        if len(confusion) <= 20:
            ax.set_xticks(range(len(confusion)), confusion.columns, rotation=90, fontsize=7)
            ax.set_yticks(range(len(confusion)), confusion.index, fontsize=7)
        ax.set(title=f"{lab} ({res['sig']})", xlabel="predicted", ylabel="true")
        fig.colorbar(image, ax=ax, label="% of the true class")
    return fig


def plot_timelines(results: tp.Sequence[Result], label: Labeler | tp.Sequence[str] | None = None,
                   seconds: float = 30.0) -> Figure:
    """Speech probability (averaged windows) against the truth on the first covered ``seconds`` of the first
    test recording of detection XPs (``eval/timelines.npz``), one panel per label."""
    labeler = _labeler(label)
    panels = _panels(results, labeler)
    fig, axes = _new_figure(len(panels), width=7.0, height=3.0)
    for ax, (lab, res) in zip(axes, panels):
        folder = Path(res["folder"]) / "eval"
        recordings = pd.read_csv(folder / "recordings.csv", dtype={"recording_uid": str})
        uid, rate = str(recordings["recording_uid"].iloc[0]), float(recordings["sample_rate"].iloc[0])
        with np.load(folder / "timelines.npz") as data:
            prob, truth = data[f"prob_{uid}"], data[f"truth_{uid}"]
        covered = np.flatnonzero(~np.isnan(prob))
        start = int(covered[0]) if len(covered) else 0
        stop = min(len(prob), start + int(seconds * (rate if rate == rate else 1.0)))
        t = np.arange(start, stop) / (rate if rate == rate else 1.0)
        ax.fill_between(t, 0, truth[start:stop], step="mid", color="0.85", label="speech (truth)")
        ax.plot(t, prob[start:stop], color="C0", lw=1, label="P(speech)")
        ax.axhline(float(res["metrics"].get("threshold", 0.5)), color="k", ls="--", lw=0.8, label="threshold")
        ax.set(title=f"{lab} ({res['sig']}), recording {uid[:12]}", xlabel="time (s)", ylabel="probability",
               ylim=(-0.02, 1.02))
        ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_bins(results: tp.Sequence[Result], label: Labeler | tp.Sequence[str] | None = None) -> Figure:
    """Pearson r per feature bin (``eval/per_bin.csv``) of reconstruction XPs against the shuffled null's 95th
    percentile, one line per XP."""
    labeler = _labeler(label)
    labels = [labeler(r) for r in results]
    colors = _colors(labels)
    fig, axes = _new_figure(1, width=7.0)
    ax = axes[0]
    seen: set[str] = set()
    for res, lab in zip(results, labels):
        bins = pd.read_csv(Path(res["folder"]) / "eval" / "per_bin.csv")
        ax.plot(bins["bin"], bins["pcc"], color=colors[lab], lw=1.5, label=None if lab in seen else lab)
        if "null_p95" in bins.columns:
            ax.plot(bins["bin"], bins["null_p95"], color=colors[lab], ls=":", lw=1,
                    label=None if lab in seen else f"{lab}: null 95th pct")
        seen.add(lab)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(title="Pearson r per feature bin", xlabel="feature bin", ylabel="r")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _spectrogram_pair(axes: tp.Any, pred: np.ndarray, target: np.ndarray, title: str) -> None:
    """Draw ``target`` then ``pred`` ``[D, T]`` on two axes with one colour scale (bin 0 at the bottom)."""
    low, high = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    for ax, (name, value) in zip(axes, (("true", target), ("decoded", pred))):
        ax.imshow(value, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma", interpolation="nearest")
        ax.set(title=f"{title}: {name}", xlabel="frame", ylabel="bin")


def plot_examples(index: np.ndarray, pred: np.ndarray, target: np.ndarray) -> Figure:
    """True (top row) and decoded (bottom row) features ``[N, D, T]`` of ``N`` test windows (``index``: their dataset
    indices), one colour scale per window."""
    from matplotlib.figure import Figure

    n = max(len(index), 1)
    fig = Figure(figsize=(3.4 * n, 5.6), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(len(index)):
        _spectrogram_pair(axes[:, j], pred[j], target[j], f"window {int(index[j])}")
    return fig


def plot_reconstructions(results: tp.Sequence[Result], label: Labeler | tp.Sequence[str] | None = None) -> Figure:
    """The first test window (``eval/examples.npz``) of each reconstruction XP, true beside decoded, one row per
    label."""
    from matplotlib.figure import Figure

    labeler = _labeler(label)
    panels = _panels(results, labeler)
    fig = Figure(figsize=(8.0, 3.0 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for row, (lab, res) in enumerate(panels):
        with np.load(Path(res["folder"]) / "eval" / "examples.npz") as data:
            index, pred, target = data["index"], data["pred"], data["target"]
        _spectrogram_pair(axes[row], pred[0], target[0], f"{res['sig']}, window {int(index[0])}")
        axes[row][0].set_ylabel(f"{lab}\nbin", fontsize=8)  # the (long) label beside its row, not in a title
    return fig


def make_figures(results: tp.Sequence[Result], metric: str = "top10_segment", kmax: int = 50,
                 label: Labeler | tp.Sequence[str] | None = None) -> dict[str, Figure]:
    """The standard figures by file stem: ``topk_segment``, ``topk_word`` (retrieval), ``subjects_<metric>``,
    ``confusion`` (classification), ``timelines`` (detection), ``bins`` and ``spectrograms`` (reconstruction) and
    ``training``."""
    labeler = _labeler(label)
    figures = {}

    def of(task: str) -> list[Result]:
        return [r for r in results if r.get("task", "retrieval") == task]

    retrieval = [r for r in of("retrieval") if r["segments"] is not None]
    if retrieval:
        figures["topk_segment"] = plot_topk(retrieval, "segment", kmax, labeler)
        if any("better_word" in r["segments"].columns for r in retrieval):
            figures["topk_word"] = plot_topk(retrieval, "word", kmax, labeler)
    scored = [r for r in results if metric in r["metrics"]]
    if scored:
        subjects = subject_table(scored, metric, labeler)
        df = collect(scored, labeler)
        chance = df.groupby("study")[f"chance_{metric}"].mean().to_dict() if f"chance_{metric}" in df else None
        figures[f"subjects_{metric}"] = plot_subjects(subjects, metric, chance)
    tasks = {"confusion": ("classification", "confusion.csv", plot_confusion),
             "timelines": ("detection", "timelines.npz", plot_timelines),
             "bins": ("reconstruction", "per_bin.csv", plot_bins),
             "spectrograms": ("reconstruction", "examples.npz", plot_reconstructions)}
    for name, (task, needed, plot) in tasks.items():
        members = [r for r in of(task) if (Path(r["folder"]) / "eval" / needed).exists()]
        if members:
            figures[name] = plot(members, labeler)
    if any(r["history"] for r in results):
        figures["training"] = plot_training(results, labeler)
    return figures


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for files, notebooks and data URIs)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


