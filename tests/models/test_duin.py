"""Du-IN's encoder pieces: tokenizer shapes, post-LN blocks, subject layer, parameter count, training step."""

from __future__ import annotations

import pytest
import torch

from bm2.models import build_model, count_parameters
from bm2.models.duin import DuinClassifier, DuinSubjectLayer, PatchTokenizer, PostLNBlock, sinusoidal_embedding


def test_tokenizer_turns_3s_at_1khz_into_30_tokens_of_160_each_patch_on_its_own():
    tok = PatchTokenizer().eval()
    x = torch.randn(2, 3000, 16)
    out = tok(x)
    assert out.shape == (2, 30, 160)
    y = x.clone()
    y[:, 100:200] += 5.0  # change patch 1 only: only token 1 changes (no mixing across patches)
    changed = (tok(y) - out).abs().amax(dim=(0, 2)) > 1e-6
    assert changed.tolist() == [i == 1 for i in range(30)]
    # no nonlinearity: the eval-mode tokenizer is affine
    a, b = torch.randn(1, 100, 16), torch.randn(1, 100, 16)
    zero = tok(torch.zeros(1, 100, 16))
    torch.testing.assert_close(tok(a + b) - zero, (tok(a) - zero) + (tok(b) - zero), atol=1e-4, rtol=1e-4)


def test_time_embedding_and_post_ln_block():
    emb = sinusoidal_embedding(30, 160)
    assert emb.shape == (30, 160)
    torch.testing.assert_close(emb[0, 0::2], torch.zeros(80))
    torch.testing.assert_close(emb[0, 1::2], torch.ones(80))
    block = PostLNBlock().eval()
    assert block.qkv.out_features == 3 * 512 and block.proj.in_features == 512
    out = block(torch.randn(3, 30, 160) * 10)
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 30), atol=1e-4, rtol=0)  # LayerNorm comes last
    torch.testing.assert_close(out.std(-1, unbiased=False), torch.ones(3, 30), atol=1e-3, rtol=0)


def test_subject_layer_maps_each_subject_with_its_own_weights_and_masks_padding():
    layer = DuinSubjectLayer(n_channels=4, n_subjects=2, d_out=16)
    assert layer.weight.shape == (2, 4, 16) and layer.bias.abs().sum() == 0
    assert layer.weight.abs().max() <= 0.04 + 1e-6  # truncated normal, std 0.02
    x = torch.randn(2, 4, 50)
    out = layer(x, torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], x[0].T @ layer.weight[0])
    torch.testing.assert_close(out[1], x[1].T @ layer.weight[1])
    masked = layer(x, torch.tensor([0, 1]), torch.tensor([[True, True, True, False]] * 2))
    torch.testing.assert_close(masked[0], x[0, :3].T @ layer.weight[0, :3])
    # a batch of subjects with fewer channels than the data's largest montage (collate pads to the batch's)
    torch.testing.assert_close(layer(x[:, :3], torch.tensor([0, 1])), masked)
    with pytest.raises(ValueError, match="built for 4 channels, got 5"):
        layer(torch.randn(2, 5, 50), torch.tensor([0, 1]))


def test_parameter_count_at_the_paper_sizes():
    model = DuinClassifier(out_channels=61, n_subjects=1, n_channels=10, n_times=3000)
    enc = model.encoder
    assert count_parameters(enc.subject) == 10 * 16 + 16
    assert count_parameters(enc.tokenizer) == 95_024
    assert count_parameters(enc.blocks) == 8 * 432_896
    assert count_parameters(model.head) == 4800 * 128 + 128 + 128 * 61 + 61
    total = count_parameters(model)
    assert total == 4_180_765
    # the paper's 4.38 M also counts the vector quantiser the classifier carries with a zero loss weight
    # (Linear 160->160, Tanh, Linear 160->64, a 2048 x 64 codebook) and a contrastive block: within 1 %
    quantiser = (160 * 160 + 160) + (160 * 64 + 64) + 2048 * 64
    assert abs(total + quantiser - 4.38e6) / 4.38e6 < 0.01


def test_builds_by_name_and_trains_one_step():
    torch.manual_seed(0)
    model = build_model("duin", out_channels=5, n_subjects=2, n_channels=3, n_times=300, depth=2)
    assert model.bm2_spec["name"] == "duin" and DuinClassifier.inputs == ("brain", "subject_index", "mask")
    brain, subjects = torch.randn(4, 3, 300), torch.tensor([0, 1, 0, 1])
    logits = model(brain, subjects, torch.ones(4, 3, dtype=torch.bool))
    assert logits.shape == (4, 5)
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    bounded = build_model("duin", out_channels=5, n_subjects=1, n_channels=3, n_times=300, depth=1,
                          bounded_logits=True)
    out = bounded(brain, torch.zeros(4, dtype=torch.long))
    assert out.min() >= 0 and out.max() <= 1
