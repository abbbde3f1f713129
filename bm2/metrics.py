"""Retrieval metrics: segment-level and word-level top-k over a set of candidates, and chance levels.

Scores are ``[N segments, O candidates]``; probabilities are their softmax over candidates. Segment-level
top-k: the true candidate is among the k best. Word-level top-k: probabilities are summed per unique word
and the true word must be among the k best words.

One chunked pass (:func:`target_ranks`) records, for every segment, how many candidates (words) score
strictly better than the true one and how many tie with it. Every top-k, for any k, per subject or
bootstrapped, follows from those two numbers, so memory stays bounded whatever N is.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np
import torch


@dataclasses.dataclass
class Ranks:
    """Per-segment rank of the true item: ``better`` strictly better-scored items, ``ties`` equal ones."""

    better: np.ndarray
    ties: np.ndarray

    def hits(self, k: int) -> np.ndarray:
        """Per-segment top-k hit in [0, 1]; ties are broken at random in expectation (so a constant score
        matrix scores exactly at chance, not at 0% or 100%)."""
        within = np.minimum(np.clip(k - self.better, 0, None), self.ties + 1)
        return within / (self.ties + 1)


def _ranks(values: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    true = values.gather(1, target[:, None])
    return (values > true).sum(dim=1), (values == true).sum(dim=1) - 1


def target_ranks(scores: torch.Tensor, target: torch.Tensor, candidate_words: torch.Tensor | None = None,
                 target_words: torch.Tensor | None = None, n_words: int | None = None, chunk: int = 1024
                 ) -> dict[str, Ranks]:
    """Segment-level (and, with words, word-level) ranks of the true item, ``chunk`` segments at a time.

    Parameters
    ----------
    scores : ``[N, O]`` scores (logits; softmax is applied to sum probabilities per word).
    target : ``[N]`` index of the true candidate of each segment.
    candidate_words : ``[O]`` word index of each candidate; ``target_words`` ``[N]`` the true word of each
        segment; ``n_words`` the number of distinct words.
    """
    parts: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"segment": [], "word": []}
    onehot = None
    if candidate_words is not None:
        if target_words is None or n_words is None:
            raise ValueError("word-level ranks need candidate_words, target_words and n_words")
        onehot = torch.zeros(scores.shape[1], n_words, dtype=torch.float32, device=scores.device)
        onehot[torch.arange(scores.shape[1]), candidate_words.to(scores.device)] = 1.0
    for a in range(0, scores.shape[0], chunk):
        s = scores[a:a + chunk].float()
        parts["segment"].append(_ranks(s, target[a:a + chunk].to(s.device)))
        if onehot is not None:
            word_probs = torch.softmax(s, dim=1) @ onehot
            parts["word"].append(_ranks(word_probs, target_words[a:a + chunk].to(s.device)))  # type: ignore[index]
    return {level: Ranks(torch.cat([p[0] for p in ps]).cpu().numpy(), torch.cat([p[1] for p in ps]).cpu().numpy())
            for level, ps in parts.items() if ps}


def topk_accuracy(scores: torch.Tensor, target: torch.Tensor, ks: tp.Sequence[int] = (1, 5, 10),
                  candidate_words: torch.Tensor | None = None, target_words: torch.Tensor | None = None,
                  n_words: int | None = None, chunk: int = 1024) -> dict[str, float]:
    """Mean segment-level (and, if words are given, word-level) top-k accuracy, in [0, 1]."""
    ranks = target_ranks(scores, target, candidate_words, target_words, n_words, chunk)
    return {f"top{k}_{level}": float(r.hits(k).mean()) if len(r.better) else 0.0
            for level, r in ranks.items() for k in ks}


def chance_levels(n_candidates: int, target_words: np.ndarray, n_words: int,
                  ks: tp.Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Chance top-k: uniform over candidates, uniform over words, and the word-frequency prior.

    The prior baseline always ranks words by their frequency among the test segments, so it is the
    accuracy of a decoder that ignores the brain but knows which words are common.
    """
    out = {}
    counts = np.bincount(np.asarray(target_words, dtype=np.int64), minlength=n_words)
    order = np.argsort(-counts, kind="stable")
    total = max(counts.sum(), 1)
    for k in ks:
        out[f"chance_top{k}_segment"] = min(k / max(n_candidates, 1), 1.0)
        out[f"chance_top{k}_word"] = min(k / max(n_words, 1), 1.0)
        out[f"prior_top{k}_word"] = float(counts[order[:k]].sum() / total)
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (resampling segments)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for i in range(0, n_boot, 100):  # 100 resamples at a time keeps memory at 100 x N
        idx = rng.integers(0, len(values), size=(min(100, n_boot - i), len(values)))
        means[i:i + len(idx)] = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))
