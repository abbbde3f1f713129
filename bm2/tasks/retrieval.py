"""Retrieval (brainmagick): rank the unique test speech segments for every brain window.

Candidates are the **unique** test segments (first occurrence of each (sentence, word position) across
subjects, sessions and recordings); each test segment is scored against all candidates, and the metrics of
:mod:`bm2.metrics` are computed in chunks.
"""

from __future__ import annotations

import dataclasses
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import SegmentDataset, collate
from ..metrics import Ranks, bootstrap_ci, chance_levels, target_ranks
from .base import Task, atomic_write, run_model, write_probs, write_summary


def candidate_table(segments: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Unique candidates (first occurrence of each ``segment_uid``) and each segment's candidate index."""
    first = ~segments.segment_uid.duplicated()
    candidates = segments[first.to_numpy()].reset_index()
    position = {uid: i for i, uid in enumerate(candidates.segment_uid)}
    target = segments.segment_uid.map(position).to_numpy(dtype=np.int64)
    return candidates, target


def clip_scores(estimates: torch.Tensor, candidates: torch.Tensor, scorer: tp.Callable | None = None,
                chunk: int = 1024) -> torch.Tensor:
    """``[N, O]`` contrastive scores, computed ``chunk`` segments at a time."""
    if scorer is None:
        from ..losses import ClipLoss

        scorer = ClipLoss().scores
    return torch.cat([scorer(estimates[a:a + chunk], candidates) for a in range(0, len(estimates), chunk)])


@dataclasses.dataclass
class RetrievalResult:
    """Everything the retrieval evaluation produces for one XP.

    ``segments`` has one row per test segment (metadata, ``target`` candidate, ``word``, and the rank of the
    true candidate / word: ``better_segment``, ``ties_segment``, ``better_word``, ``ties_word``);
    ``candidates`` one row per unique candidate; ``probs`` the ``[N, O]`` softmax over candidates.
    """

    task: tp.ClassVar[str] = "retrieval"

    metrics: dict[str, float]
    groups: dict[str, dict[str, dict[str, float]]]
    segments: pd.DataFrame
    candidates: pd.DataFrame
    probs: np.ndarray | None = None

    def save(self, folder: str | Path, meta: dict[str, tp.Any] | None = None) -> None:
        """Write ``probs.npy``, ``candidates.csv``, ``segments.csv`` and ``summary.json`` (atomically)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_probs(folder, self.probs)
        atomic_write(folder / "candidates.csv", lambda f: self.candidates.to_csv(f, index=False))
        atomic_write(folder / "segments.csv", lambda f: self.segments.to_csv(f, index=False))
        write_summary(folder, "retrieval", meta, self.metrics, self.groups)




def _summarise(ranks: dict[str, Ranks], ks: tp.Sequence[int], rows: np.ndarray | None = None) -> dict[str, float]:
    out = {}
    for level, r in ranks.items():
        for k in ks:
            hits = r.hits(k) if rows is None else r.hits(k)[rows]
            out[f"top{k}_{level}"] = float(hits.mean()) if len(hits) else float("nan")
    return out


def retrieval_from_scores(scores: torch.Tensor, segments: pd.DataFrame, ks: tp.Sequence[int] = (1, 5, 10),
                          keep_probs: bool = False, n_boot: int = 1000,
                          group_by: tp.Sequence[str] = ("subject", "study")) -> RetrievalResult:
    """Metrics from ``[N, O]`` scores of ``segments`` against their unique candidates (:func:`candidate_table`)."""
    segments = segments.reset_index(drop=True)
    candidates, target = candidate_table(segments)
    if scores.shape != (len(segments), len(candidates)):
        raise ValueError(f"scores of shape {tuple(scores.shape)} for {len(segments)} segments and "
                         f"{len(candidates)} candidates")
    words = sorted(set(candidates.word))
    word_index = {w: i for i, w in enumerate(words)}
    candidate_words = torch.tensor([word_index[w] for w in candidates.word])
    target_words = torch.tensor([word_index[w] for w in segments.word])
    ranks = target_ranks(scores, torch.tensor(target), candidate_words, target_words, len(words))
    metrics = _summarise(ranks, ks)
    metrics.update(chance_levels(len(candidates), target_words.numpy(), len(words), ks))
    for level, r in ranks.items():
        for k in ks:
            lo, hi = bootstrap_ci(r.hits(k), n_boot=n_boot)
            metrics[f"top{k}_{level}_ci_low"], metrics[f"top{k}_{level}_ci_high"] = lo, hi
    metrics.update(n_segments=float(len(segments)), n_candidates=float(len(candidates)), n_words=float(len(words)))
    table = segments.drop(columns=["index"], errors="ignore").copy()
    table["target"] = target
    for level, r in ranks.items():
        table[f"better_{level}"], table[f"ties_{level}"] = r.better, r.ties
    groups = {}
    for col in group_by:
        if col in table.columns:
            groups[col] = {str(v): _summarise(ranks, ks, np.flatnonzero((table[col] == v).to_numpy()))
                           for v in sorted(table[col].unique(), key=str)}
    cand = candidates.drop(columns=["index"], errors="ignore")
    probs = torch.softmax(scores.float(), dim=1).cpu().numpy() if keep_probs else None
    return RetrievalResult(metrics, groups, table, cand, probs)


def evaluate_retrieval(estimates: torch.Tensor, features: torch.Tensor, segments: pd.DataFrame,
                       ks: tp.Sequence[int] = (1, 5, 10), scorer: tp.Callable | None = None,
                       keep_probs: bool = False, n_boot: int = 1000) -> RetrievalResult:
    """Retrieval metrics of in-memory ``estimates`` (one per segment) against the segments' ``features``."""
    if len(segments) != len(estimates):
        raise ValueError(f"{len(estimates)} estimates for {len(segments)} segments")
    candidates, _ = candidate_table(segments.reset_index(drop=True))
    cand_features = features[torch.tensor(candidates["index"].to_numpy())]
    scores = clip_scores(estimates, cand_features, scorer)
    return retrieval_from_scores(scores, segments, ks, keep_probs, n_boot)


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset: SegmentDataset, scorer: tp.Callable | None = None,
                   ks: tp.Sequence[int] = (1, 5, 10), keep_probs: bool = False, batch_size: int = 128,
                   device: str | torch.device = "cpu", num_workers: int = 0, n_boot: int = 1000) -> RetrievalResult:
    """Retrieval metrics of ``model`` on ``dataset`` (the test split), with bounded memory.

    Only the candidates' features ``[O, D, T]`` and the score matrix ``[N, O]`` are held: the model's
    estimates are scored batch by batch and dropped.
    """
    if len(dataset) == 0:
        raise ValueError("the test split is empty: nothing to evaluate (check dset.split and the selections)")
    candidates, _ = candidate_table(dataset.segments)
    cand_features = torch.stack([torch.from_numpy(dataset.feature_window(int(i))) for i in candidates["index"]])
    cand_features = cand_features.to(device)
    if scorer is None:
        from ..losses import ClipLoss

        scorer = ClipLoss().scores
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                                         num_workers=num_workers)
    was_training = model.training
    model.eval()
    scores = []
    for batch in loader:
        est = run_model(model, batch, device)["output"]
        scores.append(scorer(est.float(), cand_features).cpu())
    model.train(was_training)
    return retrieval_from_scores(torch.cat(scores), dataset.segments, ks, keep_probs, n_boot)


def retrieval_metrics(estimates: torch.Tensor, features: torch.Tensor, segments: pd.DataFrame,
                      ks: tp.Sequence[int] = (1, 5, 10), scorer: tp.Callable | None = None
                      ) -> dict[str, float]:
    """The overall metrics of :func:`evaluate_retrieval`."""
    return evaluate_retrieval(estimates, features, segments, ks, scorer, n_boot=200).metrics


def results_table(metrics: dict[str, float], ks: tp.Sequence[int] = (1, 10)) -> str:
    """A markdown table of test top-k (in %) next to chance."""
    lines = ["| level | " + " | ".join(f"top-{k} %" for k in ks) + " | " +
             " | ".join(f"chance top-{k} %" for k in ks) + " |",
             "|---" * (1 + 2 * len(ks)) + "|"]
    for level in ("segment", "word"):
        if f"top{ks[0]}_{level}" not in metrics:
            continue
        acc = " | ".join(f"{100 * metrics[f'top{k}_{level}']:.1f}" for k in ks)
        chance = " | ".join(f"{100 * metrics[f'chance_top{k}_{level}']:.1f}" for k in ks)
        lines.append(f"| {level} | {acc} | {chance} |")
    return "\n".join(lines)


class RetrievalTask(Task):
    """Retrieval of speech segments among the unique test candidates (brainmagick)."""

    name = "retrieval"
    targets = ("features",)
    headline = ("top1_segment", "top10_segment", "top1_word", "top10_word")
    main_metric = "top10_segment"
    best = ("loss", "min")

    def evaluate(self, model: torch.nn.Module, dataset: tp.Any, scorer: tp.Callable | None = None,
                 **kwargs: tp.Any) -> RetrievalResult:
        kwargs.pop("objective", None)
        kwargs.pop("train", None)  # the other tasks take the training split (priors); retrieval needs none
        if kwargs.pop("quick", False):  # validation metrics: bootstrap intervals are not worth their cost
            kwargs.setdefault("n_boot", 20)
        return evaluate_model(model, dataset, scorer, **kwargs)

    def table(self, metrics: dict[str, float]) -> str:
        return results_table(metrics)

    def selection_metrics(self, ks: tp.Sequence[int] = (1, 5, 10)) -> tuple[str, ...]:
        return tuple(f"top{k}_{level}" for k in ks for level in ("segment", "word"))
