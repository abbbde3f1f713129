"""The result table of chained XPs (e.g. Du-IN's VQ-VAE -> MAE -> classifier): one row per way the classifier
was started (no pre-training, from each chain of pre-training stages, pre-trained on other subjects), test top-1
and top-5 as mean ± s.e. over subjects, and the chance level.

It reads what training wrote (``history.json`` and the config of each XP and of its ancestors), so it needs no
``eval/`` folder::

    records = load_chain(["outputs/xps/SIG1", "SIG2"])      # classification XPs (others are left out)
    print(to_markdown(chain_table(records)))

Model selection is the solver's, on validation only: ``top1`` / ``top5`` are the test metrics of the state of the
best validation epoch (first one on ties). The column ``optimistic top-1`` applies Du-IN's published rule instead
(``train/duin/run_cls.py``: the test accuracy of the best validation epoch, ties broken by the **highest test
accuracy**); it needs the per-epoch test metrics that ``test.each_epoch=true`` records (history stage
``test_epoch``) and is shown apart because it lets the test set choose among tied epochs.

Rows are labelled by the chain of pre-training stages the classifier descends from (``VQ-VAE``, ``VQ-VAE → MAE``,
names from :data:`STAGE_NAMES`, else the stage's ``loss.name``), ``no pre-training`` without a parent, and
``..., multi-subject pre-training`` when an ancestor was trained on other subjects than the classifier. A baseline
model of :data:`MODEL_NAMES` (``model.name``, e.g. braindecode's EEGConformer) gets a row of its own, its name
first: ``EEGConformer (braindecode), no pre-training``, after the ``no pre-training`` row. An XP's
subject is its ``dset.subjects`` (joined with ``+``; ``all`` when unset). Each subject's value is first averaged
over seeds; the s.e. is the sample sd over subjects divided by sqrt(n) (undefined for one subject).
"""

from __future__ import annotations

import json
import math
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from .load import CHANCE_ROW, MISSING, ResultsError, resolve_folders

#: display names of pre-training stages, by ``loss.name``
STAGE_NAMES = {"duin_vqvae": "VQ-VAE", "duin_mae": "MAE", "clip": "CLIP", "mse": "regression"}
#: display names of baseline models (``model.name``) whose classifiers get rows of their own
MODEL_NAMES = {"eegconformer": "EEGConformer (braindecode)", "eegnet": "EEGNet (braindecode)",
               "shallowfbcspnet": "ShallowFBCSPNet (braindecode)"}
NO_PRETRAINING = "no pre-training"
MULTI_SUBJECT = "multi-subject pre-training"
COLUMNS = ("top-1 %", "top-5 %", "optimistic top-1 %", "subjects")


def _config(folder: Path) -> dict[str, tp.Any]:
    from omegaconf import OmegaConf

    from .labels import xp_config

    try:
        return tp.cast(dict, OmegaConf.to_container(xp_config(folder), resolve=False))
    except Exception as exc:  # noqa: BLE001  (no .hydra/config.yaml and no readable checkpoint)
        raise ResultsError(f"XP {folder.name}: no readable config in {folder} (.hydra/config.yaml or "
                           f"checkpoint.th): {exc}") from exc


def _get(cfg: dict[str, tp.Any], path: str, default: tp.Any = None) -> tp.Any:
    node: tp.Any = cfg
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _subjects(cfg: dict[str, tp.Any]) -> str:
    subjects = _get(cfg, "dset.subjects")
    return "+".join(str(s) for s in subjects) if subjects else "all"


def _parent_sig(cfg: dict[str, tp.Any], folder: Path) -> str | None:
    parent = _get(cfg, "chain.parent")
    if not parent:
        return None
    if not isinstance(parent, str):
        raise ResultsError(f"XP {folder.name}: chain.parent={parent!r} is not a signature; the chain table needs "
                           "parents named by signature (as grids/_chain.py's stage() does)")
    return parent


def load_chain(targets: tp.Sequence[str | Path]) -> list[dict[str, tp.Any]]:
    """One record per finished classification XP of ``targets`` (XP folders, signatures or grid names; other
    tasks are left out): ``sig``, ``folder``, ``history``, ``config``, ``subject``, ``seed`` and ``ancestors``
    (``[{sig, loss, subject}]`` from the root to the parent, read from the parents' folders next to the XP).

    Raises :class:`ResultsError` when an XP has not finished (naming the command that trains it), when a
    parent's folder is missing, or when no classification XP is given."""
    records = []
    for folder in resolve_folders(targets):
        cfg = _config(folder)
        if _get(cfg, "test.task") != "classification":
            continue
        path = folder / "history.json"
        history = json.loads(path.read_text()) if path.exists() else []
        if not history or "test" not in history[-1]:
            raise ResultsError(f"XP {folder.name} has not finished ({len(history)} epochs, no test results): run "
                               f"`dora run -f {folder.name}` to completion")
        ancestors: list[dict[str, str]] = []
        sig, node = _parent_sig(cfg, folder), folder
        while sig is not None:
            parent = node.parent / sig
            if not parent.is_dir():
                raise ResultsError(f"XP {node.name}: its parent {sig} is not in {node.parent}")
            pcfg = _config(parent)
            ancestors.insert(0, {"sig": sig, "loss": str(_get(pcfg, "loss.name", "?")),
                                 "subject": _subjects(pcfg)})
            sig, node = _parent_sig(pcfg, parent), parent
        records.append({"sig": folder.name, "folder": folder, "history": history, "config": cfg,
                        "subject": _subjects(cfg), "seed": int(_get(cfg, "seed", 0)), "ancestors": ancestors})
    if not records:
        raise ResultsError(f"no classification XP among {list(targets)}: give the classifiers' signatures or "
                           "folders (pre-training XPs are read through their chain.parent)")
    return records


def stage_label(record: dict[str, tp.Any]) -> str:
    """The row of an XP: ``no pre-training``, or its pre-training stages joined by ``→`` (``VQ-VAE → MAE``),
    plus ``, multi-subject pre-training`` when an ancestor saw other subjects; prefixed by the model's name
    (``EEGConformer (braindecode), ...``) for a model of :data:`MODEL_NAMES`."""
    ancestors = record["ancestors"]
    if not ancestors:
        label = NO_PRETRAINING
    else:
        label = " → ".join(STAGE_NAMES.get(a["loss"], a["loss"]) for a in ancestors)
        if any(a["subject"] != record["subject"] for a in ancestors):
            label += f", {MULTI_SUBJECT}"
    model = MODEL_NAMES.get(str(_get(record["config"], "model.name")))
    return f"{model}, {label}" if model else label


def optimistic_top1(history: tp.Sequence[dict[str, tp.Any]], metric: str = "top1", mode: str = "max") -> float:
    """Du-IN's selection rule (module docstring): among the epochs with the best validation ``metric``, the highest
    per-epoch test top-1 (``test_epoch`` stage); NaN when the history has no per-epoch test metrics."""
    scored = [h for h in history if metric in h.get("valid", {}) and "top1" in h.get("test_epoch", {})]
    if not scored:
        return float("nan")
    values = [float(h["valid"][metric]) for h in scored]
    best = max(values) if mode == "max" else min(values)
    return max(float(h["test_epoch"]["top1"]) for h, v in zip(scored, values) if v == best)


def chain_rows(records: tp.Sequence[dict[str, tp.Any]]) -> pd.DataFrame:
    """One row per XP: ``sig``, ``stage`` (:func:`stage_label`), ``subject``, ``seed``, ``top1``, ``top5``,
    ``optimistic_top1``, ``chance_top1``, ``chance_top5`` (percent) and ``n_test`` (scored test windows)."""
    rows = []
    for rec in records:
        test = rec["history"][-1]["test"]
        metric = str(_get(rec["config"], "optim.best_metric") or "top1")
        mode = str(_get(rec["config"], "optim.best_mode") or ("min" if metric == "loss" else "max"))

        def pct(key: str, values: dict[str, tp.Any] = test) -> float:
            value = values.get(key)
            return float("nan") if value is None else 100.0 * float(value)

        rows.append({"sig": rec["sig"], "stage": stage_label(rec), "subject": rec["subject"], "seed": rec["seed"],
                     "top1": pct("top1"), "top5": pct("top5"),
                     "optimistic_top1": 100.0 * optimistic_top1(rec["history"], metric, mode),
                     "chance_top1": pct("chance_top1"), "chance_top5": pct("chance_top5"),
                     "n_test": float(test.get("n_items", float("nan")))})
    return pd.DataFrame(rows)


def _mean_se(values: pd.Series, decimals: int) -> str:
    values = values.dropna()
    if values.empty:
        return MISSING
    mean = float(values.mean())
    if len(values) < 2:
        return f"{mean:.{decimals}f}"
    se = float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return f"{mean:.{decimals}f} ± {se:.{decimals}f}"


def _mean_only(values: pd.Series, decimals: int) -> str:
    values = values.dropna()
    return MISSING if values.empty else f"{float(values.mean()):.{decimals}f}"


def _order(label: str) -> tuple[int, int, int, str]:
    baseline = label.startswith(tuple(f"{name}, " for name in MODEL_NAMES.values()))
    return (label != NO_PRETRAINING, not baseline, label.count("→") + (MULTI_SUBJECT in label) * 10, label)


def chain_table(records: tp.Sequence[dict[str, tp.Any]] | pd.DataFrame, decimals: int = 1) -> pd.DataFrame:
    """Rows: stages (:func:`stage_label`, no pre-training first, then the baseline models) and ``chance``; columns
    :data:`COLUMNS`: test
    top-1 and top-5 (validation-only selection) and the optimistic top-1, as ``mean ± s.e.`` over subjects in
    percent (each subject averaged over seeds first), and the number of subjects. The chance row gives the
    uniform chance top-1 / top-5 (1 / K and 5 / K for K classes; mean over the XPs if they differ)."""
    df = records if isinstance(records, pd.DataFrame) else chain_rows(records)
    per_subject = df.groupby(["stage", "subject"], sort=False)[["top1", "top5", "optimistic_top1"]].mean()
    labels = sorted(per_subject.index.get_level_values("stage").unique(), key=_order)
    table = pd.DataFrame(MISSING, index=pd.Index([*labels, CHANCE_ROW], name="stage"), columns=list(COLUMNS),
                         dtype=object)
    for label in labels:
        part = per_subject.loc[label]
        table.loc[label] = [_mean_se(part["top1"], decimals), _mean_se(part["top5"], decimals),
                            _mean_se(part["optimistic_top1"], decimals), str(len(part))]
    chance = [_mean_only(df[key], decimals) for key in ("chance_top1", "chance_top5", "chance_top1")]
    table.loc[CHANCE_ROW] = [*chance, MISSING]
    return table


__all__ = ["COLUMNS", "MODEL_NAMES", "MULTI_SUBJECT", "NO_PRETRAINING", "STAGE_NAMES", "chain_rows", "chain_table",
           "load_chain", "optimistic_top1", "stage_label"]
