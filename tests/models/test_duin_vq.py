"""Du-IN's pre-training stages: the EMA codebook on a hand-made batch, complementary masks, and both models."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from bm2.models import MODELS
from bm2.models.duin_vq import CosineEMACodebook, DuinMAE, DuinVQVAE, UntrainedTokenizerError, complementary_masks
from bm2.objectives import build_objective

TINY = dict(patch=10, depth=1, n_heads=2, d_head=8, d_ff=32)


def _codebook() -> CosineEMACodebook:
    book = CosineEMACodebook(n_codes=4, dim=2, decay=0.5)
    with torch.no_grad():
        book.embed.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))
        book.embed_sum.copy_(book.embed * 2.0)
        book.cluster_size.fill_(2.0)
        book.initialised.fill_(True)
    return book.train()


def test_ema_codebook_update_on_a_hand_made_batch():
    book = _codebook()
    before = book.embed.clone()
    # three tokens near code 0, one exactly on code 1; codes 2 and 3 are unused
    z = torch.tensor([[1.0, 0.1], [1.0, -0.1], [2.0, 0.2], [0.0, 3.0]])
    out = book(z)
    assert out["codes"].tolist() == [0, 0, 0, 1]
    assert torch.allclose(book.cluster_size, torch.tensor([0.5 * 2 + 0.5 * 3, 0.5 * 2 + 0.5 * 1, 1.0, 1.0]))
    unit = F.normalize(z, dim=-1)
    expected_sum0 = 0.5 * torch.tensor([2.0, 0.0]) + 0.5 * unit[:3].sum(0)
    assert torch.allclose(book.embed_sum[0], expected_sum0)
    assert torch.allclose(book.embed[0], F.normalize(expected_sum0, dim=0))
    assert torch.allclose(book.embed[1], torch.tensor([0.0, 1.0]))  # one unit token on the code itself
    assert torch.allclose(book.embed.norm(dim=1), torch.ones(4))
    assert torch.equal(book.embed[2:], before[2:])  # unused codes exactly unchanged
    assert torch.allclose(book.embed_sum[2:], before[2:] * 1.0)  # their sums decay by 0.5: 2 -> 1
    # quantized is straight-through: the old codes forward, the identity backward
    assert torch.allclose(out["quantized"], before[out["codes"]])
    p = torch.tensor([0.75, 0.25])
    assert torch.allclose(out["perplexity"], torch.exp(-(p * p.log()).sum()))
    assert torch.allclose(out["commitment"], (unit - before[out["codes"]]).pow(2).mean())
    assert float(out["dead_codes"]) == 0.0


def test_codebook_does_not_change_in_eval_mode_and_kmeans_initialises_on_the_first_batch():
    book = _codebook().eval()
    state = {k: v.clone() for k, v in book.state_dict().items()}
    book(torch.randn(8, 2))
    assert all(torch.equal(state[k], v) for k, v in book.state_dict().items())
    torch.manual_seed(0)
    fresh = CosineEMACodebook(n_codes=3, dim=2, decay=0.99, kmeans_iters=20).train()
    assert not bool(fresh.initialised)
    z = F.normalize(torch.tensor([[1.0, 0.05], [1.0, -0.05], [-1.0, 0.05], [-1.0, -0.05], [0.05, 1.0]]), dim=-1)
    out = fresh(z)
    assert bool(fresh.initialised)
    # the k-means fixed point: every used code is the normalised mean of its tokens, counts are the assignment's
    codes = (z @ fresh.embed.T).argmax(dim=1)
    assert torch.equal(codes, out["codes"])
    assert float(fresh.cluster_size.sum()) == 5.0
    for k in codes.unique().tolist():
        assert torch.allclose(fresh.embed[k], F.normalize(z[codes == k].sum(0), dim=0), atol=1e-6)
        assert float(fresh.cluster_size[k]) == float((codes == k).sum())
    assert torch.allclose(fresh.embed.norm(dim=1), torch.ones(3))


def test_complementary_masks_cover_every_token_exactly_once():
    for n_tokens in (30, 7, 1):
        first, second = complementary_masks(5, n_tokens, generator=torch.Generator().manual_seed(0))
        assert first.shape == second.shape == (5, n_tokens)
        assert torch.equal(first.int() + second.int(), torch.ones(5, n_tokens, dtype=torch.int))
        assert (first.sum(dim=1) == n_tokens // 2).all()
    a, _ = complementary_masks(4, 30, generator=torch.Generator().manual_seed(1))
    assert len({tuple(row.tolist()) for row in a}) > 1  # drawn per row


def _batch(n_channels: int = 3, n_times: int = 300) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"brain": torch.randn(4, n_channels, n_times), "subject_index": torch.tensor([0, 1, 0, 1]),
            "mask": torch.tensor([[True, True, False]] * 4)}


def test_vqvae_reconstructs_the_signal_and_trains():
    assert MODELS["duin_vqvae"] is DuinVQVAE and MODELS["duin_mae"] is DuinMAE
    model = DuinVQVAE(out_channels=1, n_subjects=2, n_channels=3, n_times=300, n_codes=16, d_code=8,
                      decoder_depth=1, **TINY)
    batch = _batch()
    out = model(**batch)
    assert out["output"].shape == (4, 3, 300) and out["codes"].shape == (4, 30)
    assert out["codes"].max() < 16 and out["commitment"].dim() == 0
    objective = build_objective("duin_vqvae")
    assert objective.weights == {"reconstruction": 1.0, "commitment": 1.0, "perplexity": 0.0, "dead_codes": 0.0}
    terms = objective(batch, out)
    expected = (out["output"] - batch["brain"]).pow(2)[:, :2].mean()  # the padded channel is not scored
    assert torch.allclose(terms["reconstruction"], expected)
    objective.total(terms).backward()
    assert model.vqvae.encoder.subject.weight.grad is not None  # through the straight-through estimator
    assert model.vqvae.head.weight.grad is not None
    # a batch of subjects with fewer channels than n_channels (collate pads to the batch's largest montage):
    # the first channels' reconstruction, scored against them
    model.eval()
    few = {**batch, "brain": batch["brain"][:, :2], "mask": batch["mask"][:, :2]}
    with torch.no_grad():
        out, full = model(**few), model(**batch)
    assert out["output"].shape == (4, 2, 300)  # the third channel is masked in ``batch``: the same first two
    torch.testing.assert_close(out["output"], full["output"][:, :2])
    assert torch.isfinite(objective(few, out)["reconstruction"])


def test_mae_predicts_the_frozen_tokenizers_codes():
    model = DuinMAE(out_channels=1, n_subjects=2, n_channels=3, n_times=300, vqvae={"n_codes": 16, "d_code": 8,
                                                                                    "decoder_depth": 1}, **TINY)
    model.train()
    assert not model.vqvae.training and model.encoder.training
    assert not any(p.requires_grad for p in model.vqvae.parameters())
    batch = _batch()
    with pytest.raises(UntrainedTokenizerError, match="chain.parent"):  # an untrained tokenizer's codes are noise
        model(**batch)
    model.vqvae.codebook.initialised.fill_(True)  # as if loaded from a trained VQ-VAE parent
    expected_codes = model.vqvae.quantize(**batch)["codes"]
    before = model.vqvae.codebook.embed.clone()
    out = model(**batch)
    assert out["output"].shape == (4, 30, 16) and torch.equal(out["codes"], expected_codes)
    assert torch.equal(model.vqvae.codebook.embed, before)  # the frozen tokenizer's codebook never moves
    terms = build_objective("duin_mae")(batch, out)
    assert torch.allclose(terms["cross_entropy"], F.cross_entropy(out["output"].reshape(-1, 16),
                                                                  expected_codes.reshape(-1)))
    terms["cross_entropy"].backward()
    assert model.mask_token.grad is not None and model.encoder.tokenizer.net[0].weight.grad is not None
    # the encoder's keys are the classifier's: stage 3 starts from them
    from bm2.models.duin import DuinClassifier

    classifier = DuinClassifier(out_channels=6, n_subjects=2, n_channels=3, n_times=300, **TINY)
    theirs = {k: v.shape for k, v in classifier.state_dict().items() if k.startswith("encoder.")}
    assert theirs == {k: v.shape for k, v in model.state_dict().items() if k.startswith("encoder.")}


def test_vqvae_at_the_papers_sizes_reconstructs_3_s_at_1_khz():
    """100-sample patches: 30 tokens of 160 -> 64-d codes of a 2048 x 64 codebook -> 3000 samples back."""
    model = DuinVQVAE(out_channels=1, n_subjects=1, n_channels=10, n_times=3000, depth=1, decoder_depth=1)
    vq = model.vqvae
    assert tuple(vq.codebook.embed.shape) == (2048, 64)
    # the quantiser of the paper's count (projection + codebook): 167,136
    assert sum(p.numel() for p in vq.project.parameters()) + vq.codebook.embed.numel() == 167_136
    out = model.eval()(torch.randn(2, 10, 3000), torch.zeros(2, dtype=torch.long))
    assert out["output"].shape == (2, 10, 3000) and out["codes"].shape == (2, 30)


def _ddp_worker(rank: int, world: int, init: str, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        book = _codebook()
        z = torch.tensor([[1.0, 0.1], [1.0, -0.1], [2.0, 0.2], [0.0, 3.0]])
        book(z[:2] if rank == 0 else z[2:])  # each process sees half of the batch
        queue.put((rank, book.cluster_size.clone(), book.embed.clone()))
    finally:
        torch.distributed.destroy_process_group()


def test_codebook_counts_and_sums_are_synchronised_across_processes(tmp_path):
    """Two processes (gloo), each with half of the batch, end with the codebook of one process given all of it."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [ctx.Process(target=_ddp_worker, args=(rank, 2, init, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict((rank, (size, embed)) for rank, size, embed in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    single = _codebook()
    single(torch.tensor([[1.0, 0.1], [1.0, -0.1], [2.0, 0.2], [0.0, 3.0]]))
    for size, embed in results.values():
        assert torch.allclose(size, single.cluster_size) and torch.allclose(embed, single.embed, atol=1e-6)
