"""DeMEGa-style classifier: relative-position buckets, disentangled attention, parameter count, shapes."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bm2.models import MODELS, build_model, count_parameters, data_kwargs_for
from bm2.models.demega import DeMEGa, DisentangledAttention, log_bucket_position, relative_positions


def test_log_buckets_at_hand_computed_distances():
    # mid = 16, log base ln(127 / 16) = 2.07158:
    # 17 -> ceil(ln(17/16) / 2.07158 * 15) + 16 = ceil(0.439) + 16 = 17
    # 32 -> ceil(ln 2 / 2.07158 * 15) + 16 = ceil(5.019) + 16 = 22
    # 64 -> ceil(ln 4 / 2.07158 * 15) + 16 = ceil(10.038) + 16 = 27
    # 124 -> ceil(ln 7.75 / 2.07158 * 15) + 16 = ceil(14.83) + 16 = 31; 127 -> exactly 15 + 16 = 31
    r = torch.tensor([0, 1, -5, 16, -16, 17, -17, 32, -32, 64, 124, 127, -127])
    expected = [0, 1, -5, 16, -16, 17, -17, 22, -22, 27, 31, 31, -31]
    assert log_bucket_position(r, buckets=32, max_position=128).tolist() == expected
    rel = relative_positions(125, 125, 32, 128)
    assert rel.shape == (125, 125) and rel[0, 0] == 0 and rel[3, 0] == 3 and rel[0, 124] == -31
    assert int(rel.abs().max()) == 31


def test_attention_without_positional_terms_is_scaled_dot_product_attention():
    torch.manual_seed(0)
    attn = DisentangledAttention(dim=32, n_heads=4, c2p=False, p2c=False, dropout=0.0).eval()
    x = torch.randn(3, 10, 32)
    heads = lambda t: t.view(3, 10, 4, 8).transpose(1, 2)  # noqa: E731
    ref = F.scaled_dot_product_attention(heads(attn.query(x)), heads(attn.key(x)), heads(attn.value(x)))
    ref = attn.out(ref.transpose(1, 2).reshape(3, 10, 32))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-5)


def test_positional_terms_change_scores_and_follow_the_relative_table():
    torch.manual_seed(0)
    attn = DisentangledAttention(dim=16, n_heads=2, buckets=8, max_position=16, dropout=0.0).eval()
    x, table = torch.randn(1, 6, 16), torch.randn(16, 16)
    plain = attn.query(x).view(1, 6, 2, 8).transpose(1, 2) @ attn.key(x).view(1, 6, 2, 8).transpose(1, 2).mT
    scores = attn.scores(x, table)
    assert not torch.allclose(scores, plain / (8 * 3) ** 0.5)
    # content-to-position term of (i=4, j=1), head 0, by hand: q_4 . Kpos[r + 8] / sqrt(2 * 8), r = 3
    only_c2p = DisentangledAttention(dim=16, n_heads=2, buckets=8, max_position=16, p2c=False).eval()
    only_c2p.load_state_dict(attn.state_dict(), strict=False)
    q = attn.query(x)[0, 4, :8]
    k = attn.key(x)[0, 1, :8]
    pos_k = attn.pos_key(table)[3 + 8, :8]
    expected = q @ k / (8 * 2) ** 0.5 + q @ pos_k / (8 * 2) ** 0.5
    torch.testing.assert_close(only_c2p.scores(x, table)[0, 0, 4, 1], expected, atol=1e-5, rtol=1e-5)


def test_parameter_count_at_the_paper_sizes():
    """306 sensors x 125 samples, 39 classes, d 128, 4 layers: 5 226 101 = the description's 5.23 M (input
    projection 245 248 + skip 39 296 + encoder 764 928 (one relative table of 64 x 128 and its LayerNorm per layer)
    + final norm 256 + aggregator 4 129 152 + heads 5 031 + 9 166 + 33 024)."""
    model = build_model("demega", out_channels=39, n_subjects=1, n_channels=306, n_times=125)
    assert count_parameters(model) == 5_226_101
    assert count_parameters(model.encoder) == 764_928 and count_parameters(model.aggregator) == 4_129_152
    assert count_parameters(model.input_proj) == 245_248 and count_parameters(model.input_skip) == 39_296


def test_forward_shapes_registry_and_mask():
    assert MODELS["demega"] is DeMEGa
    kwargs = data_kwargs_for("demega", {"out_channels": 5, "n_subjects": 1, "n_channels": 7, "n_times": 20,
                                        "sample_rate": 250.0})
    assert kwargs == {"out_channels": 5, "n_subjects": 1, "n_channels": 7, "n_times": 20}
    torch.manual_seed(0)
    model = build_model("demega", **kwargs, dim=16, n_layers=1, n_heads=2, ff_dim=32, embed_hidden=16,
                        embed_dim=8, ipa_hidden=8, proj_dim=12).eval()
    brain, mask = torch.randn(3, 7, 20), torch.ones(3, 7)
    out = model(brain, mask)
    assert out["output"].shape == (3, 5) and out["ipa"].shape == (3, 14) and out["projection"].shape == (3, 12)
    torch.testing.assert_close(out["projection"].norm(dim=-1), torch.ones(3))
    mask[:, 2] = 0
    changed = brain.clone()
    changed[:, 2] += 100.0  # a masked sensor does not matter
    torch.testing.assert_close(model(changed, mask)["output"], model(brain, mask)["output"])
    out["output"].sum().backward()
