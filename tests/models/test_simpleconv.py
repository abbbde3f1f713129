"""SimpleConv: shapes, architecture rules, the merger=False path, and rebuilding from a spec."""

import pytest
import torch
from torch import nn

from bm2.models import MODELS, build_model, count_parameters, model_from_spec
from bm2.models.simpleconv import ConvBlock, GLUBlock, SimpleConv

TINY = {"merger_channels": 8, "merger_pos_dim": 32, "hidden": 12, "depth": 4, "head_hidden": 16}


def _inputs(B: int = 2, C: int = 9, T: int = 25) -> tuple[torch.Tensor, ...]:
    mask = torch.ones(B, C, dtype=torch.bool)
    mask[0, -2:] = False
    return torch.randn(B, C, T), torch.tensor([0, 1][:B]), torch.rand(B, C, 2), mask


def test_shapes_tiny() -> None:
    torch.manual_seed(0)
    model = SimpleConv(out_channels=5, n_subjects=2, **TINY)
    out = model(*_inputs())
    assert out.shape == (2, 5, 25)
    out.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_paper_size_builds_and_runs() -> None:
    torch.manual_seed(0)
    model = SimpleConv(out_channels=1024, n_subjects=2).eval()
    assert model.merger is not None and model.merger.heads.shape == (1, 270, 2048)
    with torch.no_grad():
        out = model(torch.randn(1, 30, 20), torch.tensor([1]), torch.rand(1, 30, 2))
    assert out.shape == (1, 1024, 20)


def test_dilations_residuals_glu() -> None:
    model = SimpleConv(out_channels=4, n_subjects=1, merger_channels=8, merger_pos_dim=32, hidden=6, depth=10,
                       head_hidden=10)
    convs = [m for m in model.encoder if isinstance(m, ConvBlock)]
    assert [b.conv.dilation[0] for b in convs] == [1, 2, 4, 8, 16] * 2
    assert [b.conv.padding[0] for b in convs] == [1, 2, 4, 8, 16] * 2
    assert [b.residual for b in convs] == [False] + [True] * 9  # 8 -> 6 first, then shapes match
    kinds = ["glu" if isinstance(m, GLUBlock) else "conv" for m in model.encoder]
    assert kinds == ["conv", "conv", "glu"] * 5  # GLU after blocks 1, 3, 5, 7, 9
    assert all(m.conv.out_channels == 12 for m in model.encoder if isinstance(m, GLUBlock))
    assert isinstance(model.head[-1], nn.ConvTranspose1d) and model.head[0].out_channels == 10
    # Residual blocks really add their input back.
    block = convs[1].eval()
    x = torch.randn(1, 6, 40)
    y = block.activation(block.norm(block.conv(x)))
    torch.testing.assert_close(block(x), x + y)
    # Large dilations still preserve the length.
    assert model.eval()(torch.randn(1, 3, 7), torch.tensor([0]), torch.rand(1, 3, 2)).shape == (1, 4, 7)


def test_no_merger_path() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="in_channels"):
        SimpleConv(out_channels=3, n_subjects=1, merger=False, **TINY)
    model = SimpleConv(out_channels=3, n_subjects=2, merger=False, in_channels=9, **TINY)
    assert model.merger is None
    brain, subjects, _, _ = _inputs()
    assert model(brain, subjects).shape == (2, 3, 25)
    with pytest.raises(ValueError, match="in_channels=9"):
        model(torch.randn(2, 10, 25), subjects)


def test_merger_needs_positions() -> None:
    model = SimpleConv(out_channels=3, n_subjects=2, **TINY)
    with pytest.raises(ValueError, match="positions"):
        model(torch.randn(2, 9, 25), torch.tensor([0, 1]))


def test_eval_determinism_and_train_randomness() -> None:
    torch.manual_seed(0)
    model = SimpleConv(out_channels=5, n_subjects=2, channel_dropout=0.3, conv_dropout=0.1, **TINY)
    inputs = _inputs()
    model.eval()
    torch.testing.assert_close(model(*inputs), model(*inputs))
    model.train()
    assert not torch.allclose(model(*inputs), model(*inputs))


def test_registry_and_spec_roundtrip() -> None:
    assert MODELS["simpleconv"] is SimpleConv
    with pytest.raises(KeyError, match="simpleconv"):
        build_model("nope")
    torch.manual_seed(0)
    model = build_model("simpleconv", out_channels=5, n_subjects=2, merger_per_subject=True, **TINY)
    assert model.bm2_spec == {"name": "simpleconv",
                              "kwargs": {"out_channels": 5, "n_subjects": 2, "merger_per_subject": True, **TINY}}
    torch.manual_seed(1)  # different init: outputs only match after loading the weights
    rebuilt = model_from_spec(model.bm2_spec)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert count_parameters(rebuilt) == count_parameters(model) > 0
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    inputs = _inputs()
    torch.testing.assert_close(rebuilt(*inputs), model(*inputs))


def test_yaml_configs_build() -> None:
    from pathlib import Path

    from omegaconf import OmegaConf

    conf_dir = Path(__file__).resolve().parents[2] / "conf" / "model"
    for name in ("simpleconv.yaml", "simpleconv_paper.yaml"):
        cfg = OmegaConf.load(conf_dir / name)
        kwargs = cfg[cfg.name]
        assert "out_channels" not in kwargs and "n_subjects" not in kwargs
        # Every SimpleConv keyword except the data-given ones is spelled out.
        import inspect
        params = set(inspect.signature(SimpleConv).parameters) - {"out_channels", "n_subjects"}
        assert set(kwargs) == params, name
        if name == "simpleconv.yaml":
            model = build_model(cfg.name, out_channels=4, n_subjects=2, **kwargs)
            assert model(*_inputs()).shape == (2, 4, 25)


def test_original_code_options_reach_the_merger_and_subject_layers() -> None:
    model = SimpleConv(out_channels=3, n_subjects=2, merger_margin=0.1, merger_dropout_per_item=True, **TINY)
    assert model.merger is not None
    assert model.merger.embedding.margin == 0.1 and model.merger.dropout_per_item
    default = SimpleConv(out_channels=3, n_subjects=2, **TINY)
    assert default.merger is not None
    assert default.merger.embedding.margin == 0.2 and not default.merger.dropout_per_item
    # Subject layers start random by default (original code), at the identity on request.
    assert default.subject_layers is not None
    assert not torch.allclose(default.subject_layers.weights[0], torch.eye(8))
    identity = SimpleConv(out_channels=3, n_subjects=2, subject_layers_id=True, **TINY)
    assert identity.subject_layers is not None
    torch.testing.assert_close(identity.subject_layers.weights, torch.eye(8).repeat(2, 1, 1))


def _yaml_kwargs(name: str) -> dict:
    from pathlib import Path

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "model" / name)
    return dict(OmegaConf.to_container(cfg[cfg.name]))  # type: ignore[arg-type]


def test_paper_config_follows_the_original_code_and_keeps_its_size() -> None:
    kwargs = _yaml_kwargs("simpleconv_paper.yaml")
    assert kwargs["merger_margin"] == 0.2 and kwargs["merger_dropout_per_item"] is False
    assert kwargs["subject_layers_id"] is False
    # Parameter counts of the original model (output 1024; the merger makes them independent of the sensors).
    for n_subjects, expected in ((27, 9_565_054), (96, 14_595_154), (19, 8_981_854), (33, 10_002_454)):
        model = build_model("simpleconv", out_channels=1024, n_subjects=n_subjects, **kwargs)
        assert count_parameters(model) == expected, n_subjects
    # The small default config keeps its identity-initialised subject layers.
    assert _yaml_kwargs("simpleconv.yaml")["subject_layers_id"] is True
