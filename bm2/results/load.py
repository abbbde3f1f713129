"""Loading evaluated XPs: constants, errors, :func:`load_xp_results`, :func:`load_all` and notebook helpers."""

from __future__ import annotations

import json
import os
import re
import typing as tp
from pathlib import Path

import pandas as pd

Result = dict[str, tp.Any]
Labeler = tp.Callable[[Result], str]

# Rows of the main table in the paper's order; other labels follow alphabetically.
KNOWN_LABELS = ("random", "mel regression", "mel + contrastive", "wav2vec 2.0 + contrastive")
CHANCE_ROW = "chance"
MISSING = "–"
STANDARD_METRICS = ("top1_segment", "top10_segment", "top1_word", "top10_word")  # retrieval's headline
_METRIC = re.compile(r"^top(\d+)_(segment|word)$")


class ResultsError(RuntimeError):
    """Results cannot be loaded or tabulated; the message says what to do."""


class MissingEvalError(ResultsError):
    """An XP has not been evaluated (no ``eval/summary.json``)."""

    def __init__(self, sig: str, path: Path) -> None:
        super().__init__(f"XP {sig} has no evaluation ({path} is missing): {_eval_hint(sig)}")
        self.sig = sig


# ------------------------------------------------------------------------------------------------ metrics

def headline_metrics(task: str) -> tuple[str, ...]:
    """The headline metrics of ``task`` (:attr:`bm2.tasks.Task.headline`); none for an unknown task."""
    from ..tasks import TASKS

    return tuple(TASKS[task].headline) if task in TASKS else ()


def main_metric(task: str) -> str | None:
    """The metric of ``task``'s main table (:attr:`bm2.tasks.Task.main_metric`, else its first headline one)."""
    from ..tasks import TASKS

    if task not in TASKS:
        return None
    return TASKS[task].main_metric or (TASKS[task].headline[0] if TASKS[task].headline else None)


def is_percent(key: str) -> bool:
    """True for metrics shown in percent (fractions of windows / samples); False for counts (``n_*``),
    correlations (``*pcc*``), STOI, p-values and the detection threshold, shown as they are."""
    return not (key.startswith("n_") or "pcc" in key or "stoi" in key or key.endswith("p_value")
                or key == "threshold")


def resolve_metric(results: tp.Sequence[Result], metric: str | None = None) -> str:
    """``metric``, checked against the metrics of ``results``; by default the main metric of their first task."""
    available = sorted({k for r in results for k in r["metrics"]})
    if metric is None:
        tasks = list(dict.fromkeys(r.get("task", "retrieval") for r in results))
        metric = main_metric(tasks[0]) if tasks else None
        if metric is None:
            raise ResultsError(f"no default metric for task {tasks[0] if tasks else '?'}: choose one with --metric "
                               f"among {available}")
    if metric not in available:
        tasks = sorted({str(r.get("task", "retrieval")) for r in results})
        raise ResultsError(f"metric {metric!r} is in no summary of these XPs (tasks {tasks}); available: "
                           f"{available}")
    return metric


# ----------------------------------------------------------------------------------------------- loading

def _eval_hint(sig: str) -> str:
    return f"run `python -m scripts.run_eval_probs {sig}` first"


def load_xp_results(xp_folder: str | Path) -> Result:
    """Summary, per-segment table and training history of one evaluated XP folder.

    Returns a dict with ``sig``, ``folder``, ``task`` (the ``task`` of the summary: retrieval,
    classification, detection, reconstruction), ``summary``, ``meta``, ``metrics`` (fractions), ``groups``,
    ``segments`` (retrieval's ``segments.csv`` as a DataFrame, else None), ``items`` (the other tasks'
    ``items.csv``, else None) and ``history`` (list of epochs).
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
    task = str(summary.get("task", "retrieval"))
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
    items = None
    items_path = folder / "eval" / "items.csv"
    if items_path.exists():
        items = pd.read_csv(items_path, dtype={c: str for c in ("study", "subject", "recording_uid", "label_name",
                                                               "prediction_name")}, keep_default_na=False,
                            na_values={c: [""] for c in ("p_true", "stoi", "pcc_window", "prob_mean")})
    history_path = folder / "history.json"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    return {"sig": sig, "folder": folder, "task": task, "summary": summary, "meta": meta,
            "metrics": dict(summary.get("metrics") or {}), "groups": dict(summary.get("groups") or {}),
            "segments": segments, "items": items, "history": history}


def _is_xp_path(target: str) -> bool:
    return os.sep in target or target.startswith(".") or Path(target).is_dir()


def _dora_finder() -> tuple[type[Exception], tp.Callable[[tp.Sequence[str]], list[tp.Any]]]:
    """:mod:`bm2.tasks.evaluate`'s error class and ``find_xps`` (imported lazily: Dora loads the Hydra config)."""
    from ..tasks.evaluate import EvalError, find_xps

    return EvalError, find_xps


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


