"""Lee et al.'s class-codebook decoder (bm2/models/inr.py): shapes, talking heads, parameter count, dropout."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from bm2.models import build_model, count_parameters
from bm2.models.inr import (DiscChannelDropout, INRDecoder, PostLNBlock, SpectralCNN, TalkingHeadsAttention,
                            sincos_2d)
from bm2.solvers.optim import param_groups


def test_talking_heads_with_identity_mixing_is_plain_attention():
    torch.manual_seed(0)
    attn = TalkingHeadsAttention(dim=32, n_heads=4, d_head=8, dropout=0.0, init_identity=True).eval()
    x = torch.randn(3, 7, 32)
    q, k, v = attn.qkv(x).view(3, 7, 3, 4, 8).permute(2, 0, 3, 1, 4)
    plain = F.scaled_dot_product_attention(q, k, v)  # [B, H, N, d]
    expected = attn.out(plain.transpose(1, 2).reshape(3, 7, 32))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # mixing heads changes the result
        attn.pre_softmax.copy_(torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert not torch.allclose(attn(x), expected, atol=1e-4)


def test_post_ln_block_shares_one_norm():
    block = PostLNBlock(dim=16, n_heads=2, d_head=8, d_ff=32)
    norms = [m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 1
    out = block(torch.randn(2, 5, 16))
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)  # ends with the LayerNorm


def test_cnn_pools_time_by_four():
    cnn = SpectralCNN(32, 3, 4)
    assert cnn(torch.randn(2, 32, 12, 64)).shape == (2, 32, 12, 16)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in cnn.modules()) == 6  # one per block, reused


def test_sincos_2d_positions_are_distinct():
    pos = sincos_2d(3, 5, 16)
    assert pos.shape == (15, 16)
    assert torch.cdist(pos, pos).add(torch.eye(15)).min() > 0.1
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 10)


def test_shapes_outputs_and_release_parameter_count():
    model = build_model("inr", out_channels=88, n_subjects=1, n_freqs=64, n_times=512)
    assert count_parameters(model) == 3_588_944  # stated in the module docstring
    assert model.patch.grid == (15, 15)  # 225 patches
    assert count_parameters(model.merger) == 4096 and model.codebook.shape == (88, 256)
    small = INRDecoder(88, 1, n_freqs=12, n_times=128, depth=1).eval()
    brain, positions = torch.randn(3, 127, 12, 128), torch.rand(3, 127, 2)
    out = small(brain, positions, torch.ones(3, 127, dtype=torch.bool))
    assert out["output"].shape == (3, 88) and out["embedding"].shape == (3, 256)
    z = F.normalize(out["embedding"], dim=-1)
    torch.testing.assert_close(out["output"], z @ F.normalize(small.codebook, dim=-1).T)
    assert out["output"].abs().max() <= 1 + 1e-6
    with pytest.raises(ValueError, match=r"spectra \[B, C, F, T\]"):
        small(torch.randn(3, 127, 128), positions)
    with pytest.raises(ValueError, match="smaller than a"):
        INRDecoder(88, 1, n_freqs=4, n_times=128)


def test_codebook_init_and_no_weight_decay_groups():
    init = torch.randn(5, 256)
    model = INRDecoder(5, 1, n_freqs=8, n_times=64, depth=1, codebook_init=init.tolist())
    torch.testing.assert_close(model.codebook.data, init)
    with pytest.raises(ValueError, match=r"\[5, 256\]"):
        INRDecoder(5, 1, n_freqs=8, n_times=64, codebook_init=[[0.0] * 3] * 5)
    groups = param_groups({"": model}, lr=1e-4, weight_decay=1e-4, no_decay_norm_bias=True)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.patch.pos_embed) in no_decay and id(model.blocks[0].attn.pre_softmax) in no_decay
    assert id(model.codebook) not in no_decay and id(model.patch.cls_token) not in no_decay
    assert id(model.blocks[0].attn.qkv.weight) not in no_decay


def test_disc_channel_dropout_drops_a_disc_and_rescales():
    torch.manual_seed(0)
    drop = DiscChannelDropout(0.3).train()
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 10), torch.linspace(0, 1, 10), indexing="ij"), -1)
    positions = grid.reshape(1, 100, 2)
    out = drop(torch.ones(1, 100, 2, 3), positions)
    dropped = out[0, :, 0, 0] == 0
    assert 0 < dropped.sum() < 100
    centre_ok = positions[0, dropped].mean(0)  # the dropped sensors form a disc of radius 0.3
    assert (positions[0, dropped] - centre_ok).norm(dim=-1).max() < 0.6
    assert (out[0, ~dropped] > 1).all()  # kept sensors scaled by 1 / P(kept) > 1
    assert torch.equal(drop.eval()(torch.ones(1, 100, 2, 3), positions), torch.ones(1, 100, 2, 3))
    assert math.isclose(float(DiscChannelDropout(0.0).train()(torch.ones(1, 4, 2), torch.rand(1, 4, 2)).sum()), 8)


def test_word_codebook_projection_keeps_word_similarities():
    import numpy as np

    from bm2.builders import word_codebook

    rng = np.random.default_rng(0)
    words = rng.standard_normal((10, 384))
    words[1] = words[0] + 0.1 * rng.standard_normal(384)  # a near synonym
    book = np.asarray(word_codebook(words, 256, seed=0))
    assert book.shape == (10, 256)
    np.testing.assert_allclose(np.linalg.norm(book, axis=1), 1.0, rtol=1e-6)
    cos = book @ book.T
    assert cos[0, 1] > 0.9 and np.abs(cos[0, 2:]).max() < 0.3
    assert np.array_equal(book, np.asarray(word_codebook(words, 256, seed=0)))
