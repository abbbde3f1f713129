"""DeMEGa's objective: focal loss, supervised contrastive loss, the IPA table and the weighted terms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bm2.events import ARPABET
from bm2.objectives import OBJECTIVES, build_objective
from bm2.objectives.demega import DeMEGaObjective, focal_loss, supcon_loss
from bm2.objectives.ipa import IPA_CLASSES, IPA_FEATURES, IPA_TABLE, ipa_targets


def test_focal_with_gamma_0_and_no_smoothing_is_cross_entropy():
    torch.manual_seed(0)
    logits, label = torch.randn(12, 5), torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    plain = focal_loss(logits, label, gamma=0.0, smoothing=0.0, class_balanced=False)
    torch.testing.assert_close(plain, F.cross_entropy(logits, label))
    # class-balanced: the mean over classes of each class' mean cross-entropy
    per = F.cross_entropy(logits, label, reduction="none")
    balanced = torch.stack([per[label == c].mean() for c in range(5)]).mean()
    torch.testing.assert_close(focal_loss(logits, label, gamma=0.0, smoothing=0.0), balanced)
    # gamma > 0 down-weights confident samples: smaller than cross-entropy
    assert focal_loss(logits, label, gamma=2.0, class_balanced=False) < plain


def test_focal_smoothing_spreads_eps_over_the_other_classes():
    logits, label = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
    p = torch.softmax(logits, dim=1)[0]
    expected = -(0.88 * p[0].log() + 0.06 * p[1].log() + 0.06 * p[2].log())
    torch.testing.assert_close(focal_loss(logits, label, gamma=0.0, smoothing=0.12), expected)


def test_supcon_on_a_hand_made_batch():
    # z1 = z3 = (1, 0), z2 = (0, 1); labels 0, 0, 1. Cosines s12 = 0, s13 = 1, s23 = 0.
    # anchor 1 (positive 2): -log(e^0 / (e^0 + e^1)) = log(1 + e) = 1.313262
    # anchor 2 (positive 1): -log(e^0 / (e^0 + e^0)) = log 2 = 0.693147; anchor 3 has no positive
    z, label = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]]), torch.tensor([0, 0, 1])
    torch.testing.assert_close(supcon_loss(z, label, tau=1.0), torch.tensor(1.0032046))
    assert math.isclose((math.log(1 + math.e) + math.log(2)) / 2, 1.0032046, rel_tol=1e-6)
    # tau 0.5: anchor 1 log(1 + e^2) = 2.126928, anchor 2 log 2
    torch.testing.assert_close(supcon_loss(z, label, tau=0.5), torch.tensor((2.126928 + 0.693147) / 2))
    # two positives: anchor sums them inside the log
    z4, label4 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 0])
    # anchor 1: -log((e^1 + e^0) / (e^1 + e^0)) = 0 ; anchor 3: -log((1 + 1) / 2) = 0
    torch.testing.assert_close(supcon_loss(z4, label4, tau=1.0), torch.tensor(0.0))
    assert supcon_loss(z, torch.tensor([0, 1, 2])).item() == 0.0  # no positives at all


def test_ipa_table_shape_and_known_rows():
    assert IPA_TABLE.shape == (39, 14) and len(IPA_FEATURES) == 14 and IPA_CLASSES == tuple(ARPABET)
    row = dict(zip(IPA_CLASSES, IPA_TABLE.astype(int).tolist()))
    #               cons syl son voi nas cont lab cor dor high low back rnd diph
    assert row["M"] == [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert row["P"] == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert row["IY"] == [0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0]
    assert row["OW"] == [0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1]
    assert row["ZH"] == [1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0]
    assert len({tuple(r) for r in IPA_TABLE.tolist()}) == 35  # {IH IY} {UH UW} {TH S} {DH Z} share a vector
    np.testing.assert_array_equal(ipa_targets(["z", "M"]), IPA_TABLE[[37, 21]])
    with pytest.raises(ValueError, match="SIL"):
        ipa_targets(["AA", "SIL"])


def test_objective_terms_weights_and_vocabulary():
    objective = build_objective("demega", classes=["AA", "M", "S"])
    assert OBJECTIVES["demega"] is DeMEGaObjective
    assert {k: v for k, v in objective.weights.items() if v} == {"classification": 1.0, "supcon": 0.5, "ipa": 0.2}
    torch.manual_seed(0)
    outputs = {"output": torch.randn(6, 3, requires_grad=True), "ipa": torch.randn(6, 14),
               "projection": F.normalize(torch.randn(6, 8), dim=1)}
    batch = {"label": torch.tensor([0, 1, 2, 0, 1, -1])}
    terms = objective(batch, outputs)
    known = slice(0, 5)
    logits, label = outputs["output"][known], batch["label"][known]
    focal = focal_loss(logits, label, gamma=2.0, smoothing=0.12)
    ce = F.cross_entropy(logits, label, label_smoothing=0.12)
    torch.testing.assert_close(terms["classification"], 0.8 * focal + 0.2 * ce)
    targets = torch.from_numpy(IPA_TABLE[[0, 21, 28, 0, 21]])
    torch.testing.assert_close(terms["ipa"], F.binary_cross_entropy_with_logits(outputs["ipa"][known], targets))
    torch.testing.assert_close(terms["supcon"], supcon_loss(outputs["projection"][known], label, 0.03))
    total = objective.total(terms)
    torch.testing.assert_close(total, terms["classification"] + 0.5 * terms["supcon"] + 0.2 * terms["ipa"])
    total.backward()
    with pytest.raises(ValueError, match="IPA rows"):
        build_objective("demega")(batch, outputs)  # 39 classes by default, 3 logits here
