"""Invariants of the shared encoder blocks: FourierEmb, ChannelMerger, ChannelDropout, SubjectLayers."""

import math

import pytest
import torch

from bm2.models.common import ChannelDropout, ChannelMerger, FourierEmb, SubjectLayers, n_freqs_for


def test_fourier_emb_shape_finite_distinct() -> None:
    torch.manual_seed(0)
    emb = FourierEmb(n_freqs=4, margin=0.2)
    pos = torch.rand(2, 7, 2)
    out = emb(pos)
    assert out.shape == (2, 7, 32) and emb.dim == 32
    assert torch.isfinite(out).all()
    # Distinct positions, including the opposite borders 0 and 1 (kept apart by the margin), differ.
    corners = emb(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]]))
    dist = torch.cdist(corners, corners)
    assert (dist + torch.eye(5) > 1e-3).all()


def _fourier_by_hand(px: float, py: float, n_freqs: int, margin: float) -> list[float]:
    """The published embedding written out with plain loops: x-major pairs, all cosines then all sines."""
    x = (px + margin) / (1 + 2 * margin)
    y = (py + margin) / (1 + 2 * margin)
    phases = [2 * math.pi * (fx * x + fy * y) for fx in range(n_freqs) for fy in range(n_freqs)]
    return [math.cos(a) for a in phases] + [math.sin(a) for a in phases]


def test_fourier_emb_values_match_the_original_mapping() -> None:
    emb = FourierEmb(n_freqs=32, margin=0.2)
    points = [(0.0, 0.0), (1.0, 1.0), (0.25, 0.7), (0.9, 0.05)]
    out = emb(torch.tensor(points)).double()
    assert out.shape == (4, 2048)
    expected = torch.tensor([_fourier_by_hand(px, py, 32, 0.2) for px, py in points], dtype=torch.float64)
    # float32 phases of up to 2π * 62: a few 1e-5 of rounding at most
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    # A few entries in closed form: (0, 0) -> x = y = 0.2 / 1.4 = 1/7, (1, 1) -> x = y = 1.2 / 1.4 = 6/7.
    assert out[0, 0] == pytest.approx(1.0) and out[0, 1024] == pytest.approx(0.0, abs=1e-6)
    assert out[0, 32] == pytest.approx(math.cos(2 * math.pi / 7), abs=1e-6)  # fx=1, fy=0
    assert out[0, 1] == pytest.approx(math.cos(2 * math.pi / 7), abs=1e-6)  # fx=0, fy=1
    assert out[0, 1024 + 33] == pytest.approx(math.sin(4 * math.pi / 7), abs=1e-6)  # sin, fx=fy=1
    assert out[1, 1024 + 32 * 3 + 2] == pytest.approx(math.sin(2 * math.pi * 5 * 6 / 7), abs=1e-5)
    # (0.25, 0.7): x = 0.45 / 1.4, y = 0.9 / 1.4; cos of fx=2, fy=5
    assert out[2, 2 * 32 + 5] == pytest.approx(math.cos(2 * math.pi * (2 * 0.45 + 5 * 0.9) / 1.4), abs=1e-5)
    # The old mapping m + (1 - 2m) p would have given 1, cos(2π 0.2), ... : clearly different values.
    assert abs(out[0, 32] - math.cos(2 * math.pi * 0.2)) > 0.3


def test_fourier_emb_margin_is_a_parameter() -> None:
    points = torch.tensor([[0.25, 0.7]])
    for margin in (0.0, 0.1, 0.5):
        expected = torch.tensor([_fourier_by_hand(0.25, 0.7, 4, margin)])
        torch.testing.assert_close(FourierEmb(4, margin)(points), expected.float(), atol=1e-5, rtol=0)
        assert ChannelMerger(4, pos_dim=32, margin=margin).embedding.margin == margin
    with pytest.raises(ValueError, match="margin"):
        FourierEmb(4, margin=-0.1)


def test_pos_dim_validation() -> None:
    assert n_freqs_for(2048) == 32 and n_freqs_for(512) == 16
    with pytest.raises(ValueError, match="2 \\* n_freqs"):
        n_freqs_for(256)
    with pytest.raises(ValueError):
        ChannelMerger(8, pos_dim=100)


def test_merger_shapes_any_montage() -> None:
    torch.manual_seed(0)
    merger = ChannelMerger(merger_channels=6, pos_dim=32).eval()
    for C in (5, 11):  # a different number of sensors on each call
        x, pos = torch.randn(3, C, 10), torch.rand(3, C, 2)
        assert merger(x, pos, torch.ones(3, C, dtype=torch.bool)).shape == (3, 6, 10)


def test_merger_masked_channels_are_ignored() -> None:
    torch.manual_seed(0)
    merger = ChannelMerger(merger_channels=6, pos_dim=32).eval()
    x, pos = torch.randn(2, 8, 10), torch.rand(2, 8, 2)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    mask[1, 0] = False
    out = merger(x, pos, mask)
    x2, pos2 = x.clone(), pos.clone()
    x2[~mask] = float("nan")  # even NaN values / positions of missing sensors must not leak
    pos2[~mask] = float("nan")
    torch.testing.assert_close(merger(x2, pos2, mask), out)
    # Same as simply removing the missing sensors of item 0.
    torch.testing.assert_close(merger(x[:1, :5], pos[:1, :5], mask[:1, :5]), out[:1])


def test_merger_disc_dropout_train_only_never_empty() -> None:
    torch.manual_seed(0)
    merger = ChannelMerger(merger_channels=4, pos_dim=32, dropout=0.3)
    x, pos = torch.randn(64, 3, 5), torch.rand(64, 3, 2) * 0.1 + 0.45  # all sensors close together
    mask = torch.ones(64, 3, dtype=torch.bool)
    merger.train()
    out = merger(x, pos, mask)
    assert torch.isfinite(out).all() and out.abs().sum(dim=(1, 2)).gt(0).all()
    dropped = merger._disc_dropout(pos, mask)
    assert dropped.any(dim=1).all()
    # Spread-out sensors: the disc does remove some in training, so two training passes differ ...
    pos = torch.rand(64, 30, 2)
    dropped = merger._disc_dropout(pos, torch.ones(64, 30, dtype=torch.bool))
    assert (~dropped).any()
    x = torch.randn(64, 30, 5)
    assert not torch.allclose(merger(x, pos), merger(x, pos))
    # ... while evaluation is deterministic.
    merger.eval()
    torch.testing.assert_close(merger(x, pos), merger(x, pos))


def test_merger_disc_dropout_one_centre_per_batch_by_default() -> None:
    pos = torch.rand(1, 40, 2, generator=torch.Generator().manual_seed(0)).expand(16, -1, -1)
    mask = torch.ones(16, 40, dtype=torch.bool)
    per_batch = ChannelMerger(merger_channels=4, pos_dim=32, dropout=0.3)
    assert not per_batch.dropout_per_item
    per_item = ChannelMerger(merger_channels=4, pos_dim=32, dropout=0.3, dropout_per_item=True)
    n_dropped = 0
    for seed in range(5):
        torch.manual_seed(seed)
        kept = per_batch._disc_dropout(pos, mask)
        # Same sensors, same disc: every item of the batch loses the same sensors.
        assert (kept == kept[:1]).all()
        n_dropped += int((~kept[0]).sum())
        torch.manual_seed(seed)
        kept = per_item._disc_dropout(pos, mask)
        assert not (kept == kept[:1]).all()
    assert n_dropped > 0  # the discs did remove sensors


def test_merger_empty_row_gives_zeros() -> None:
    merger = ChannelMerger(merger_channels=4, pos_dim=32)
    x, pos = torch.randn(2, 3, 5), torch.rand(2, 3, 2)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = merger(x, pos, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    assert torch.isfinite(merger.heads.grad).all()


def test_merger_per_subject() -> None:
    torch.manual_seed(0)
    merger = ChannelMerger(merger_channels=4, pos_dim=32, per_subject=True, n_subjects=3).eval()
    assert merger.heads.shape == (3, 4, 32)
    x, pos = torch.randn(1, 6, 5).expand(2, -1, -1), torch.rand(1, 6, 2).expand(2, -1, -1)
    out = merger(x, pos, None, torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(merger(x, pos, None, torch.tensor([2, 2]))[0], out[1])


def test_channel_dropout() -> None:
    torch.manual_seed(0)
    drop = ChannelDropout(0.5)
    x = torch.ones(50, 4, 3)
    drop.eval()
    assert drop(x) is x
    drop.train()
    y = drop(x)
    assert ((y == 0).all(-1) | (y > 0).all(-1)).all()  # whole sensors dropped
    assert (y != 0).any(dim=(1, 2)).all()  # never a whole row
    torch.testing.assert_close(y.sum(dim=(1, 2)), x.sum(dim=(1, 2)))  # rescaled


def test_subject_layers_identity_and_selection() -> None:
    torch.manual_seed(0)
    layers = SubjectLayers(channels=5, n_subjects=3, init_id=True)
    x = torch.randn(4, 5, 7)
    subjects = torch.tensor([0, 1, 2, 1])
    torch.testing.assert_close(layers(x, subjects), x)

    layers = SubjectLayers(channels=5, n_subjects=3, init_id=False)
    out = layers(x[:1].expand(2, -1, -1), torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1])
    layers(x[:2], torch.tensor([1, 1])).sum().backward()
    grad = layers.weights.grad
    assert grad[1].abs().sum() > 0 and (grad[0] == 0).all() and (grad[2] == 0).all()
    with pytest.raises(IndexError):
        layers(x, torch.tensor([0, 1, 3, 0]))
