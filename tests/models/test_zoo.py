"""The model zoo: every registered model builds from the data sizes and runs; the braindecode adapter."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bm2.models import (
    DATA_KWARGS,
    MODELS,
    BraindecodeModel,
    build_model,
    count_parameters,
    data_kwargs_for,
    model_from_spec,
)
from bm2.models.zoo import ZOO, import_braindecode_models
from bm2.tasks import DEFAULT_INPUTS, model_inputs, run_model

HAS_BRAINDECODE = importlib.util.find_spec("braindecode") is not None
NO_BRAINDECODE = "braindecode is not installed (pip install bm2[zoo]); CI installs it"
NEEDS_BRAINDECODE = pytest.mark.skipif(not HAS_BRAINDECODE, reason=NO_BRAINDECODE)

# Tiny study: 8 sensors, 2 s at 100 Hz, 4 outputs, 2 subjects.
B, C, T, SFREQ, OUT, SUBJECTS = 3, 8, 200, 100.0, 4, 2
AVAILABLE = {"out_channels": OUT, "n_subjects": SUBJECTS, "n_channels": C, "n_times": T, "sample_rate": SFREQ,
             "n_freqs": None, "unrelated": 1}
# Models whose defaults are too big for a unit test get small sizes here; others build with their defaults.
TINY = {"simpleconv": {"merger_channels": 8, "merger_pos_dim": 32, "hidden": 12, "depth": 4, "head_hidden": 16},
        "duin_vqvae": {"depth": 1, "decoder_depth": 1, "n_codes": 16, "d_code": 8},
        "duin_mae": {"depth": 1, "vqvae": {"n_codes": 16, "d_code": 8, "decoder_depth": 1}},
        "inr": {"depth": 1, "d_ff": 32}}
F_SPECTRA = 8  # frequencies of [B, C, F, T] inputs, for models that declare n_freqs (spectra: model=inr)
# Models that read the speech spectrogram, not only the brain: built, run and rebuilt in their own tests.
OWN_TESTS = {"nsd": "tests/models/test_nsd.py (it reads the 256-bin NSD spectrogram)"}


def _spectral(name: str) -> bool:
    return "n_freqs" in getattr(MODELS[name], "data_kwargs", ())


def _available(name: str) -> dict:
    return {**AVAILABLE, "n_freqs": F_SPECTRA} if _spectral(name) else AVAILABLE


def _as_loaded(name: str, model: torch.nn.Module) -> None:
    """Put a chained stage in the state its parent XP gives it (the Du-IN MAE refuses an untrained tokenizer)."""
    if name == "duin_mae":
        model.vqvae.codebook.initialised.fill_(True)


def _batch(n_freqs: int | None = None) -> dict[str, torch.Tensor]:
    mask = torch.ones(B, C, dtype=torch.bool)
    mask[0, -2:] = False
    brain = torch.randn(B, C, T) if n_freqs is None else torch.randn(B, C, n_freqs, T)
    return {"brain": brain, "mask": mask, "positions": torch.rand(B, C, 2),
            "subject_index": torch.tensor([0, 1, 1]), "index": torch.arange(B)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_builds_runs_and_rebuilds(name: str) -> None:
    cls = MODELS[name]
    if issubclass(cls, BraindecodeModel) and not HAS_BRAINDECODE:
        pytest.skip(NO_BRAINDECODE)
    if name in OWN_TESTS:
        pytest.skip(f"tested in {OWN_TESTS[name]}")
    assert isinstance(getattr(cls, "inputs", None), tuple) and cls.inputs, f"{name} must declare inputs"
    assert set(getattr(cls, "data_kwargs", ())) <= set(DATA_KWARGS), f"{name} declares unknown data_kwargs"
    torch.manual_seed(0)
    model = build_model(name, **data_kwargs_for(name, _available(name)), **TINY.get(name, {}))
    assert count_parameters(model) > 0
    _as_loaded(name, model)
    batch = _batch(F_SPECTRA if _spectral(name) else None)

    model.train()
    outputs = run_model(model, batch)
    assert outputs, f"{name} returned no output"
    sum(o.float().mean() for o in outputs.values()).backward()
    assert any(p.grad is not None for p in model.parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    with torch.no_grad():
        out = run_model(model, batch)["output"]
    # Per window [B, out] (classifiers) or per sample [B, out, T] (encoders); pre-training models give their own.
    if getattr(cls, "pretraining", False):
        assert out.shape[0] == B, f"{name}: output shape {tuple(out.shape)}"
    else:
        assert out.shape in {(B, OUT), (B, OUT, T)}, f"{name}: output shape {tuple(out.shape)}"
    assert torch.isfinite(out).all()

    rebuilt = model_from_spec(model.bm2_spec)
    state = model.state_dict()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state.items()}
    rebuilt.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(run_model(rebuilt.eval(), batch)["output"], out)


def test_data_kwargs_for() -> None:
    assert data_kwargs_for("simpleconv", AVAILABLE) == {"out_channels": OUT, "n_subjects": SUBJECTS}
    for name in ZOO:
        assert data_kwargs_for(name, AVAILABLE) == {"out_channels": OUT, "n_subjects": SUBJECTS, "n_channels": C,
                                                    "n_times": T, "sample_rate": SFREQ}
    with pytest.raises(ValueError, match="'eegnet' needs 'sample_rate'"):
        data_kwargs_for("eegnet", {**AVAILABLE, "sample_rate": None})
    with pytest.raises(ValueError, match="'simpleconv' needs 'n_subjects'"):
        data_kwargs_for("simpleconv", {"out_channels": 2})
    with pytest.raises(KeyError, match="valid names"):
        data_kwargs_for("nope", AVAILABLE)


def test_declared_inputs() -> None:
    assert model_inputs(MODELS["simpleconv"](out_channels=2, n_subjects=1, **TINY["simpleconv"])) == DEFAULT_INPUTS
    for cls in ZOO.values():
        assert cls.inputs == ("brain", "mask")


def test_importing_bm2_models_does_not_import_braindecode() -> None:
    code = "import sys, bm2.models; assert 'braindecode' not in sys.modules, 'braindecode imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_braindecode_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "braindecode", None)
    monkeypatch.setitem(sys.modules, "braindecode.models", None)
    with pytest.raises(ImportError, match=r"pip install bm2\[zoo\]"):
        import_braindecode_models()
    with pytest.raises(ImportError, match=r"pip install bm2\[zoo\]"):
        build_model("eegnet", **data_kwargs_for("eegnet", AVAILABLE))


@NEEDS_BRAINDECODE
def test_adapter_maps_kwargs_and_masks_sensors() -> None:
    torch.manual_seed(0)
    model = build_model("shallowfbcspnet", **data_kwargs_for("shallowfbcspnet", AVAILABLE), drop_prob=0.1).eval()
    inner = model.model
    assert (inner.n_outputs, inner.n_chans, inner.n_times, inner.sfreq) == (OUT, C, T, SFREQ)
    assert model.bm2_spec["kwargs"]["drop_prob"] == 0.1 and inner.drop.p == 0.1
    batch = _batch()
    # A masked sensor is zeroed: its values (even NaN) do not matter.
    noisy = batch["brain"].clone()
    noisy[0, -2:] = float("nan")
    with torch.no_grad():
        torch.testing.assert_close(model(noisy, batch["mask"]), model(batch["brain"], batch["mask"]))
        zeroed = batch["brain"].clone()
        zeroed[0, -2:] = 0
        torch.testing.assert_close(model(batch["brain"], batch["mask"]), model(zeroed))
        # Raw logits, not log-probabilities (braindecode 0.8 ends with a log-softmax unless told not to).
        assert not torch.allclose(model(zeroed).logsumexp(-1), torch.zeros(B), atol=1e-3)


@NEEDS_BRAINDECODE
def test_adapter_pads_a_batch_with_fewer_sensors() -> None:
    """A batch of subjects with fewer sensors than the data's largest montage (collate pads to the batch's largest)
    gives the logits of the same windows zero-padded to ``n_channels`` (as in a mixed batch, masked)."""
    torch.manual_seed(0)
    model = build_model("eegconformer", **data_kwargs_for("eegconformer", AVAILABLE), n_filters_time=8,
                        att_heads=2, att_depth=1).eval()
    few = torch.randn(2, C - 3, T)
    padded = torch.cat([few, torch.zeros(2, 3, T)], dim=1)
    mask = torch.ones(2, C, dtype=torch.bool)
    mask[:, -3:] = False
    with torch.no_grad():
        torch.testing.assert_close(model(few, torch.ones(2, C - 3, dtype=torch.bool)), model(padded, mask))
        torch.testing.assert_close(model(few), model(padded))
    with pytest.raises(ValueError, match=r"brain \[B, 8, 200\]"):
        model(torch.randn(2, C + 1, T))


@NEEDS_BRAINDECODE
def test_adapter_errors() -> None:
    model = build_model("eegnet", **data_kwargs_for("eegnet", AVAILABLE))
    with pytest.raises(ValueError, match=r"brain \[B, 8, 200\]"):
        model(torch.randn(2, 8, 150))
    with pytest.raises(ValueError, match=r"brain \[B, 8, 200\]"):
        model(torch.randn(2, 8, 3, 200))
    with pytest.raises(ValueError, match="n_chans"):
        build_model("eegnet", **data_kwargs_for("eegnet", AVAILABLE), n_chans=3)
    with pytest.raises(ValueError, match="ShallowFBCSPNet could not be built for n_chans=8, n_times=50 samples"):
        build_model("shallowfbcspnet", **{**data_kwargs_for("eegnet", AVAILABLE), "n_times": 50})
    with pytest.raises(ValueError, match="n_times must be > 0"):
        build_model("eegnet", **{**data_kwargs_for("eegnet", AVAILABLE), "n_times": 0})


@NEEDS_BRAINDECODE
def test_adapter_names_missing_braindecode_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ZOO["eegnet"], "braindecode_names", ("NoSuchNet",))
    with pytest.raises(RuntimeError, match="NoSuchNet"):
        build_model("eegnet", **data_kwargs_for("eegnet", AVAILABLE))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_has_a_config(name: str) -> None:
    from omegaconf import OmegaConf

    path = Path(__file__).resolve().parents[2] / "conf" / "model" / f"{name}.yaml"
    assert path.exists(), f"add conf/model/{name}.yaml (`model={name}`)"
    assert path.read_text().startswith("# @package model\n")
    cfg = OmegaConf.load(path)
    assert cfg.name == name
    kwargs = OmegaConf.to_container(cfg[name])
    assert isinstance(kwargs, dict) and not set(kwargs) & {"out_channels", "n_subjects", *DATA_KWARGS}
    if name in OWN_TESTS:
        pytest.skip(f"built from its config in {OWN_TESTS[name]}")
    if issubclass(MODELS[name], BraindecodeModel) and not HAS_BRAINDECODE:
        pytest.skip(NO_BRAINDECODE)
    tiny = TINY.get(name, {})
    model = build_model(name, **data_kwargs_for(name, _available(name)), **{**kwargs, **tiny})
    _as_loaded(name, model)
    with torch.no_grad():
        out = run_model(model.eval(), _batch(F_SPECTRA if _spectral(name) else None))["output"]
    expected = (B,) if getattr(MODELS[name], "pretraining", False) else (B, OUT)
    assert out.shape[:len(expected)] == expected


@NEEDS_BRAINDECODE
def test_adapter_learns_a_separable_toy_problem() -> None:
    """A few Adam steps through the adapter fit two classes told apart by one sensor's power."""
    torch.manual_seed(0)
    model = build_model("shallowfbcspnet", **{**data_kwargs_for("shallowfbcspnet", AVAILABLE), "out_channels": 2},
                        drop_prob=0.0)
    label = torch.arange(16) % 2
    brain = torch.randn(16, C, T)
    brain[:, 3] *= 1 + 2 * label[:, None]
    batch = {"brain": brain, "mask": torch.ones(16, C, dtype=torch.bool)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(run_model(model, batch)["output"], label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    with torch.no_grad():
        assert (run_model(model.eval(), batch)["output"].argmax(1) == label).float().mean() >= 0.9
