"""Inference add-ons of the classification evaluation: db4 wavelet denoising and test-time augmentation (TTA)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bm2.tasks import get_task
from bm2.tasks.classification import addons_table, classification_table
from bm2.tasks.inference import (DenoiseParams, InferenceAddOns, TTAParams, combine_views, counter_uniform,
                                 tta_views, variants, wavelet_denoise)

from .fakes import FakeDataset, segments

CONFIG = Path(__file__).resolve().parents[2] / "conf" / "config.yaml"
OFF = dict(enabled=True, shifts=(), channel_dropout=0.0, noise=0.0)  # TTA with only the original view


class Linear(torch.nn.Module):
    """A fixed random linear classifier of flattened ``[C, T]`` windows (reads ``brain`` only)."""

    inputs = ("brain",)

    def __init__(self, n_channels: int, n_times: int, n_classes: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(n_channels * n_times, n_classes)

    def forward(self, brain: torch.Tensor) -> torch.Tensor:
        return self.linear(brain.flatten(1))


def _windows(n: int = 23, c: int = 4, t: int = 32, k: int = 3, seed: int = 0) -> tuple[FakeDataset, Linear]:
    rng = np.random.default_rng(seed)
    brain = rng.standard_normal((n, c, t)).astype(np.float32)
    labels = rng.integers(0, k, n)
    dataset = FakeDataset(list(brain), segments(n), {"label": labels}, vocabulary=[f"c{i}" for i in range(k)])
    return dataset, Linear(c, t, k)


# ----------------------------------------------------------------------------------------------------- TTA
def test_tta_with_the_original_view_only_equals_plain_evaluation():
    dataset, model = _windows()
    task = get_task("classification")
    plain = task.evaluate(model, dataset, n_boot=50, batch_size=5)
    tta = task.evaluate(model, dataset, n_boot=50, batch_size=5, addons=InferenceAddOns(tta=TTAParams(**OFF)))
    assert tta.metrics == plain.metrics
    np.testing.assert_allclose(tta.probs, plain.probs, rtol=0, atol=1e-6)
    assert (tta.items["prediction"] == plain.items["prediction"]).all()


def test_tta_changes_scores_and_does_not_depend_on_the_batch_size():
    dataset, model = _windows()
    task = get_task("classification")
    addons = InferenceAddOns(tta=TTAParams(enabled=True, noise=0.5))
    plain = task.evaluate(model, dataset, n_boot=0, batch_size=4)
    a = task.evaluate(model, dataset, n_boot=0, batch_size=4, addons=addons)
    b = task.evaluate(model, dataset, n_boot=0, batch_size=9, addons=addons)
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-6)
    assert np.abs(a.probs - plain.probs).max() > 1e-3


def test_a_shift_of_k_samples_is_a_real_shift():
    x = torch.arange(2 * 3 * 10, dtype=torch.float32).reshape(2, 3, 10) + 1
    index = torch.arange(2)
    zero = tta_views(x, index, TTAParams(**{**OFF, "shifts": (2, -3)}))
    assert zero.shape == (3, 2, 3, 10)
    assert torch.equal(zero[0], x)
    assert torch.equal(zero[1][..., 2:], x[..., :-2]) and torch.equal(zero[1][..., :2], torch.zeros(2, 3, 2))
    assert torch.equal(zero[2][..., :-3], x[..., 3:]) and torch.equal(zero[2][..., -3:], torch.zeros(2, 3, 3))
    edge = tta_views(x, index, TTAParams(**{**OFF, "shifts": (2,), "fill": "edge"}))[1]
    assert torch.equal(edge[..., :2], x[..., :1].expand(2, 3, 2)) and torch.equal(edge[..., 2:], x[..., :-2])
    wrap = tta_views(x, index, TTAParams(**{**OFF, "shifts": (2,), "fill": "wrap"}))[1]
    assert torch.equal(wrap[..., :2], x[..., -2:])
    with pytest.raises(ValueError, match="test.tta.shifts has 10 samples but the windows have 10"):
        tta_views(x, index, TTAParams(**{**OFF, "shifts": (10,)}))


def test_channel_dropout_zeroes_five_percent_of_the_channels_per_item_seeded():
    b, c, t = 40, 306, 8
    x = torch.randn(b, c, t) + 5.0  # no channel is 0 before dropout
    index = torch.arange(100, 100 + b)
    params = TTAParams(**{**OFF, "channel_dropout": 0.05})
    views = tta_views(x, index, params)
    assert views.shape[0] == params.n_views == 2
    dropped = (views[1] == 0).all(dim=-1)  # [B, C]
    assert (dropped.sum(1) == round(0.05 * c)).all()  # 15 of 306 channels, every item
    assert torch.equal(views[1][~dropped], x[~dropped])  # the others untouched
    assert len({tuple(np.flatnonzero(row)) for row in dropped.numpy()}) == b  # a different draw per item
    assert torch.equal(tta_views(x, index, params)[1], views[1])  # seeded
    # the draw of an item depends on its index, not on the rest of the batch
    assert torch.equal(tta_views(x[3:5], index[3:5], params)[1], views[1][3:5])
    other = tta_views(x, index, TTAParams(**{**OFF, "channel_dropout": 0.05, "seed": 1}))[1]
    assert not torch.equal(other, views[1])
    # absent (padded) channels are never chosen and do not count
    mask = torch.ones(b, c, dtype=torch.bool)
    mask[:, 100:] = False
    dropped = (tta_views(x, index, params, mask)[1] == 0).all(dim=-1)
    assert not dropped[:, 100:].any() and (dropped.sum(1) == 5).all()  # round(0.05 * 100)


def test_noise_view_is_seeded_gaussian_relative_to_each_channel():
    b, c, t = 8, 20, 200
    x = torch.randn(b, c, t) * torch.linspace(0.5, 4.0, c)[None, :, None]
    params = TTAParams(**{**OFF, "noise": 0.1})
    views = tta_views(x, torch.arange(b), params)
    z = (views[1] - x).double() / (0.1 * x.double().std(dim=-1, keepdim=True, unbiased=False))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05
    assert torch.equal(tta_views(x, torch.arange(b), params)[1], views[1])


def test_counter_uniform_is_uniform_and_keyed():
    u = counter_uniform(0, torch.arange(100_000))
    assert 0 < float(u.min()) and float(u.max()) < 1
    hist = np.histogram(u.numpy(), bins=10, range=(0, 1))[0]
    assert (np.abs(hist - 10_000) < 500).all()
    assert not torch.equal(counter_uniform(0, torch.arange(10)), counter_uniform(1, torch.arange(10)))
    assert torch.equal(counter_uniform(3, torch.arange(10))[4:6], counter_uniform(3, torch.arange(4, 6)))


def test_the_original_view_is_weighted():
    logits = torch.log(torch.tensor([[[0.8, 0.2]], [[0.2, 0.8]]]))  # 2 views, 1 item, 2 classes
    probs = torch.softmax(combine_views(logits, torch.tensor([2.0, 1.0])), dim=-1)
    np.testing.assert_allclose(probs.numpy(), [[0.6, 0.4]], atol=1e-12)  # (2 * 0.8 + 0.2) / 3
    mean = combine_views(logits, torch.tensor([2.0, 1.0]), "logits")
    np.testing.assert_allclose(mean.numpy(), (2 * logits[0] + logits[1]).numpy() / 3, atol=1e-12)
    assert TTAParams(original_weight=3.0).weights().tolist() == [3.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_addons_combine_the_views_in_order_with_their_weights():
    class FirstSample(torch.nn.Module):
        inputs = ("brain",)

        def forward(self, brain: torch.Tensor) -> torch.Tensor:  # class logits (s, -s), s = first sample
            s = brain[:, 0, 0]
            return torch.stack([s, -s], dim=1)

    x = torch.full((1, 1, 10), 2.0)
    params = TTAParams(**{**OFF, "shifts": (1, 2), "original_weight": 2.0})
    out = InferenceAddOns(tta=params)(FirstSample(), {"brain": x, "index": torch.zeros(1, dtype=torch.long)})
    p_orig = torch.softmax(torch.tensor([2.0, -2.0], dtype=torch.float64), 0)  # the shifted views start with 0
    expected = (2 * p_orig + 2 * torch.tensor([0.5, 0.5], dtype=torch.float64)) / 4
    np.testing.assert_allclose(torch.softmax(out["output"].double(), -1)[0].numpy(), expected.numpy(), atol=1e-6)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="test.tta.combine"):
        TTAParams(combine="median")
    with pytest.raises(ValueError, match="test.tta.channel_dropout"):
        TTAParams(channel_dropout=1.0)
    with pytest.raises(ValueError, match="test.denoise.wavelet"):
        DenoiseParams(wavelet="db99x")
    with pytest.raises(ValueError, match="test.denoise.threshold"):
        DenoiseParams(threshold="garrote-ish")
    assert [v.name for v in variants(DenoiseParams(enabled=True), TTAParams(enabled=True))] == \
        ["denoise", "tta", "denoise_tta"]
    assert variants(DenoiseParams(), TTAParams()) == ()


# ------------------------------------------------------------------------------------------------ denoising
def _reference(x: np.ndarray, strength: float = 0.6, rescale: bool = True) -> np.ndarray:
    """One channel, written directly with PyWavelets."""
    import pywt

    coeffs = pywt.wavedec(x, "db4", level=3)
    sigma = np.median(np.abs(coeffs[-1])) / 0.6745
    lam = sigma * math.sqrt(2 * math.log(len(x))) * strength
    coeffs = [coeffs[0]] + [pywt.threshold(c, lam, mode="soft") for c in coeffs[1:]]
    y = pywt.waverec(coeffs, "db4")[:len(x)]
    if rescale:
        y = (y - y.mean()) / y.std() * x.std() + x.mean()
    return y


def test_denoising_equals_a_direct_pywavelets_reference():
    t = np.arange(125) / 250.0
    rng = np.random.default_rng(1)
    x = np.stack([np.sin(2 * np.pi * 4 * t) + 0.5 * rng.standard_normal(125) + 3.0,
                  np.sign(np.sin(2 * np.pi * 2 * t)) + 0.2 * rng.standard_normal(125),
                  rng.standard_normal(125)])[None]  # [1, 3, 125]
    for rescale in (True, False):
        out = wavelet_denoise(x, DenoiseParams(rescale=rescale))
        ref = np.stack([_reference(ch, rescale=rescale) for ch in x[0]])[None]
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)
        assert np.abs(out - x).max() > 0.05  # it did something
    tensor = wavelet_denoise(torch.from_numpy(x).float(), DenoiseParams())
    assert tensor.dtype == torch.float32 and tensor.shape == (1, 3, 125)
    np.testing.assert_allclose(tensor.numpy(), np.stack([_reference(ch) for ch in x[0]])[None], atol=1e-5)


def test_denoising_keeps_a_slow_sinusoid_and_removes_white_noise():
    t = np.arange(125) / 250.0
    sine = np.sin(2 * np.pi * 3 * t)
    plain = DenoiseParams(rescale=False)
    assert np.linalg.norm(wavelet_denoise(sine[None], plain)[0] - sine) < 1e-3 * np.linalg.norm(sine)
    noise = np.random.default_rng(0).standard_normal((100, 125))
    assert (wavelet_denoise(noise, plain) ** 2).mean() < 0.25 * (noise ** 2).mean()
    noisy = sine + 0.3 * noise
    assert ((wavelet_denoise(noisy, DenoiseParams()) - sine) ** 2).mean() < 0.5 * ((noisy - sine) ** 2).mean()
    constant = np.zeros((2, 125))
    np.testing.assert_array_equal(wavelet_denoise(constant, DenoiseParams()), constant)
    with pytest.raises(ValueError, match="at most 1 levels of db4, not test.denoise.level=3"):
        wavelet_denoise(np.zeros((1, 20)), DenoiseParams())


def test_denoising_addon_feeds_the_model_denoised_inputs():
    dataset, model = _windows(t=64)
    task = get_task("classification")
    addons = InferenceAddOns(denoise=DenoiseParams(enabled=True))
    result = task.evaluate(model, dataset, n_boot=0, addons=addons)
    brain = torch.from_numpy(np.stack(dataset.brain))
    expected = torch.softmax(model(wavelet_denoise(brain, DenoiseParams())).double(), -1).detach().numpy()
    np.testing.assert_allclose(result.probs, expected, atol=1e-5)


# ------------------------------------------------------------------------------------------- reporting
def test_results_table_has_a_row_per_addon():
    metrics = {"top1": 0.5, "top5": 0.9, "balanced_accuracy": 0.4, "f1_macro": 0.3, "chance_top1": 0.1,
               "top1_tta": 0.55, "balanced_accuracy_tta": 0.45, "f1_macro_tta": 0.35}
    table = classification_table(metrics)
    assert "| none | 50.0 | 40.0 | 30.0 |" in table
    assert "| test-time augmentation | 55.0 | 45.0 | 35.0 |" in table
    assert "wavelet denoising" not in table
    assert addons_table({"f1_macro": 0.3}) == ""


def test_addons_for_other_tasks_are_refused():
    from omegaconf import OmegaConf

    from bm2.builders import build_inference

    cfg = OmegaConf.load(CONFIG)
    assert build_inference(cfg) == ()
    cfg.test.tta.enabled = True
    with pytest.raises(ValueError, match="apply to test.task=classification, not retrieval"):
        build_inference(cfg)
    cfg.test.task = "classification"
    (tta,) = build_inference(cfg)
    assert tta.tta == TTAParams(enabled=True) and tta.denoise is None
    del cfg.test["denoise"]  # an XP older than the add-ons: forced on with the defaults
    assert [v.name for v in build_inference(cfg, force=("denoise",))] == ["denoise", "tta", "denoise_tta"]


def test_signature_ignores_the_addons(tmp_path, monkeypatch):
    monkeypatch.setenv("BM2_XP_DIR", str(tmp_path))
    from bm2.train import main

    plain = main.get_xp(["recipe=demega"]).sig
    assert main.get_xp(["recipe=demega", "test.tta.enabled=true", "test.denoise.enabled=true",
                        "test.tta.shifts=[1,3]"]).sig == plain
    assert main.get_xp(["recipe=demega", "seed=1"]).sig != plain


def test_a_finished_xp_is_tested_again_when_the_test_settings_change(tmp_path):
    from bm2.solvers.base import LocalLink

    from ..solvers.test_base import ToySolver

    class Settable(ToySolver):
        settings: dict = {}
        tested = 0

        def test_settings(self):
            return self.settings

        def test_stage(self):
            Settable.tested += 1
            return {"weight": self.model.weight.item(), "with": float(bool(self.settings))}

    link = LocalLink()
    first = Settable(tmp_path, link, [3, 2], epochs=2)
    first.run()
    assert Settable.tested == 1 and "test_settings" not in link.history[-1]
    Settable(tmp_path, link, [3, 2], epochs=2).run()
    assert Settable.tested == 1  # nothing changed: nothing runs
    Settable.settings = {"tta": {"shifts": (2, 4)}}
    second = Settable(tmp_path, link, [3, 2], epochs=2)
    last = second.run()
    assert second.trained_epochs == [] and Settable.tested == 2 and len(link.history) == 2
    assert last["test"]["with"] == 1.0 and last["test_settings"] == {"tta": {"shifts": (2, 4)}}
    assert last["test"]["weight"] == first.history[-1]["test"]["weight"]  # the same best state
    Settable(tmp_path, link, [3, 2], epochs=2).run()
    assert Settable.tested == 2  # tuples and their JSON lists compare equal
    Settable.settings = {}
    Settable(tmp_path, link, [3, 2], epochs=2).run()
    assert Settable.tested == 3 and "test_settings" not in link.history[-1]


def test_offline_evaluation_reports_each_variant(tmp_path, monkeypatch):
    import json
    import types

    from bm2.tasks import evaluate as E

    from . import test_classification
    from .fakes import Echo
    from .test_evaluate import _xp_folder

    folder = _xp_folder(tmp_path)
    variant = InferenceAddOns(tta=TTAParams(**{**OFF, "original_weight": 3.0}))
    seen = {}

    def rebuild(ckpt, cfg, device, addons=()):
        seen["addons"] = addons
        test = test_classification._dataset()
        return E.Rebuilt(Echo(), types.SimpleNamespace(train=test, test=test), {"train": test}, (variant,))

    monkeypatch.setattr(E, "rebuild", rebuild)
    result = E.evaluate_checkpoint(folder, device="cpu", batch_size=4, addons=["tta"])
    assert seen["addons"] == ["tta"]
    assert result.metrics["f1_macro_tta"] == result.metrics["f1_macro"]  # the original view only
    assert "chance_top1_tta" not in result.metrics
    summary = json.loads((folder / "eval" / "summary.json").read_text())
    assert summary["metrics"]["balanced_accuracy_tta"] == result.metrics["balanced_accuracy"]
    assert summary["meta"]["inference"]["tta"]["tta"]["original_weight"] == 3.0
    assert json.loads((folder / "eval" / "tta" / "summary.json").read_text())["metrics"]["f1_macro"] == \
        result.metrics["f1_macro"]
    assert "with test-time augmentation: f1_macro" in E.describe(result.task, result.metrics)


def test_submission_uses_the_addons_asked_for(tmp_path, monkeypatch):
    from bm2.tasks import evaluate as E
    from bm2.tasks import submission as S

    from .test_evaluate import _xp_folder

    folder = _xp_folder(tmp_path)
    dataset, model = _windows(t=64)
    dataset.vocabulary = ["AA", "AE", "AH"]
    seen = {}

    class Splits(dict):
        vocabulary = dataset.vocabulary

    def rebuild(ckpt, cfg, device, addons=()):
        seen["addons"] = addons
        variant = InferenceAddOns(denoise=DenoiseParams(enabled=True)) if addons else None
        return E.Rebuilt(model, Splits(test=dataset), {}, (variant,) if variant else ())

    monkeypatch.setattr(E, "rebuild", rebuild)
    plain = S.submission_from_xp(folder, tmp_path / "plain.csv")
    denoised = S.submission_from_xp(folder, tmp_path / "denoised.csv", addons=["denoise"])
    assert seen["addons"] == ["denoise"]
    brain = torch.from_numpy(np.stack(dataset.brain))
    expected = torch.softmax(model(wavelet_denoise(brain, DenoiseParams())).double(), -1).detach().numpy()
    np.testing.assert_allclose(denoised[["phoneme_1", "phoneme_2", "phoneme_3"]].to_numpy(), expected, atol=1e-5)
    assert np.abs(plain["phoneme_1"].to_numpy() - expected[:, 0]).max() > 1e-4
