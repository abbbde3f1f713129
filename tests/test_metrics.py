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


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    from bm2.metrics import bootstrap_ci

    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.3
    big = rng.random(5000) < 0.3
    lo_s, hi_s = bootstrap_ci(small, n_boot=500)
    lo_b, hi_b = bootstrap_ci(big, n_boot=500)
    assert lo_s <= small.mean() <= hi_s and lo_b <= big.mean() <= hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 5  # ~ 1 / sqrt(n)
    # the 95% interval of a Bernoulli(0.3) mean over 5000 draws is about ±1.27 points
    assert (hi_b - lo_b) == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / 5000), rel=0.2)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_evaluate_model_streams_and_matches_in_memory_evaluation(array_recording, tmp_path):
    from bm2.cache import Cache
    from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
    from bm2.evaluation import evaluate_model, evaluate_retrieval
    from bm2.features import FeatureStack, WordOnset
    from bm2.models import build_model
    from bm2.preprocessing import PreprocessParams

    recs = [array_recording(seed=s, subject=f"0{s}", seconds=20.0) for s in (1, 2)]
    data = build_datasets(recs, Cache(tmp_path), PreprocessParams(), FeatureStack([WordOnset()]),
                          WindowParams(tmin=-0.2, tmax=1.0, offset_ms=100), SplitParams(test=0.5, valid=0.0, seed=1),
                          NormParams(n_fit_windows=5))
    assert len(data.test) > 0
    torch.manual_seed(0)
    model = build_model("simpleconv", out_channels=1, n_subjects=2, merger_channels=8, merger_pos_dim=32,
                        hidden=8, depth=2, head_hidden=8).eval()
    streamed = evaluate_model(model, data.test, batch_size=3, n_boot=10)
    items = [data.test[i] for i in range(len(data.test))]
    with torch.no_grad():
        est = torch.cat([model(it["brain"][None], torch.tensor([it["subject_index"]]), it["positions"][None],
                               torch.ones(1, it["brain"].shape[0], dtype=torch.bool)) for it in items])
    feats = torch.stack([it["features"] for it in items])
    direct = evaluate_retrieval(est, feats, data.test.segments, n_boot=10)
    for key in ("top1_segment", "top5_segment", "top1_word", "n_candidates"):
        assert streamed.metrics[key] == pytest.approx(direct.metrics[key])
    # the two subjects heard the same sentences: candidates are deduplicated across them
    assert streamed.metrics["n_candidates"] < streamed.metrics["n_segments"]
