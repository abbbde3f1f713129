"""The InfoNCE-to-codebook objective (bm2/objectives/codebook.py) and class-structured batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bm2.data.samplers import ClassStructuredBatchSampler, class_groups_for
from bm2.models.inr import INRDecoder
from bm2.objectives import build_objective
from bm2.objectives.codebook import CodebookInfoNCE, class_balanced_weights
from bm2.studies.lee2024 import CLASSES


def test_class_balanced_weights_sum_to_the_number_of_classes():
    counts = [1, 10, 100, 1000]
    w = class_balanced_weights(counts, beta=0.999)
    assert math.isclose(float(w.sum()), 4.0, rel_tol=1e-6)
    raw = [(1 - 0.999) / (1 - 0.999 ** n) for n in counts]
    np.testing.assert_allclose(w.numpy(), np.array(raw) / sum(raw) * 4, rtol=1e-6)
    assert (np.diff(w.numpy()) < 0).all()  # rarer classes weigh more
    assert torch.equal(class_balanced_weights([3, 3, 3], beta=0.0), torch.ones(3))
    w88 = class_balanced_weights(np.arange(88) % 5, 0.999)  # zero counts stay finite
    assert torch.isfinite(w88).all() and math.isclose(float(w88.sum()), 88.0, rel_tol=1e-5)


def test_loss_on_a_hand_made_batch():
    # codebook: e0 = x, e1 = y, e2 = -x (unit vectors); embeddings z0 = x (class 0), z1 = y (class 2)
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    outputs = {"embedding": torch.tensor([[2.0, 0.0], [0.0, 3.0]]), "codebook": codebook}
    batch = {"label": torch.tensor([0, 2])}
    loss = CodebookInfoNCE(tau=1.0, warmup_epochs=0)
    loss.set_class_counts([1, 1, 1])  # equal counts: weights 1
    terms = loss(batch, outputs)
    # align: -cos(z0, e0) = -1; -cos(z1, e2) = 0 -> mean -0.5
    assert math.isclose(float(terms["align"]), -0.5, abs_tol=1e-6)
    # uniform: z0 others {e1: 0, e2: -1}: log(1 + e^-1); z1 others {e0: 0, e1: 1}: log(1 + e)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    assert math.isclose(float(terms["uniform"]), expected, rel_tol=1e-6)
    # codebook uniform: e0 vs {e1: 0, e2: -1}; e2 vs {e0: -1, e1: 0}: both log(1 + e^-1)
    assert math.isclose(float(terms["codebook_uniform"]), math.log(1 + math.exp(-1)), rel_tol=1e-6)
    # decorrelation: |cos| off the diagonal: e0.e2 = -1 twice, the rest 0 -> 2 / 9
    assert math.isclose(float(terms["decorrelation"]), 2 / 9, rel_tol=1e-6)
    assert math.isclose(float(terms["accuracy"]), 0.5)  # z1 is closest to e1, not e2
    assert math.isclose(float(loss.total(terms)), -0.5 + expected + math.log(1 + math.exp(-1)), rel_tol=1e-6)
    # tau divides the cosines; class weights reweigh the items (class 0 rare -> weighs more)
    hot = CodebookInfoNCE(tau=0.5, warmup_epochs=0)
    assert math.isclose(float(hot(batch, outputs)["align"]), -1.0, abs_tol=1e-6)
    loss.set_class_counts([1, 1000, 1000])
    w = class_balanced_weights([1, 1000, 1000])
    assert math.isclose(float(loss(batch, outputs)["align"]), float(-w[0]) / 2, rel_tol=1e-5)


def test_warmup_trains_the_codebook_only_on_decorrelation():
    torch.manual_seed(0)
    model = INRDecoder(6, 1, n_freqs=8, n_times=64, depth=1, dropout=0.0, channel_dropout=0.0,
                       merger_dropout=0.0)
    loss = build_objective("codebook", warmup_epochs=2)
    batch = {"brain": torch.randn(4, 5, 8, 64), "positions": torch.rand(4, 5, 2), "label": torch.tensor([0, 1, 2, 3])}

    def grads(epoch: int, terms_used: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        model.zero_grad()
        loss.set_epoch(epoch)
        terms = loss(batch, model(batch["brain"], batch["positions"]))
        total = loss.total(terms) if terms_used is None else sum(terms[k] for k in terms_used)
        total.backward()
        return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in model.named_parameters()}

    warm = grads(1)
    decor = grads(1, ("decorrelation",))
    infonce = grads(1, ("align", "uniform", "codebook_uniform"))
    assert loss.warming_up
    torch.testing.assert_close(warm["codebook"], decor["codebook"])  # the codebook sees the decorrelation only
    assert infonce["codebook"].abs().max() == 0
    for name in ("merger.heads", "cnn.widen.weight", "blocks.0.attn.qkv.weight"):  # the encoder: InfoNCE only
        assert decor[name].abs().max() == 0 and warm[name].abs().max() > 0
        torch.testing.assert_close(warm[name], infonce[name])
    after = grads(3)
    assert not loss.warming_up
    assert not torch.allclose(after["codebook"], grads(3, ("decorrelation",))["codebook"])
    loss.set_epoch(3)
    with torch.no_grad():
        terms = loss(batch, model(batch["brain"], batch["positions"]))
    assert math.isclose(float(loss.total(terms)), float(terms["align"] + terms["uniform"] + terms["codebook_uniform"]),
                        rel_tol=1e-6)


def test_unknown_labels_and_bad_weights():
    loss = CodebookInfoNCE()
    outputs = {"embedding": torch.randn(2, 4), "codebook": torch.randn(3, 4)}
    terms = loss({"label": torch.tensor([-1, -1])}, outputs)
    assert float(terms["align"]) == 0.0
    loss.set_class_counts([1, 2])
    with pytest.raises(ValueError, match="2 class weights"):
        loss({"label": torch.tensor([0, 1])}, outputs)
    with pytest.raises(ValueError, match="beta"):
        class_balanced_weights([1], beta=1.0)


def test_class_structured_batches_keep_triplets_out_of_negatives():
    vocab = sorted(CLASSES)
    groups = class_groups_for("lee2024_triplets", vocab)
    labels = np.repeat(np.arange(88), 4)
    sampler = ClassStructuredBatchSampler(labels, groups, positives=2, negatives=1, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // sampler.batch_size
    index = {w: i for i, w in enumerate(vocab)}
    for batch in batches:
        counts = np.bincount(labels[batch], minlength=88)
        anchor = int(np.flatnonzero(counts == 2)[0])
        mates = [i for i in range(88) if groups[i] == groups[anchor] and i != anchor]
        assert all(counts[m] == 0 for m in mates)  # no negative from the anchor's triplet
        others = [i for i in range(88) if groups[i] != groups[anchor]]
        assert all(counts[o] == 1 for o in others)
    one_each = ClassStructuredBatchSampler(labels, groups, 2, 1, seed=0, n_batches=88)  # every class anchors once
    anchors = sorted(int(np.flatnonzero(np.bincount(labels[b], minlength=88) == 2)[0]) for b in one_each)
    assert anchors == list(range(88)) and index["barrier"] in anchors
    assert batches[0] == list(ClassStructuredBatchSampler(labels, groups, 2, 1, seed=0))[0]  # seeded
    sampler.set_epoch(1)
    assert list(sampler)[0] != batches[0]
    assert class_groups_for(None, ["a", "b"]) == [0, 1]
    with pytest.raises(KeyError, match="lee2024_triplets"):
        class_groups_for("words", vocab)


def test_class_structured_batches_are_shared_between_ddp_ranks():
    """Under DDP each rank takes its own, seeded share of the epoch's batches: disjoint, together the one-process
    sequence, the same number of steps on every rank."""
    vocab = sorted(CLASSES)
    groups = class_groups_for("lee2024_triplets", vocab)
    labels = np.repeat(np.arange(88), 4)
    single = ClassStructuredBatchSampler(labels, groups, 2, 1, seed=3, n_batches=7)
    ranks = [ClassStructuredBatchSampler(labels, groups, 2, 1, seed=3, n_batches=7, rank=r, world_size=2)
             for r in range(2)]
    for epoch in (0, 1):
        for s in (single, *ranks):
            s.set_epoch(epoch)
        whole = list(single)
        shares = [list(r) for r in ranks]
        assert len(ranks[0]) == len(ranks[1]) == len(shares[0]) == len(shares[1]) == 3  # 7 // 2, one left over
        assert shares[0] == whole[0:6:2] and shares[1] == whole[1:6:2]
        assert shares[0] == list(ranks[0])  # seeded: drawn again, the same batches
    assert len(ClassStructuredBatchSampler(labels, groups, 2, 1, n_batches=1, rank=2, world_size=4)) == 1
    with pytest.raises(ValueError, match="rank 2 outside"):
        ClassStructuredBatchSampler(labels, groups, rank=2, world_size=2)
