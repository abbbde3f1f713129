"""Causal SimpleConv and the streaming check: chunked output equals the offline causal output."""

from typing import Any

import pytest
import torch

from bm2.models import build_model
from bm2.models.simpleconv import ConvBlock, GLUBlock, SimpleConv
from bm2.models.streaming import check_streaming, stream

TINY = {"merger_channels": 8, "merger_pos_dim": 32, "hidden": 12, "depth": 4, "head_hidden": 16}
C, T = 6, 90


def _model(causal: bool, seed: int = 0, **kwargs: Any) -> SimpleConv:
    torch.manual_seed(seed)
    model = SimpleConv(out_channels=5, n_subjects=2, causal=causal, **{**TINY, **kwargs})
    # Non-trivial BatchNorm statistics, so that eval-mode normalisation is part of what is checked.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(1, C, dtype=torch.bool)
    mask[0, 2] = False
    return {"brain": torch.randn(1, C, T, generator=g), "positions": torch.rand(1, C, 2, generator=g),
            "mask": mask, "subject_index": torch.tensor([1])}


def test_receptive_field_and_padding() -> None:
    causal, centred = _model(True), _model(False)
    # depth 4, k=3: dilations 1, 2, 4, 8 -> 2 + 4 + 8 + 16, plus two GLU blocks with k=3 -> 2 + 2.
    assert causal.receptive_field == centred.receptive_field == 1 + 30 + 4
    blocks = [m for m in causal.encoder if isinstance(m, (ConvBlock, GLUBlock))]
    assert [b.left_padding for b in blocks] == [2, 4, 2, 8, 16, 2]  # conv, conv, GLU, conv, conv, GLU
    assert all(b.conv.padding[0] == 0 for b in blocks)
    # Same weights either way: a trained non-causal state_dict loads into a causal model and vice versa.
    assert {k: v.shape for k, v in causal.state_dict().items()} == {k: v.shape for k, v in centred.state_dict().items()}
    assert all(getattr(m, "left_padding", 0) == 0 for m in centred.encoder)
    # Even kernels are fine when causal (no centre needed), still rejected otherwise.
    assert _model(True, kernel_size=4).receptive_field == 1 + 3 * (1 + 2 + 4 + 8) + 3 * 2
    with pytest.raises(ValueError, match="odd"):
        _model(False, kernel_size=4)
    assert build_model("simpleconv", out_channels=3, n_subjects=1, causal=True, **TINY).causal


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_causal_stream_equals_offline(chunk: int) -> None:
    model, batch = _model(True), _batch()
    with torch.no_grad():
        offline = model(**batch)
    streamed = stream(model, batch, chunk)
    assert streamed.shape == offline.shape == (1, 5, T)
    torch.testing.assert_close(streamed, offline, rtol=1e-5, atol=1e-5)


def test_check_streaming_separates_causal_from_centred() -> None:
    batch = _batch()
    causal = check_streaming(_model(True), batch, (1, 7, 50))
    centred = check_streaming(_model(False), batch, (1, 7, 50))
    assert causal < 1e-5
    assert centred > 1e-2 and centred > 1000 * causal
    # A brain tensor alone (subject 0, all sensors) with positions as a keyword input works too.
    assert check_streaming(_model(True), batch["brain"], 13, positions=batch["positions"]) < 1e-5
    # Less past context than receptive_field - 1 breaks the equality: all of it is needed, and it is enough.
    model = _model(True)
    exact = check_streaming(model, batch, 7)
    assert check_streaming(model, batch, 7, context=model.receptive_field // 2) > 1e-3
    assert check_streaming(model, batch, 7, context=model.receptive_field - 2) > 10 * exact


def test_stream_errors() -> None:
    model, batch = _model(True), _batch()
    with pytest.raises(ValueError, match="eval mode"):
        stream(model.train(), batch, 5)
    model.eval()
    with pytest.raises(ValueError, match="chunk"):
        stream(model, batch, 0)
    with pytest.raises(KeyError, match="no output 'features'"):
        stream(model, batch, 5, key="features")
    with pytest.raises(AttributeError, match="receptive_field"):
        stream(torch.nn.Identity().eval(), batch["brain"], 5)


@pytest.mark.parametrize("seed", range(4))
def test_future_samples_do_not_change_past_outputs(seed: int) -> None:
    """Property: perturbing input samples >= t0 leaves outputs < t0 unchanged iff the model is causal."""
    g = torch.Generator().manual_seed(100 + seed)
    t0 = int(torch.randint(10, T - 10, (1,), generator=g))
    batch = _batch(seed)
    perturbed = dict(batch)
    perturbed["brain"] = batch["brain"].clone()
    perturbed["brain"][..., t0:] += 3 * torch.randn(1, C, T - t0, generator=g)
    for causal in (True, False):
        model = _model(causal, seed)
        with torch.no_grad():
            before, after = model(**batch), model(**perturbed)
        past = (before[..., :t0] - after[..., :t0]).abs().max()
        if causal:
            assert past == 0, f"causal output before t0={t0} changed by {past}"
            assert (before[..., t0:] - after[..., t0:]).abs().max() > 1e-3
        else:
            assert past > 1e-3, "a centred model should see the future"
