"""Retrieval metrics: segment-level and word-level top-k over a set of candidates, and chance levels.

Scores are ``[N segments, O candidates]``; probabilities are their softmax over candidates. Segment-level
top-k: the true candidate is among the k best. Word-level top-k: probabilities are summed per unique word
and the true word must be among the k best words. Everything runs in chunks of segments, so memory stays
bounded whatever N is.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import torch


def _topk_hits(values: torch.Tensor, target: torch.Tensor, ks: tp.Sequence[int]) -> dict[int, torch.Tensor]:
    """Per-segment hit (in [0, 1]) for each k; ties are broken at random in expectation, so a constant
    score matrix scores exactly at chance rather than at 100% or 0%."""
    true = values.gather(1, target[:, None])
    better = (values > true).sum(dim=1)
    ties = (values == true).sum(dim=1) - 1  # other candidates scored exactly like the target
    out = {}
    for k in ks:
        # the target's rank is uniform in [better, better + ties]: expected hit rate under random tie-breaking
        within = torch.minimum((k - better).clamp(min=0), ties + 1)
        out[k] = within.float() / (ties + 1).float()
    return out


def topk_accuracy(scores: torch.Tensor, target: torch.Tensor, ks: tp.Sequence[int] = (1, 5, 10),
                  candidate_words: torch.Tensor | None = None, target_words: torch.Tensor | None = None,
                  n_words: int | None = None, chunk: int = 1024) -> dict[str, float]:
    """Segment-level (and, if words are given, word-level) top-k accuracy, in [0, 1].

    Parameters
    ----------
    scores : ``[N, O]`` scores (any monotonic transform of probabilities; softmax is applied for words).
    target : ``[N]`` index of the true candidate of each segment.
    candidate_words : ``[O]`` word index of each candidate; ``target_words`` ``[N]`` word index of each
        segment; ``n_words`` the number of distinct words.
    """
    n = scores.shape[0]
    sums = {f"top{k}_segment": 0.0 for k in ks}
    if candidate_words is not None:
        sums.update({f"top{k}_word": 0.0 for k in ks})
        assert target_words is not None and n_words is not None
        onehot = torch.zeros(scores.shape[1], n_words, dtype=torch.float32, device=scores.device)
        onehot[torch.arange(scores.shape[1]), candidate_words.to(scores.device)] = 1.0
    for a in range(0, n, chunk):
        s = scores[a:a + chunk].float()
        for k, hit in _topk_hits(s, target[a:a + chunk].to(s.device), ks).items():
            sums[f"top{k}_segment"] += float(hit.sum())
        if candidate_words is not None:
            probs = torch.softmax(s, dim=1)
            word_probs = probs @ onehot
            tw = target_words[a:a + chunk].to(s.device)  # type: ignore[index]
            for k, hit in _topk_hits(word_probs, tw, ks).items():
                sums[f"top{k}_word"] += float(hit.sum())
    return {key: value / max(n, 1) for key, value in sums.items()}


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
