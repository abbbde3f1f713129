"""Tables of results: collection, aggregation over seeds and markdown / LaTeX / CSV / HTML output."""

from __future__ import annotations

import math
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from .load import CHANCE_ROW, Labeler, MISSING, Result, ResultsError, is_percent, load_all
from .labels import _labeler, order_labels


# ---------------------------------------------------------------------------------------------- tables

def _as_results(items: tp.Sequence[Result | str | Path]) -> list[Result]:
    if items and all(isinstance(x, dict) for x in items):
        return list(tp.cast(tp.Sequence[Result], items))
    return load_all([tp.cast("str | Path", x) for x in items])


def collect(targets: tp.Sequence[Result | str | Path], label: Labeler | tp.Sequence[str] | None = None,
            columns: tp.Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per XP: ``sig``, ``task``, ``model`` (label), ``study``, ``seed``, ... and every metric (fractions
    in percent, see :func:`bm2.results.is_percent`).

    ``targets`` are results of :func:`load_all` or anything it accepts; ``label`` is a labeler or a list of
    keys for :func:`label_from_keys` (default :func:`default_label`). ``columns`` adds ``{column: key}`` columns read
    from each XP's summary or config (e.g. ``{"fold": "dset.split.fold"}``).
    """
    from .labels import config_value

    labeler = _labeler(label)
    rows = []
    for res in _as_results(targets):
        meta = res["meta"]
        row: dict[str, tp.Any] = {
            "sig": res["sig"], "task": res.get("task", "retrieval"), "model": labeler(res),
            "study": "+".join(map(str, meta.get("selections") or ["?"])),
            "seed": int(meta.get("seed", 0)), "loss": meta.get("loss"),
            "features": "+".join(map(str, meta.get("features") or [])), "architecture": meta.get("model"),
            "epochs_trained": int(meta.get("epochs_trained", len(res["history"]))), "folder": str(res["folder"])}
        for column, key in (columns or {}).items():
            row[column] = config_value(res, key)
        for key, value in res["metrics"].items():
            value = float("nan") if value is None else float(value)
            row[key] = 100.0 * value if is_percent(key) else value
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate_stats(df: pd.DataFrame, rows: str = "model", cols: str = "study", metric: str = "top10_segment",
                    over: str = "seed") -> pd.DataFrame:
    """Long table of ``mean``, ``sd`` (sample, ddof=1) and ``n`` of ``metric`` over seeds per (rows, cols).

    ``over`` names the column of the repetitions (``seed``, or ``fold`` for cross-validation folds). XPs without
    ``metric`` (XPs of another task) are left out.
    """
    for key in (rows, cols, metric, over):
        if key not in df.columns:
            raise ResultsError(f"no column {key!r}; available: {sorted(df.columns)}")
    df = df[df[metric].notna()]
    keys = list(dict.fromkeys([rows, cols, over]))
    dup = df[df.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        sigs = dup[(dup[keys] == first[keys]).all(axis=1)]["sig"].tolist()
        raise ResultsError(f"XPs {sigs} share {rows}={first[rows]!r}, {cols}={first[cols]!r}, {over}={first[over]}: "
                           f"they are not {over}s of one configuration; tell them apart with --label KEY ... "
                           "(the hyper-parameters that differ) or select fewer XPs")
    grouped = df.groupby([rows, cols], sort=False)[metric]
    out = grouped.agg(mean="mean", sd=lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else float("nan"),
                      n="count").reset_index()
    return out


def format_mean_sd(mean: float, sd: float, decimals: int = 1) -> str:
    """``"mean ± sd"``; the mean alone when sd is undefined (one seed); ``–`` when there is no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if sd is None or math.isnan(sd):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def aggregate(df: pd.DataFrame, rows: str = "model", cols: str = "study", metric: str = "top10_segment",
              decimals: int | None = None, chance: bool = True, over: str = "seed") -> pd.DataFrame:
    """Table of ``"mean ± sd"`` strings (over seeds, or the ``over`` column, e.g. ``fold``): ``rows`` values as
    index, ``cols`` as columns.

    Fractions are in percent with one decimal, correlations and STOI as they are with three (``decimals``
    overrides). With ``chance``, a last row gives ``chance_<metric>`` (retrieval: uniform over candidates /
    words; classification, detection: the task's chance level; reconstruction: the shuffled null's mean).
    """
    if decimals is None:
        decimals = 1 if is_percent(metric) else 3
    stats = aggregate_stats(df, rows, cols, metric, over)
    row_order = order_labels(stats[rows].astype(str))
    col_order = sorted(stats[cols].astype(str).unique())
    table = pd.DataFrame(MISSING, index=pd.Index(row_order, name=rows), columns=pd.Index(col_order, name=cols),
                         dtype=object)
    for rec in stats.itertuples(index=False):
        table.loc[str(getattr(rec, rows)), str(getattr(rec, cols))] = format_mean_sd(rec.mean, rec.sd, decimals)
    chance_key = f"chance_{metric}"
    if chance and chance_key in df.columns and rows != CHANCE_ROW:
        scored = df[df[metric].notna()]
        tasks = scored["task"] if "task" in scored.columns else pd.Series("", index=scored.index)
        for task in sorted(tasks.unique()):
            # one chance row per task when tasks share a metric name (F1-macro of classes vs of speech samples)
            levels = scored[tasks == task].groupby(scored[cols].astype(str))[chance_key]
            # the chance level is a property of the test set, the same for every seed: show its sd only if it varies
            cells = {c: format_mean_sd(v.mean(), float(np.std(v, ddof=1)) if v.nunique() > 1 else float("nan"),
                                       decimals) for c, v in levels}
            name = CHANCE_ROW if tasks.nunique() == 1 else f"{CHANCE_ROW} ({task})"
            table.loc[name] = [cells.get(c, MISSING) for c in col_order]
    return table


def _md_cell(text: tp.Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub markdown of a table (index as the first column, numbers right-aligned)."""
    head = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |",
             "|" + "|".join([":---"] + ["---:"] * len(table.columns)) + "|"]
    for idx, row in table.iterrows():
        lines.append("| " + " | ".join(_md_cell(x) for x in [idx, *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def parse_markdown(text: str) -> pd.DataFrame:
    """Inverse of :func:`to_markdown` (cells as strings): reads a table back, e.g. to check it."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    head, body = split[0], split[2:]
    frame = pd.DataFrame([r[1:] for r in body], index=pd.Index([r[0] for r in body], name=head[0] or None),
                         columns=head[1:], dtype=object)
    return frame


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: tp.Any) -> str:
    """Escape LaTeX special characters; ``±`` becomes ``$\\pm$`` and ``–`` (missing) ``--``."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace(MISSING, "--")


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``table`` environment of a table (needs ``\\usepackage{booktabs}``)."""
    cols = "l" + "r" * len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
              " & ".join(latex_escape(x) for x in [table.index.name or "", *table.columns]) + r" \\", r"\midrule"]
    previous: tp.Any = None
    for idx, row in table.iterrows():
        if str(idx).startswith(CHANCE_ROW) and not str(previous).startswith(CHANCE_ROW):
            lines.append(r"\midrule")
        previous = idx
        lines.append(" & ".join(latex_escape(x) for x in [idx, *row.tolist()]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as UTF-8 CSV (index as the first column)."""
    path = Path(path)
    table.to_csv(path, encoding="utf-8")
    return path


def to_html(table: pd.DataFrame, css_class: str = "results") -> str:
    """A plain HTML ``<table>`` of a table (escaped; the index as row headers)."""
    import html

    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in [table.index.name or "", *table.columns])
    body = []
    for idx, row in table.iterrows():
        cells = "".join(f"<td>{esc(str(x))}</td>" for x in row.tolist())
        body.append(f"<tr><th>{esc(str(idx))}</th>{cells}</tr>")
    return (f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def chance_table(df: pd.DataFrame, cols: str = "study") -> pd.DataFrame:
    """Per study (and task, when XPs of several tasks are shown): test-set sizes and chance levels (mean over
    XPs; fractions in percent). A reconstruction's chance level is its own trial-shuffled null, which depends on
    the model's predictions: those rows are per model label (``<study> (<model>)``), never averaged across models
    (e.g. Neural Speech Decoding's a2a and e2a XPs of one study)."""
    retrieval = ["n_segments", "n_candidates", "n_words", "chance_top1_segment", "chance_top10_segment",
                 "chance_top1_word", "chance_top10_word", "prior_top1_word", "prior_top10_word"]
    tasks = df["task"] if "task" in df.columns else pd.Series("retrieval", index=df.index)
    rest = df[tasks != "retrieval"].dropna(axis=1, how="all")
    others = sorted(k for k in rest.columns if k.startswith(("n_", "chance_")) and not k.startswith("n_bins_"))
    keys = [k for k in (retrieval if (tasks == "retrieval").any() else []) + others if k in df.columns]
    rows = tasks.where(tasks != "reconstruction", df["model"]) if "model" in df.columns else tasks
    by = [cols] if rows.nunique() <= 1 else [cols, "_row"]
    out = df.assign(_row=rows).groupby(by)[keys].mean()
    out = out.dropna(axis=1, how="all")
    if len(by) == 2:
        out.index = pd.Index([f"{study} ({row})" for study, row in out.index], name=f"{cols} (task)")
    for k in out.columns:
        fmt = "{:.0f}" if k.startswith("n_") else "{:.1f}" if is_percent(k) else "{:.3f}"
        out[k] = out[k].map(lambda v, f=fmt: MISSING if v != v else f.format(v))
    return out


def _fold_scores(res: Result) -> tuple[np.ndarray, pd.DataFrame]:
    """``(scores [N, K], items)`` of one evaluated classification XP: ``logits.npy`` (else ``probs.npy``) and
    ``items.csv``, row-aligned; :class:`ResultsError` naming the file when one is missing or they disagree."""
    folder = Path(res["folder"]) / "eval"
    items = res.get("items")
    path = next((folder / n for n in ("logits.npy", "probs.npy") if (folder / n).exists()), None)
    if items is None or path is None:
        raise ResultsError(f"XP {res['sig']}: pooled metrics need {folder}/items.csv and logits.npy (or probs.npy): "
                           f"run `python -m scripts.run_eval_probs {res['sig']}` again")
    scores = np.load(path)
    if scores.ndim != 2 or len(scores) != len(items):
        raise ResultsError(f"{path} has shape {scores.shape} for {len(items)} rows of items.csv: run "
                           f"`python -m scripts.run_eval_probs {res['sig']}` again")
    return scores, items


def pooled_folds(targets: tp.Sequence[Result | str | Path], rows: str = "model", cols: str = "study",
                 label: Labeler | tp.Sequence[str] | None = None, ks: tp.Sequence[int] | None = None,
                 fold_key: str = "dset.split.fold") -> pd.DataFrame:
    """Top-k accuracies pooled over the test predictions of every fold of a cross-validation (classification).

    Each test trial appears in exactly one fold's test set, so the folds' test items together are the whole data
    set once: their scores (``eval/logits.npy``, else ``probs.npy``) and labels (``eval/items.csv``) are
    concatenated per (``rows``, ``cols``) cell and scored as one set, with
    :func:`bm2.tasks.classification.topk_accuracy` (unseen labels, -1, left out). ``ks``: the ``top<k>`` of the
    XPs' summaries by default.

    Returns one row per cell: ``rows``, ``cols``, ``n_folds``, ``n_items``, ``top<k>`` (percent) and
    ``chance_top<k>`` (``k / K``, percent). Raises :class:`ResultsError` for XPs of another task, a fold given twice,
    folds whose label ids name different classes or whose number of classes differs, and a trial (``recording_uid``
    and ``start``) in two folds' test sets.
    """
    import re as _re

    from ..tasks.classification import topk_accuracy

    results = _as_results(targets)
    other = sorted({str(r.get("task")) for r in results} - {"classification"})
    if other:
        raise ResultsError(f"pooled fold metrics are for classification XPs; these are {other}")
    df = collect(results, label, {"fold": fold_key})
    if ks is None:
        ks = sorted({int(m.group(1)) for r in results for k in r["metrics"] if (m := _re.fullmatch(r"top(\d+)", k))})
    out = []
    by_sig = {r["sig"]: r for r in results}
    for (row, col), group in df.groupby([rows, cols], sort=False):
        folds = group["fold"].tolist()
        if len(set(map(str, folds))) != len(folds):
            raise ResultsError(f"{rows}={row!r}, {cols}={col!r}: fold(s) given twice among XPs {group.sig.tolist()} "
                               "(pooling needs each fold once); tell them apart with --label KEY ...")
        scores: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        names: dict[int, str] = {}
        seen_items: set[tuple[str, str]] = set()
        for sig in group["sig"]:
            fold_scores, items = _fold_scores(by_sig[sig])
            if scores and fold_scores.shape[1] != scores[0].shape[1]:
                raise ResultsError(f"XP {sig} scores {fold_scores.shape[1]} classes, another fold "
                                   f"{scores[0].shape[1]}: folds of one setting must share the vocabulary")
            for lab, name in zip(items["label"].astype(int), items["label_name"].astype(str)):
                if lab >= 0 and names.setdefault(lab, name) != name:
                    raise ResultsError(f"XP {sig}: label {lab} is {name!r} but {names[lab]!r} in another fold: "
                                       "the folds' vocabularies differ, their scores cannot be pooled")
            if {"recording_uid", "start"} <= set(items.columns):
                keys = set(zip(items["recording_uid"].astype(str), items["start"].astype(str)))
                twice = keys & seen_items
                if twice:
                    raise ResultsError(f"XP {sig}: {len(twice)} test item(s) also in another fold's test set (e.g. "
                                       f"{sorted(twice)[0]}): these are not folds of one cross-validation")
                seen_items |= keys
            scores.append(fold_scores)
            labels.append(items["label"].to_numpy(dtype=np.int64))
        s, y = np.concatenate(scores), np.concatenate(labels)
        s, y = s[y >= 0], y[y >= 0]
        n_classes = s.shape[1]
        entry: dict[str, tp.Any] = {rows: row, cols: col, "n_folds": len(folds), "n_items": len(y)}
        for k in ks:
            entry[f"top{k}"] = 100.0 * topk_accuracy(s, y, k)
        for k in ks:
            entry[f"chance_top{k}"] = 100.0 * min(k / n_classes, 1.0)
        out.append(entry)
    return pd.DataFrame(out)
