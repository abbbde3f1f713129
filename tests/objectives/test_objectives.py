"""Objectives: named terms, weights (0 = logged only), float32 terms, unknown labels ignored."""

import pytest
import torch
from torch.nn import functional as F

from bm2.objectives import build_objective, class_logits, sample_logits


def test_cross_entropy_pools_time_and_ignores_unknown_labels():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5)
    label = torch.tensor([0, 2, -1, 1])
    obj = build_objective("cross_entropy")
    terms = obj({"label": label}, {"output": logits})
    expected = F.cross_entropy(logits.mean(-1)[[0, 1, 3]], label[[0, 1, 3]])
    torch.testing.assert_close(terms["cross_entropy"], expected)
    assert obj.weights == {"cross_entropy": 1.0, "accuracy": 0.0}
    torch.testing.assert_close(obj.total(terms), expected)  # accuracy (weight 0) is logged only
    acc = (logits.mean(-1).argmax(1)[[0, 1, 3]] == label[[0, 1, 3]]).float().mean()
    torch.testing.assert_close(terms["accuracy"], acc)


def test_weights_scale_terms_and_unknown_weights_are_refused():
    obj = build_objective("cross_entropy", weights={"cross_entropy": 0.5})
    terms = {"cross_entropy": torch.tensor(2.0), "accuracy": torch.tensor(1.0)}
    assert float(obj.total(terms)) == 1.0
    with pytest.raises(KeyError, match="unknown weights"):
        build_objective("cross_entropy", weights={"focal": 1.0})
    with pytest.raises(KeyError, match="valid names"):
        build_objective("nope")


def test_bce_per_sample_and_float32_under_bf16_outputs():
    logits = torch.randn(2, 1, 6).bfloat16()
    speech = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.float32)
    terms = build_objective("bce")({"speech": speech}, {"output": logits})
    assert terms["bce"].dtype == torch.float32
    torch.testing.assert_close(terms["bce"], F.binary_cross_entropy_with_logits(logits.float()[:, 0], speech))
    with pytest.raises(ValueError, match="keep the time length"):
        build_objective("bce")({"speech": speech[:, :4]}, {"output": logits})


def test_feature_objectives_expose_their_loss_scorer_for_retrieval():
    clip = build_objective("clip")
    est, feats = torch.randn(4, 3, 7), torch.randn(4, 3, 7)
    assert clip.scores(est, feats).shape == (4, 4)
    assert set(clip({"features": feats}, {"output": est})) == {"clip"}
    mse = build_objective("mse")
    torch.testing.assert_close(mse.scores(est, feats), mse.loss.scores(est, feats))
    assert getattr(build_objective("bce"), "scores", None) is None


def test_logit_shapes():
    assert class_logits(torch.zeros(2, 5)).shape == (2, 5)
    assert sample_logits(torch.zeros(2, 1, 9)).shape == (2, 9)
    with pytest.raises(ValueError):
        class_logits(torch.zeros(2))
