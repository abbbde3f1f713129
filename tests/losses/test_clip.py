"""ClipLoss against the published formula, and the regression loss."""

import pytest
import torch
from torch.nn import functional as F

from bm2.losses import LOSSES, ClipLoss, RegressionLoss, build_loss


def _direct_scores(est: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Loop-based published scores: s[b, o] = sum_{c,t} est[b] * cand[o] / (1e-8 + ||cand[o]||)."""
    out = torch.zeros(est.shape[0], cand.shape[0], dtype=torch.float64)
    for b in range(est.shape[0]):
        for o in range(cand.shape[0]):
            norm = torch.sqrt((cand[o].double() ** 2).sum())
            out[b, o] = (est[b].double() * cand[o].double()).sum() / (1e-8 + norm)
    return out


def _direct_loss(scores: torch.Tensor) -> torch.Tensor:
    """Loop-based cross-entropy of each row against its diagonal."""
    losses = [torch.logsumexp(scores[b], 0) - scores[b, b] for b in range(scores.shape[0])]
    return torch.stack(losses).mean()


def test_matches_published_formula() -> None:
    torch.manual_seed(0)
    est, cand = torch.randn(5, 3, 7), torch.randn(5, 3, 7)
    loss = ClipLoss()
    scores = _direct_scores(est, cand)
    torch.testing.assert_close(loss.scores(est, cand).double(), scores, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss(est, cand).double(), _direct_loss(scores), rtol=1e-5, atol=1e-5)


def test_scores_other_candidates_and_chunks() -> None:
    torch.manual_seed(0)
    est, cand = torch.randn(4, 3, 6), torch.randn(9, 3, 6)
    loss = ClipLoss()
    scores = loss.scores(est, cand)
    assert scores.shape == (4, 9)
    torch.testing.assert_close(scores.double(), _direct_scores(est, cand), rtol=1e-5, atol=1e-5)
    chunked = torch.cat([loss.scores(est, cand[i:i + 4]) for i in range(0, 9, 4)], dim=1)
    torch.testing.assert_close(chunked, scores)
    with pytest.raises(ValueError):
        loss(est, cand)  # forward needs O == B


def test_perfect_prediction() -> None:
    torch.manual_seed(0)
    cand = torch.randn(6, 4, 10)
    assert ClipLoss()(cand * 100, cand).item() < 1e-4


def test_scale_invariance_in_candidates() -> None:
    torch.manual_seed(0)
    est, cand = torch.randn(5, 3, 7), torch.randn(5, 3, 7)
    loss = ClipLoss()
    ref = loss(est, cand)
    for factor in (1e-3, 0.5, 7.0, 1e4):
        torch.testing.assert_close(loss(est, cand * factor), ref, rtol=1e-5, atol=1e-5)


def test_symmetric_is_mean_of_directions() -> None:
    torch.manual_seed(0)
    est, cand = torch.randn(5, 3, 7), torch.randn(5, 3, 7)
    scores = _direct_scores(est, cand)
    expected = 0.5 * (_direct_loss(scores) + _direct_loss(scores.T))
    torch.testing.assert_close(ClipLoss(symmetric=True)(est, cand).double(), expected, rtol=1e-5, atol=1e-5)


def test_options_temperature_and_normalised_estimate() -> None:
    torch.manual_seed(0)
    est, cand = torch.randn(5, 3, 7), torch.randn(5, 3, 7)
    learned = ClipLoss(learn_temperature=True)
    torch.testing.assert_close(learned(est, cand), ClipLoss()(est, cand))  # starts at 1x
    with torch.no_grad():
        learned.log_scale.fill_(1.0)
    torch.testing.assert_close(learned.scores(est, cand), ClipLoss().scores(est, cand) * torch.e)
    normed = ClipLoss(normalize_estimate=True)
    torch.testing.assert_close(normed(est * 50, cand), normed(est, cand))  # now invariant in the estimate too
    scores = normed.scores(est, cand)
    assert scores.abs().max() <= 1 + 1e-5  # cosine similarities


def test_gradients_finite() -> None:
    torch.manual_seed(0)
    est = torch.randn(4, 3, 5, requires_grad=True)
    cand = torch.randn(4, 3, 5, requires_grad=True)
    loss = ClipLoss(symmetric=True, learn_temperature=True, normalize_estimate=True)
    loss(est, cand).backward()
    assert torch.isfinite(est.grad).all() and torch.isfinite(cand.grad).all()
    assert torch.isfinite(loss.log_scale.grad)
    # Even a zero candidate (the eps guards the division) keeps gradients finite.
    est.grad = None
    ClipLoss()(est, torch.zeros(4, 3, 5)).backward()
    assert torch.isfinite(est.grad).all()


def test_regression_and_registry() -> None:
    torch.manual_seed(0)
    assert set(LOSSES) == {"clip", "mse"}
    with pytest.raises(KeyError, match="clip"):
        build_loss("nope")
    est, target = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    torch.testing.assert_close(build_loss("mse")(est, target), F.mse_loss(est, target))
    torch.testing.assert_close(build_loss("mse", kind="l1")(est, target), F.l1_loss(est, target))
    assert isinstance(build_loss("clip", symmetric=True), ClipLoss)
    for kind in ("mse", "l1"):
        reg = RegressionLoss(kind)
        cands = torch.randn(5, 2, 4)
        scores = reg.scores(est, cands)
        direct = torch.stack([torch.stack([-reg(e, c) for c in cands]) for e in est])
        torch.testing.assert_close(scores, direct, rtol=1e-5, atol=1e-5)
