"""Per-subject tables, paired Wilcoxon tests and top-k curves."""

from __future__ import annotations

import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import Ranks
from .load import Labeler, MISSING, Result, ResultsError, _METRIC, _eval_hint, is_percent
from .labels import _labeler, order_labels
from .tables import _as_results, to_markdown


# ------------------------------------------------------------------------------------------- per subject

def parse_metric(metric: str) -> tuple[int, str]:
    """``top10_segment`` -> ``(10, "segment")``."""
    match = _METRIC.match(metric)
    if not match:
        raise ResultsError(f"metric {metric!r} is not of the form top<k>_<segment|word> (e.g. top10_segment)")
    return int(match.group(1)), match.group(2)


def subject_table(targets: tp.Sequence[Result | str | Path], metric: str = "top10_segment",
                  label: Labeler | tp.Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (XP, study, subject): ``sig``, ``model``, ``seed``, ``study``, ``subject``, ``value``.

    ``value`` is in percent for fractions (:func:`bm2.results.is_percent`). Retrieval top-k comes from
    ``segments.csv`` and classification top-1 from ``items.csv`` (so subjects of different studies never
    mix); other metrics and XPs without those files use the per-subject groups of ``summary.json``.
    """
    match = _METRIC.match(metric)
    labeler = _labeler(label)
    scale = 100.0 if is_percent(metric) else 1.0
    rows = []
    for res in _as_results(targets):
        base = {"sig": res["sig"], "model": labeler(res), "seed": int(res["meta"].get("seed", 0))}
        seg, items = res["segments"], res.get("items")
        frame = None
        if match and seg is not None and f"better_{match.group(2)}" in seg.columns:
            k, level = int(match.group(1)), match.group(2)
            hits = Ranks(seg[f"better_{level}"].to_numpy(), seg[f"ties_{level}"].to_numpy()).hits(k)
            frame = pd.DataFrame({"study": seg["study"].astype(str), "subject": seg["subject"].astype(str),
                                  "hit": hits})
        elif (metric in ("top1", "accuracy") and items is not None and "correct" in items.columns
              and {"study", "subject"} <= set(items.columns)):
            scored = items[items["correct"].astype(str).isin(["True", "False"])]
            frame = pd.DataFrame({"study": scored["study"].astype(str), "subject": scored["subject"].astype(str),
                                  "hit": (scored["correct"].astype(str) == "True").astype(float)})
        if frame is not None:
            for (study, subject), part in frame.groupby(["study", "subject"], sort=True):
                rows.append({**base, "study": study, "subject": subject, "value": scale * part["hit"].mean(),
                             "n_segments": len(part)})
            continue
        groups = res["groups"].get("subject") or {}
        if not groups:
            raise ResultsError(f"XP {res['sig']} has no per-subject results (segments.csv, items.csv or groups): "
                               f"{_eval_hint(res['sig'])} again")
        study = "+".join(map(str, res["meta"].get("selections") or ["?"]))
        for subject, values in groups.items():
            if metric not in values:
                raise ResultsError(f"XP {res['sig']} has no per-subject {metric!r}; per-subject metrics: "
                                   f"{sorted(values)}")
            value = values[metric]
            rows.append({**base, "study": study, "subject": str(subject),
                         "value": float("nan") if value is None else scale * float(value),
                         "n_segments": float("nan")})
    return pd.DataFrame(rows)


def wilcoxon_paired(df_a: pd.DataFrame, df_b: pd.DataFrame, value: str = "value") -> dict[str, tp.Any]:
    """Paired Wilcoxon signed-rank test across subjects between two configurations.

    Parameters
    ----------
    df_a, df_b : per-subject tables (:func:`subject_table` rows of each configuration) with ``study``,
        ``subject`` and ``value`` columns; several seeds per subject are averaged first.

    Returns
    -------
    dict with ``n`` (paired subjects), ``statistic`` (scipy's two-sided W, the smaller rank sum),
    ``pvalue``, ``mean_a``, ``mean_b``, ``mean_diff`` (a - b, in the units of ``value``) and ``note``.
    """
    from scipy import stats

    keys = [c for c in ("study", "subject") if c in df_a.columns and c in df_b.columns]
    if "subject" not in keys:
        raise ResultsError("wilcoxon_paired needs a 'subject' column in both tables (see subject_table)")
    mean_a = df_a.groupby(keys)[value].mean()
    mean_b = df_b.groupby(keys)[value].mean()
    paired = pd.concat({"a": mean_a, "b": mean_b}, axis=1, join="inner").dropna()
    n = len(paired)
    out: dict[str, tp.Any] = {"n": n, "statistic": float("nan"), "pvalue": float("nan"),
                              "mean_a": float(paired["a"].mean()) if n else float("nan"),
                              "mean_b": float(paired["b"].mean()) if n else float("nan"),
                              "mean_diff": float((paired["a"] - paired["b"]).mean()) if n else float("nan"),
                              "note": ""}
    if n == 0:
        out["note"] = "no subject in common"
        return out
    diff = (paired["a"] - paired["b"]).to_numpy()
    if np.allclose(diff, 0.0):
        out.update(statistic=0.0, pvalue=1.0, note="all differences are zero")
        return out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = stats.wilcoxon(paired["a"].to_numpy(), paired["b"].to_numpy())
    notes = [str(w.message) for w in caught]
    zeros = int(np.isclose(diff, 0.0).sum())
    if zeros:
        notes.insert(0, f"{zeros} zero difference(s) dropped (zero_method='wilcox')")
    if n < 6:
        notes.insert(0, f"only {n} subjects: the smallest attainable two-sided p-value is {2 / 2 ** n:.3g}")
    out.update(statistic=float(res.statistic), pvalue=float(res.pvalue), note="; ".join(notes))
    return out


def wilcoxon_table(tests: dict[str, dict[str, tp.Any]]) -> pd.DataFrame:
    """Display table (strings) of :func:`wilcoxon_paired` results, one row per scope (study or ``all``)."""
    return pd.DataFrame(
        [[str(t["n"]), f"{t['mean_a']:.2f}", f"{t['mean_b']:.2f}", f"{t['mean_diff']:+.2f}", f"{t['statistic']:.1f}",
          f"{t['pvalue']:.4g}", t["note"] or MISSING] for t in tests.values()],
        index=pd.Index(list(tests), name="scope"),
        columns=["n subjects", "mean A", "mean B", "A - B", "W", "p-value", "note"], dtype=object)


def wilcoxon_markdown(tests: dict[str, dict[str, tp.Any]], label_a: str, label_b: str, metric: str) -> str:
    """Markdown of :func:`wilcoxon_paired` results with a header naming A, B and the metric."""
    head = (f"Paired Wilcoxon signed-rank test across subjects, {metric} (%, per-subject mean over seeds): "
            f"A = {label_a}, B = {label_b}\n\n")
    return head + to_markdown(wilcoxon_table(tests))


def compare(subjects: pd.DataFrame, label_a: str, label_b: str) -> dict[str, dict[str, tp.Any]]:
    """:func:`wilcoxon_paired` of two labels of a :func:`subject_table`, per study and over all subjects."""
    for lab in (label_a, label_b):
        if lab not in set(subjects["model"]):
            raise ResultsError(f"no XP labelled {lab!r}; labels are {order_labels(subjects['model'])}")
    a, b = subjects[subjects.model == label_a], subjects[subjects.model == label_b]
    tests = {str(s): wilcoxon_paired(a[a.study == s], b[b.study == s]) for s in sorted(subjects.study.unique())}
    if len(tests) > 1:
        tests["all"] = wilcoxon_paired(a, b)
    return tests


# ------------------------------------------------------------------------------------------------ curves

def topk_curve(segments: pd.DataFrame, level: str = "segment", kmax: int = 50) -> pd.Series:
    """Mean top-k accuracy (fraction) for k = 1..kmax from the rank columns of ``segments.csv``."""
    better, ties = f"better_{level}", f"ties_{level}"
    if better not in segments.columns:
        raise ResultsError(f"segments have no {better!r} column: {_eval_hint('SIG')} again (older eval output)")
    ranks = Ranks(segments[better].to_numpy(), segments[ties].to_numpy())
    ks = np.arange(1, kmax + 1)
    values = [float(ranks.hits(int(k)).mean()) if len(segments) else float("nan") for k in ks]
    return pd.Series(values, index=pd.Index(ks, name="k"), name=f"top-k {level}")


def chance_curve(n_items: float, kmax: int = 50) -> pd.Series:
    """Chance top-k (fraction) with ``n_items`` equally likely candidates: min(k / n, 1)."""
    ks = np.arange(1, kmax + 1)
    return pd.Series(np.minimum(ks / max(float(n_items), 1.0), 1.0), index=pd.Index(ks, name="k"), name="chance")


def prior_curve(segments: pd.DataFrame, kmax: int = 50) -> pd.Series:
    """Word-level top-k (fraction) of always answering the k most frequent test words."""
    counts = np.sort(segments["word"].astype(str).value_counts().to_numpy())[::-1]
    cum = np.cumsum(counts) / max(counts.sum(), 1)
    ks = np.arange(1, kmax + 1)
    return pd.Series(cum[np.minimum(ks, len(cum)) - 1], index=pd.Index(ks, name="k"), name="word prior")


