"""ECoG decoders of Neural Speech Decoding (bm2/models/ecog_decoders.py, ecog_swin.py): causality, shapes, grid
layout, gradients, documented sizes and errors. Tiny widths keep them fast on CPU."""

from __future__ import annotations

import re

import pytest
import torch

from bm2.models import count_parameters
from bm2.models.ecog_common import FrameGroupNorm, to_grid
from bm2.models.ecog_decoders import DECODERS, build_ecog_decoder

LEAD = 16
TINY = {"resnet": {"width": 4}, "lstm": {"hidden": 16, "layers": 2},
        "swin": {"embed_dim": 12, "depths": [1, 2, 2], "heads": [1, 2, 4], "head_channels": [16, 8]}}
# Cut points j (speech frames): the first frame, the patch / window / shifted-window / stride-16 boundaries of the
# decoders (2-frame patches, 8-frame windows shifted by 4, 16-frame coarse steps) and the last frames.
CUTS = (0, 1, 3, 4, 7, 8, 11, 12, 15, 16, 17, 31, 32, 47, 60, 62)
T = 64


def _tiny(name: str, causal: bool, n_electrodes: int = 64, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_ecog_decoder(name, n_electrodes=n_electrodes, causal=causal, out_channels=5,
                               **{**TINY[name], **kwargs})
    return model.eval()


def _past_change(model: torch.nn.Module, ecog: torch.Tensor, j: int) -> float:
    """Largest change of output frames <= j when every ECoG frame after j + lead (speech frame j's time) is
    replaced by other values."""
    other = ecog.clone()
    other[..., j + LEAD + 1:] = torch.randn_like(other[..., j + LEAD + 1:]) * 3
    with torch.no_grad():
        return float((model(other)[..., :j + 1] - model(ecog)[..., :j + 1]).abs().max())


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_causal_decoders_ignore_the_future_exactly(name):
    model = _tiny(name, causal=True)
    assert model.lead == LEAD
    ecog = torch.randn(3, 64, T + LEAD, generator=torch.Generator().manual_seed(1))
    changes = {j: _past_change(model, ecog, j) for j in CUTS}
    assert all(c == 0.0 for c in changes.values()), changes


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_non_causal_decoders_see_the_future(name):
    # the same check fails on the non-causal variants: it can detect a leak
    model = _tiny(name, causal=False)
    ecog = torch.randn(3, 64, T + LEAD, generator=torch.Generator().manual_seed(1))
    assert min(_past_change(model, ecog, j) for j in (0, 15, 32)) > 1e-6


def _last_frame_seen(model: torch.nn.Module, ecog: torch.Tensor, j: int) -> int:
    """The last ECoG frame with a non-zero gradient on output frame j."""
    x = ecog.clone().requires_grad_(True)
    model(x)[..., j].sum().backward()
    seen = (x.grad.abs().sum(dim=(0, 1)) > 0).nonzero()
    return int(seen.max())


@pytest.mark.parametrize("name, reach", [
    ("resnet", lambda j: 16 * (j // 16) + 15),  # stride-16 steps, delayed by one step within the lead
    ("swin", lambda j: 2 * (j // 2) + 15),  # 2-frame patches started 2 frames early
    ("lstm", lambda j: j + 8),  # the original's crop [8:-8]
])
def test_causal_reach_is_the_documented_one(name, reach):
    # beyond "no future": each causal decoder sees exactly the frames its docstring says, including lead frames
    model = _tiny(name, causal=True)
    ecog = torch.randn(4, 64, 48 + LEAD, generator=torch.Generator().manual_seed(2))
    for j in (0, 15, 16, 33, 47):
        assert _last_frame_seen(model, ecog, j) == reach(j), j


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("n_electrodes, frames", [(64, T), (50, 37), (64, 1)])
def test_shapes(name, causal, n_electrodes, frames):
    model = _tiny(name, causal, n_electrodes=n_electrodes)
    out = model(torch.randn(2, n_electrodes, frames + LEAD))
    assert out.shape == (2, 5, frames) and torch.isfinite(out).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("name", sorted(DECODERS))
def test_gradients_reach_every_parameter(name, causal):
    kwargs = {"drop_path": 0.0} if name == "swin" else {}  # stochastic depth could drop a whole branch here
    model = _tiny(name, causal, **kwargs).train()
    out = model(torch.randn(2, 64, 32 + LEAD))
    (out * torch.randn_like(out)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_paper_sizes_are_the_documented_ones():
    for name, causal, cls in [("resnet", False, "ECoGResNet3d"), ("lstm", False, "ECoGLSTM"),
                              ("lstm", True, "ECoGLSTM"), ("swin", False, "ECoGSwin3d")]:
        model = build_ecog_decoder(name, causal=causal)
        assert type(model).__name__ == cls
        doc = re.sub(r"\s+", " ", type(model).__doc__ or "")
        count = f"{count_parameters(model):,}".replace(",", " ")
        assert count in doc, (name, causal, count)
    # the causal ResNet and Swin differ only by padding, masks and norms: the same parameters
    for name in ("resnet", "swin"):
        assert count_parameters(build_ecog_decoder(name, causal=True)) == count_parameters(build_ecog_decoder(name))
    # a hybrid-density grid (more than 64 cells) gets the 4th Swin stage
    assert len(build_ecog_decoder("swin", n_electrodes=128, grid=(16, 8)).stages) == 4
    assert len(build_ecog_decoder("swin").stages) == 3


def test_grid_is_row_major_and_zero_filled():
    ecog = torch.arange(50.0).reshape(1, 50, 1).expand(1, 50, 3)
    grid = to_grid(ecog, (8, 8))
    assert grid.shape == (1, 1, 3, 8, 8)
    assert grid[0, 0, 2, 1, 3] == 11 and grid[0, 0, 0, 6, 1] == 49  # electrode i at (i // 8, i % 8)
    assert (grid[0, 0, :, 6, 2:] == 0).all() and (grid[0, 0, :, 7] == 0).all()


def test_frame_group_norm_normalises_each_frame_alone():
    norm = FrameGroupNorm(2, 4)
    x = torch.randn(3, 4, 5, 2, 2)
    x[:, :, -1] *= 100  # a loud last frame must not change the others
    out = norm(x)
    ref = torch.nn.functional.group_norm(x[:, :, 1], 2)
    torch.testing.assert_close(out[:, :, 1], ref)


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match="valid names"):
        build_ecog_decoder("transformer")
    with pytest.raises(ValueError, match="do not fit a 8 x 8 grid"):
        build_ecog_decoder("resnet", n_electrodes=65)
    model = _tiny("resnet", causal=True)
    with pytest.raises(ValueError, match="built for 64.*n_electrodes=60"):
        model(torch.randn(1, 60, 40))
    with pytest.raises(ValueError, match="at least 17"):
        model(torch.randn(1, 64, 16))
    with pytest.raises(ValueError, match="shift"):
        build_ecog_decoder("lstm", shift=17)
    with pytest.raises(ValueError, match="heads"):
        build_ecog_decoder("swin", depths=[2, 2], heads=[3, 6, 12])
