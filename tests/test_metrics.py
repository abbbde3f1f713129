import numpy as np
import pandas as pd
import pytest
import torch

from bm2.evaluation import candidate_table, retrieval_metrics
from bm2.metrics import chance_levels, topk_accuracy


def test_topk_on_hand_made_scores():
    scores = torch.tensor([[0.9, 0.1, 0.0, 0.2],   # target 0: rank 0
                           [0.9, 0.1, 0.0, 0.2],   # target 3: rank 1
                           [0.9, 0.1, 0.0, 0.2],   # target 2: rank 3
                           [0.0, 0.5, 0.4, 0.3]])  # target 1: rank 0
    target = torch.tensor([0, 3, 2, 1])
    m = topk_accuracy(scores, target, ks=(1, 2, 4))
    assert m["top1_segment"] == pytest.approx(2 / 4)
    assert m["top2_segment"] == pytest.approx(3 / 4)
    assert m["top4_segment"] == pytest.approx(1.0)


def test_ties_score_at_chance_and_chunking_is_invisible():
    scores = torch.zeros(50, 20)
    target = torch.randint(0, 20, (50,))
    assert topk_accuracy(scores, target, ks=(1, 5))["top5_segment"] == pytest.approx(5 / 20)
    rand = torch.randn(37, 11)
    t = torch.randint(0, 11, (37,))
    assert topk_accuracy(rand, t, chunk=4) == topk_accuracy(rand, t, chunk=1000)


def test_word_level_sums_probabilities_per_word():
    # candidates 0 and 1 are the word "a", 2 is "b". Segment target = candidate 2 ("b").
    scores = torch.log(torch.tensor([[0.3, 0.3, 0.4]]))
    m = topk_accuracy(scores, torch.tensor([2]), ks=(1,), candidate_words=torch.tensor([0, 0, 1]),
                      target_words=torch.tensor([1]), n_words=2)
    assert m["top1_segment"] == 1.0  # 0.4 is the best single candidate
    assert m["top1_word"] == 0.0     # but "a" totals 0.6 > 0.4


def test_chance_levels():
    c = chance_levels(200, np.array([0, 0, 0, 1, 2]), n_words=3, ks=(1, 10))
    assert c["chance_top1_segment"] == pytest.approx(1 / 200)
    assert c["chance_top10_word"] == 1.0
    assert c["prior_top1_word"] == pytest.approx(3 / 5)


def test_candidates_deduplicated_across_subjects():
    seg = pd.DataFrame({"segment_uid": ["x", "y", "x", "z", "y"], "word": ["a", "b", "a", "a", "b"],
                        "subject": ["1", "1", "2", "2", "3"]})
    cand, target = candidate_table(seg)
    assert cand.segment_uid.tolist() == ["x", "y", "z"]
    assert target.tolist() == [0, 1, 0, 2, 1]


def test_retrieval_metrics_perfect_and_random():
    torch.manual_seed(0)
    n_cand = 30
    feats = torch.randn(n_cand, 4, 10)
    uids = [f"u{i}" for i in range(n_cand)]
    # each candidate seen by two subjects
    seg = pd.DataFrame({"segment_uid": uids * 2, "word": [f"w{i % 10}" for i in range(n_cand)] * 2})
    features = torch.cat([feats, feats])
    perfect = retrieval_metrics(features * 10, features, seg, ks=(1, 10))
    assert perfect["top1_segment"] == 1.0 and perfect["top1_word"] == 1.0
    assert perfect["n_candidates"] == n_cand and perfect["n_segments"] == 2 * n_cand
    assert perfect["chance_top10_segment"] == pytest.approx(10 / n_cand)
    noise = retrieval_metrics(torch.randn(2 * n_cand, 4, 10), features, seg, ks=(1, 10))
    assert noise["top1_segment"] < 0.5
