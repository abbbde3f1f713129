"""Test-set retrieval evaluation shared by the solver's test stage and the evaluation scripts.

Candidates are the **unique** test segments (first occurrence of each (sentence, word position) across
subjects, sessions and recordings); each test segment is scored against all candidates, and the metrics of
:mod:`bm2.metrics` are computed in chunks.
"""

from __future__ import annotations

import typing as tp

import numpy as np
import pandas as pd
import torch

from .data import SegmentDataset, collate
from .metrics import chance_levels, topk_accuracy


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: SegmentDataset, batch_size: int = 128,
            device: str | torch.device = "cpu", num_workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Model estimates and true features for every item of ``dataset``, in dataset order (on CPU)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                                         num_workers=num_workers)
    was_training = model.training
    model.eval()
    estimates, features = [], []
    for batch in loader:
        est = model(batch["brain"].to(device), batch["subject_index"].to(device),
                    batch["positions"].to(device), batch["mask"].to(device))
        estimates.append(est.float().cpu())
        features.append(batch["features"])
    model.train(was_training)
    if not estimates:
        raise ValueError("the test split is empty: nothing to evaluate (check dset.split and the selections)")
    return torch.cat(estimates), torch.cat(features)


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
        from .losses import ClipLoss

        scorer = ClipLoss().scores
    return torch.cat([scorer(estimates[a:a + chunk], candidates) for a in range(0, len(estimates), chunk)])


def retrieval_metrics(estimates: torch.Tensor, features: torch.Tensor, segments: pd.DataFrame,
                      ks: tp.Sequence[int] = (1, 5, 10), scorer: tp.Callable | None = None
                      ) -> dict[str, float]:
    """Segment- and word-level top-k of ``estimates`` against the unique test candidates, with chance."""
    if len(segments) != len(estimates):
        raise ValueError(f"{len(estimates)} estimates for {len(segments)} segments")
    candidates, target = candidate_table(segments.reset_index(drop=True))
    cand_features = features[torch.tensor(candidates["index"].to_numpy())]
    words = sorted(set(candidates.word))
    word_index = {w: i for i, w in enumerate(words)}
    candidate_words = torch.tensor([word_index[w] for w in candidates.word])
    target_words = torch.tensor([word_index[w] for w in segments.word])
    scores = clip_scores(estimates, cand_features, scorer)
    metrics = topk_accuracy(scores, torch.tensor(target), ks, candidate_words, target_words, len(words))
    metrics.update(chance_levels(len(candidates), target_words.numpy(), len(words), ks))
    metrics.update(n_segments=float(len(segments)), n_candidates=float(len(candidates)),
                   n_words=float(len(words)))
    return metrics


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
