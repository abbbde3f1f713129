"""Dataset statistics of the studies of XPs."""

from __future__ import annotations

import os
import typing as tp
from pathlib import Path

import pandas as pd

if tp.TYPE_CHECKING:
    from ..data import Datasets

from .load import Result, ResultsError
from .labels import xp_config
from .tables import _as_results


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
    from ..builders import build_all_datasets, select_recordings

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
