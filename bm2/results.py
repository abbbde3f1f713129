"""Results of evaluated XPs as pandas tables: loading, labels, aggregation over seeds, statistics and plots.

Shared by ``scripts/make_tables.py``, ``scripts/figures.py``, ``scripts/report.py`` and the notebooks of
``notebook_templates/``. Everything starts from the ``eval/`` folder that ``python -m scripts.run_eval_probs``
writes in each XP folder (``summary.json``, ``segments.csv``) and from the XP's ``history.json``::

    xps = load_all(["synthetic"])                 # grid names, signatures or XP folders
    df = collect(xps)                             # one row per XP, metrics in percent
    table = aggregate(df, "model", "study", "top10_segment")   # "mean ± sd" over seeds
    print(to_markdown(table))

Accuracies are stored as fractions in ``summary.json``; every table of this module shows them in percent.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import Ranks

if tp.TYPE_CHECKING:
    from matplotlib.figure import Figure
    from omegaconf import DictConfig

    from .data import Datasets

Result = dict[str, tp.Any]
Labeler = tp.Callable[[Result], str]

# Rows of the main table in the paper's order; other labels follow alphabetically.
KNOWN_LABELS = ("random", "mel regression", "mel + contrastive", "wav2vec 2.0 + contrastive")
CHANCE_ROW = "chance"
MISSING = "–"
STANDARD_METRICS = ("top1_segment", "top10_segment", "top1_word", "top10_word")
_METRIC = re.compile(r"^top(\d+)_(segment|word)$")


class ResultsError(RuntimeError):
    """Results cannot be loaded or tabulated; the message says what to do."""


class MissingEvalError(ResultsError):
    """An XP has not been evaluated (no ``eval/summary.json``)."""

    def __init__(self, sig: str, path: Path) -> None:
        super().__init__(f"XP {sig} has no evaluation ({path} is missing): {_eval_hint(sig)}")
        self.sig = sig


# ----------------------------------------------------------------------------------------------- loading

def _eval_hint(sig: str) -> str:
    return f"run `python -m scripts.run_eval_probs {sig}` first"


def load_xp_results(xp_folder: str | Path) -> Result:
    """Summary, per-segment table and training history of one evaluated XP folder.

    Returns a dict with ``sig``, ``folder``, ``summary``, ``meta``, ``metrics`` (fractions), ``groups``,
    ``segments`` (DataFrame, or None when ``segments.csv`` is absent) and ``history`` (list of epochs).
    """
    folder = Path(xp_folder)
    if folder.name == "eval" and (folder / "summary.json").exists():
        folder = folder.parent  # the eval folder itself was given
    if not folder.is_dir():
        raise ResultsError(f"{folder} is not an XP folder (expected $BM2_XP_DIR/xps/SIG)")
    path = folder / "eval" / "summary.json"
    sig = folder.name
    if not path.exists():
        raise MissingEvalError(sig, path)
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is unreadable ({exc}): {_eval_hint(sig)} again") from exc
    if summary.get("task", "retrieval") != "retrieval":
        raise ResultsError(f"XP {sig}: task {summary.get('task')!r} is not supported (only retrieval)")
    meta = dict(summary.get("meta") or {})
    sig = str(meta.get("sig") or sig)
    segments = None
    seg_path = folder / "eval" / "segments.csv"
    if seg_path.exists():
        # identifiers such as subject "01" or the word "null" must stay strings
        text_columns = ("study", "subject", "session", "recording_uid", "split", "kind", "block_uid", "word",
                        "sentence_id", "segment_uid")
        segments = pd.read_csv(seg_path, dtype={c: str for c in text_columns}, keep_default_na=False,
                               na_values={"anchor": [""], "start": [""]})
    history_path = folder / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    return {"sig": sig, "folder": folder, "summary": summary, "meta": meta,
            "metrics": dict(summary.get("metrics") or {}), "groups": dict(summary.get("groups") or {}),
            "segments": segments, "history": history}


def _is_xp_path(target: str) -> bool:
    return os.sep in target or target.startswith(".") or Path(target).is_dir()


def _dora_finder() -> tuple[type[Exception], tp.Callable[[tp.Sequence[str]], list[tp.Any]]]:
    """``scripts.run_eval_probs``' error class and ``find_xps`` (imported lazily: Dora loads the Hydra config)."""
    try:
        from scripts import run_eval_probs
    except ModuleNotFoundError:
        # An editable install made before scripts/ was packaged exposes bm2 only: use the source checkout's.
        root = Path(__file__).resolve().parents[1]
        if not (root / "scripts" / "run_eval_probs.py").exists():
            raise ResultsError("signatures and grid names need bm2's scripts package: reinstall bm2 "
                               "(`pip install -e .`) or pass XP folders instead") from None
        sys.path.insert(0, str(root))
        from scripts import run_eval_probs
    return run_eval_probs.EvalError, run_eval_probs.find_xps


def resolve_folders(targets: tp.Sequence[str | Path]) -> list[Path]:
    """XP folders of ``targets``: XP folders, Dora signatures or grid names (in order, no duplicates)."""
    folders: list[Path] = []
    for target in targets:
        text = str(target)
        if isinstance(target, Path) or _is_xp_path(text):
            path = Path(text).expanduser()
            if not path.is_dir():
                raise ResultsError(f"{path} does not exist: give an XP folder, a signature or a grid name")
            folders.append(path)
            continue
        EvalError, find_xps = _dora_finder()
        try:
            folders.extend(Path(xp.folder) for xp in find_xps([text]))
        except EvalError as exc:
            raise ResultsError(str(exc)) from exc
    return list(dict.fromkeys(f.resolve() for f in folders))


def load_all(targets: tp.Sequence[str | Path]) -> list[Result]:
    """:func:`load_xp_results` of every XP of ``targets`` (see :func:`resolve_folders`)."""
    results, missing = [], []
    for folder in resolve_folders(targets):
        try:
            results.append(load_xp_results(folder))
        except MissingEvalError as exc:
            missing.append(exc)
    if len(missing) == 1:
        raise missing[0]
    if missing:  # one message for all, so that one command fixes them
        sigs = " ".join(e.sig for e in missing)
        raise ResultsError(f"XPs {sigs} have no evaluation (eval/summary.json): {_eval_hint(sigs)}")
    if not results:
        raise ResultsError(f"no XP found for {list(targets)}")
    return results


def targets_from_env(var: str = "BM2_TARGETS") -> list[str]:
    """Targets (signatures / grid names) from an environment variable, for notebooks."""
    value = os.environ.get(var, "").split()
    if not value:
        raise ResultsError(f"set ${var} to space-separated XP signatures or grid names (and $BM2_XP_DIR to the "
                           f"Dora folder), e.g. `{var}='synthetic' BM2_XP_DIR=outputs jupyter lab`")
    if not os.environ.get("BM2_XP_DIR") and not all(_is_xp_path(v) for v in value):
        raise ResultsError("set $BM2_XP_DIR to the Dora folder that holds the XPs (the one `dora run` used)")
    return value


def require_env(*names: str) -> dict[str, str]:
    """Values of environment variables that must be set (for notebooks); the error names the missing ones."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ResultsError(f"set {', '.join('$' + n for n in missing)} (the folders `dora run` used: "
                           "BM2_XP_DIR for XPs, BM2_DATA for studies, BM2_CACHE for preprocessed data)")
    return {n: os.environ[n] for n in names}


# ------------------------------------------------------------------------------------------------ labels

def argv_value(argv: tp.Sequence[str], key: str) -> str | None:
    """Value of the last ``key=value`` override in ``argv`` (``+``/``++`` prefixes allowed), else None."""
    value = None
    for arg in argv:
        name, sep, val = str(arg).lstrip("+").partition("=")
        if sep and name == key:
            value = val
    return value


def is_random(meta: dict[str, tp.Any]) -> bool:
    """True for an untrained baseline: no epoch, or ``optim.max_batches=0`` (no update) in its argv."""
    if int(meta.get("epochs_trained", 1)) == 0:
        return True
    return argv_value(meta.get("argv") or [], "optim.max_batches") in ("0", "0.0")


def _feature_label(features: tp.Sequence[str]) -> str:
    names = []
    for feat in features:
        low = str(feat).lower()
        names.append("wav2vec 2.0" if "wav2vec" in low else str(feat))
    return " + ".join(names) or "?"


def default_label(result: Result) -> str:
    """Model / objective label of the paper's main table, e.g. ``mel regression`` or ``mel + contrastive``."""
    meta = result["meta"]
    if is_random(meta):
        return "random"
    feats = _feature_label(meta.get("features") or [])
    loss = str(meta.get("loss", "?"))
    label = {"mse": f"{feats} regression", "clip": f"{feats} + contrastive"}.get(loss, f"{feats} + {loss}")
    model = meta.get("model")
    if model and model != "simpleconv":  # the paper's model needs no mention; others do
        label += f" ({model})"
    return label


def xp_config(folder: str | Path) -> DictConfig:
    """Full config of an XP (Hydra's ``.hydra/config.yaml``, else the checkpoint's), paths from the environment."""
    from omegaconf import OmegaConf

    folder = Path(folder)
    hydra = folder / ".hydra" / "config.yaml"
    if hydra.exists():
        cfg = OmegaConf.load(hydra)
    else:
        from .solvers.base import load_checkpoint

        cfg = OmegaConf.create(load_checkpoint(folder / "checkpoint.th")["config"])
    # data may have moved since training: the current environment wins
    for key, var in (("data", "BM2_DATA"), ("cache", "BM2_CACHE")):
        if os.environ.get(var) and "paths" in cfg:
            cfg.paths[key] = os.environ[var]
    return tp.cast("DictConfig", cfg)


def _config_value(result: Result, key: str) -> tp.Any:
    if key in result["meta"]:
        return result["meta"][key]
    value = argv_value(result["meta"].get("argv") or [], key)
    if value is not None:
        return value
    from omegaconf import OmegaConf

    try:
        cfg = xp_config(result["folder"])
    except Exception as exc:  # noqa: BLE001  (no config at all: say which key could not be found)
        raise ResultsError(f"label key {key!r}: not in the summary of XP {result['sig']} and its config is "
                           f"unreadable ({exc})") from exc
    value = OmegaConf.select(cfg, key, default="__missing__", throw_on_resolution_failure=False)
    if isinstance(value, str) and value == "__missing__":
        raise ResultsError(f"label key {key!r} is neither a summary field ({sorted(result['meta'])}) nor a config "
                           f"key of XP {result['sig']}; use dotted config keys such as optim.lr")
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def label_from_keys(keys: tp.Sequence[str]) -> Labeler:
    """A labeler showing ``key=value`` for each key (summary meta fields or dotted config keys)."""
    keys = list(keys)
    if not keys:
        return default_label

    def label(result: Result) -> str:
        parts = []
        for key in keys:
            value = _config_value(result, key)
            if isinstance(value, (list, tuple)):
                value = "+".join(map(str, value))
            parts.append(f"{key}={value}")
        return ", ".join(parts)

    return label


def _labeler(label: Labeler | tp.Sequence[str] | None) -> Labeler:
    if label is None:
        return default_label
    if callable(label):
        return label
    return label_from_keys(list(label))


def order_labels(labels: tp.Iterable[str]) -> list[str]:
    """Distinct labels, the paper's known rows first, then alphabetically; the chance row last."""
    unique = list(dict.fromkeys(str(x) for x in labels))
    known = [x for x in KNOWN_LABELS if x in unique]
    rest = sorted(x for x in unique if x not in KNOWN_LABELS and x != CHANCE_ROW)
    return known + rest + ([CHANCE_ROW] if CHANCE_ROW in unique else [])


# ---------------------------------------------------------------------------------------------- tables

def _is_percent(key: str) -> bool:
    return not key.startswith("n_")  # every metric but the counts is a fraction


def _as_results(items: tp.Sequence[Result | str | Path]) -> list[Result]:
    if items and all(isinstance(x, dict) for x in items):
        return list(tp.cast(tp.Sequence[Result], items))
    return load_all([tp.cast("str | Path", x) for x in items])


def collect(targets: tp.Sequence[Result | str | Path], label: Labeler | tp.Sequence[str] | None = None
            ) -> pd.DataFrame:
    """One row per XP: ``sig``, ``model`` (label), ``study``, ``seed``, ... and every metric in percent.

    ``targets`` are results of :func:`load_all` or anything it accepts; ``label`` is a labeler or a list of
    keys for :func:`label_from_keys` (default :func:`default_label`).
    """
    labeler = _labeler(label)
    rows = []
    for res in _as_results(targets):
        meta = res["meta"]
        row: dict[str, tp.Any] = {
            "sig": res["sig"], "model": labeler(res), "study": "+".join(map(str, meta.get("selections") or ["?"])),
            "seed": int(meta.get("seed", 0)), "loss": meta.get("loss"),
            "features": "+".join(map(str, meta.get("features") or [])), "architecture": meta.get("model"),
            "epochs_trained": int(meta.get("epochs_trained", len(res["history"]))), "folder": str(res["folder"])}
        for key, value in res["metrics"].items():
            row[key] = 100.0 * float(value) if _is_percent(key) else float(value)
        rows.append(row)
    return pd.DataFrame(rows)


def aggregate_stats(df: pd.DataFrame, rows: str = "model", cols: str = "study", metric: str = "top10_segment"
                    ) -> pd.DataFrame:
    """Long table of ``mean``, ``sd`` (sample, ddof=1) and ``n`` of ``metric`` over seeds per (rows, cols)."""
    for key in (rows, cols, metric):
        if key not in df.columns:
            raise ResultsError(f"no column {key!r}; available: {sorted(df.columns)}")
    keys = list(dict.fromkeys([rows, cols, "seed"]))
    dup = df[df.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        sigs = dup[(dup[keys] == first[keys]).all(axis=1)]["sig"].tolist()
        raise ResultsError(f"XPs {sigs} share {rows}={first[rows]!r}, {cols}={first[cols]!r}, seed={first['seed']}: "
                           "they are not seeds of one configuration; tell them apart with --label KEY ... "
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
              decimals: int = 1, chance: bool = True) -> pd.DataFrame:
    """Table of ``"mean ± sd"`` strings (percent, over seeds): ``rows`` values as index, ``cols`` as columns.

    With ``chance``, a last row gives the chance level of ``metric`` (uniform over candidates / words).
    """
    stats = aggregate_stats(df, rows, cols, metric)
    row_order = order_labels(stats[rows].astype(str))
    col_order = sorted(stats[cols].astype(str).unique())
    table = pd.DataFrame(MISSING, index=pd.Index(row_order, name=rows), columns=pd.Index(col_order, name=cols),
                         dtype=object)
    for rec in stats.itertuples(index=False):
        table.loc[str(getattr(rec, rows)), str(getattr(rec, cols))] = format_mean_sd(rec.mean, rec.sd, decimals)
    chance_key = f"chance_{metric}"
    if chance and chance_key in df.columns and rows != CHANCE_ROW:
        levels = df.groupby(df[cols].astype(str))[chance_key]
        # the chance level is a property of the test set, the same for every seed: show its sd only if it varies
        cells = {c: format_mean_sd(v.mean(), float(np.std(v, ddof=1)) if v.nunique() > 1 else float("nan"),
                                   decimals) for c, v in levels}
        table.loc[CHANCE_ROW] = [cells.get(c, MISSING) for c in col_order]
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
    for idx, row in table.iterrows():
        if idx == CHANCE_ROW:
            lines.append(r"\midrule")
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
    """Per study: test-set sizes and chance / word-prior top-k in percent (mean over XPs)."""
    keys = [k for k in ("n_segments", "n_candidates", "n_words", "chance_top1_segment", "chance_top10_segment",
                        "chance_top1_word", "chance_top10_word", "prior_top1_word", "prior_top10_word")
            if k in df.columns]
    out = df.groupby(cols)[keys].mean()
    for k in keys:
        fmt = "{:.0f}" if k.startswith("n_") else "{:.1f}"
        out[k] = out[k].map(fmt.format)
    return out


# ------------------------------------------------------------------------------------------- per subject

def parse_metric(metric: str) -> tuple[int, str]:
    """``top10_segment`` -> ``(10, "segment")``."""
    match = _METRIC.match(metric)
    if not match:
        raise ResultsError(f"metric {metric!r} is not of the form top<k>_<segment|word> (e.g. top10_segment)")
    return int(match.group(1)), match.group(2)


def subject_table(targets: tp.Sequence[Result | str | Path], metric: str = "top10_segment",
                  label: Labeler | tp.Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (XP, study, subject): ``sig``, ``model``, ``seed``, ``study``, ``subject``, ``value`` (%).

    Computed from ``segments.csv`` (so subjects of different studies never mix); XPs without it fall back on
    the per-subject groups of ``summary.json``.
    """
    k, level = parse_metric(metric)
    labeler = _labeler(label)
    rows = []
    for res in _as_results(targets):
        base = {"sig": res["sig"], "model": labeler(res), "seed": int(res["meta"].get("seed", 0))}
        seg = res["segments"]
        if seg is not None and f"better_{level}" in seg.columns:
            hits = Ranks(seg[f"better_{level}"].to_numpy(), seg[f"ties_{level}"].to_numpy()).hits(k)
            frame = pd.DataFrame({"study": seg["study"].astype(str), "subject": seg["subject"].astype(str),
                                  "hit": hits})
            for (study, subject), part in frame.groupby(["study", "subject"], sort=True):
                rows.append({**base, "study": study, "subject": subject, "value": 100.0 * part["hit"].mean(),
                             "n_segments": len(part)})
        else:
            groups = res["groups"].get("subject") or {}
            if not groups:
                raise ResultsError(f"XP {res['sig']} has neither segments.csv nor per-subject groups: "
                                   f"{_eval_hint(res['sig'])} again")
            study = "+".join(map(str, res["meta"].get("selections") or ["?"]))
            for subject, values in groups.items():
                rows.append({**base, "study": study, "subject": str(subject), "value": 100.0 * values[metric],
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
    """Per-subject accuracy bars (mean ± sd over seeds) per configuration, one panel per study.

    ``subjects`` is a :func:`subject_table`; ``chance`` maps a study to its chance level in percent.
    """
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
               ylabel=f"{metric} (%, mean ± sd over seeds)", ylim=(0, 101))
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


def make_figures(results: tp.Sequence[Result], metric: str = "top10_segment", kmax: int = 50,
                 label: Labeler | tp.Sequence[str] | None = None) -> dict[str, Figure]:
    """The standard figures by file stem: ``topk_segment``, ``topk_word``, ``subjects_<metric>``, ``training``."""
    labeler = _labeler(label)
    figures = {"topk_segment": plot_topk(results, "segment", kmax, labeler)}
    if any(r["segments"] is not None and "better_word" in r["segments"].columns for r in results):
        figures["topk_word"] = plot_topk(results, "word", kmax, labeler)
    subjects = subject_table(results, metric, labeler)
    df = collect(results, labeler)
    chance = df.groupby("study")[f"chance_{metric}"].mean().to_dict() if f"chance_{metric}" in df else None
    figures[f"subjects_{metric}"] = plot_subjects(subjects, metric, chance)
    if any(r["history"] for r in results):
        figures["training"] = plot_training(results, labeler)
    return figures


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (for files, notebooks and data URIs)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ------------------------------------------------------------------------------------ dataset statistics

def dataset_statistics(datasets: Datasets, recordings: tp.Sequence[tp.Any] | None = None) -> pd.DataFrame:
    """Per study: channels, subjects, recordings, hours, train / valid / test segments and vocabulary sizes.

    ``vocabulary`` counts the distinct words of the word events of ``recordings`` (the
    :class:`bm2.studies.base.Recording` objects the datasets were built from) when given, else of the
    word-anchored segments; ``test vocabulary`` counts the distinct words of the test segments (the
    ``n_words`` of the evaluation). Train / valid segments are stride windows, test segments one per word.
    """
    recs = pd.DataFrame({"study": [r.study for r in datasets.recordings],
                         "subject": [r.subject for r in datasets.recordings],
                         "channels": [len(r.ch_names) for r in datasets.recordings],
                         "hours": [r.brain.array.shape[-1] / r.sample_rate / 3600 for r in datasets.recordings]})
    vocab: dict[str, set[str]] = {}
    for rec in recordings or []:
        events = rec.events()
        words = events.loc[events["kind"] == "word", "text"].dropna().astype(str)
        vocab.setdefault(rec.study, set()).update(words)
    rows = []
    for study, part in recs.groupby("study", sort=True):
        lo, hi = int(part.channels.min()), int(part.channels.max())
        row: dict[str, tp.Any] = {"study": study, "channels": str(lo) if lo == hi else f"{lo}–{hi}",
                                  "subjects": part.subject.nunique(), "recordings": len(part),
                                  "hours": round(float(part.hours.sum()), 3)}
        seg_words: set[str] = set()
        for split in ("train", "valid", "test"):
            seg = datasets[split].segments
            seg = seg[seg.study == study]
            row[f"{split} segments"] = len(seg)
            seg_words |= set(seg.loc[seg["kind"] == "word", "word"].astype(str))
            if split == "test":
                row["test vocabulary"] = seg.loc[seg["kind"] == "word", "word"].astype(str).nunique()
        row["vocabulary"] = len(vocab[study]) if study in vocab else len(seg_words)
        rows.append(row)
    return pd.DataFrame(rows).set_index("study")


def study_statistics(targets: tp.Sequence[Result | str | Path]) -> pd.DataFrame:
    """:func:`dataset_statistics` of the studies of ``targets``, rebuilt (from the cache) with the first XP of each.

    XPs of one study that differ in data options (window, split, study options) share the row of the first.
    """
    from .builders import build_all_datasets, select_recordings

    os.environ.setdefault("BM2_NO_PROGRESS", "1")
    tables: list[pd.DataFrame] = []
    done: set[str] = set()
    for res in _as_results(targets):
        selections = [str(s) for s in res["meta"].get("selections") or []]
        if not selections or set(selections) <= done:
            continue
        cfg = xp_config(res["folder"])
        tables.append(dataset_statistics(build_all_datasets(cfg), select_recordings(cfg, prepare=False)))
        done |= set(selections)
    if not tables:
        raise ResultsError("no XP with study selections in its summary: re-run scripts.run_eval_probs")
    out = pd.concat(tables)
    return out[~out.index.duplicated()].sort_index()
