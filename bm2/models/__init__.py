"""Brain encoders, a name -> class registry, and self-describing builds (``bm2_spec``) for checkpoints."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .common import ChannelDropout, ChannelMerger, FourierEmb, SubjectLayers
from .simpleconv import SimpleConv

MODELS: dict[str, type[nn.Module]] = {"simpleconv": SimpleConv}

__all__ = [
    "MODELS",
    "ChannelDropout",
    "ChannelMerger",
    "FourierEmb",
    "SimpleConv",
    "SubjectLayers",
    "build_model",
    "count_parameters",
    "model_from_spec",
]


def _plain(value: Any) -> Any:
    """Turn OmegaConf containers / tuples into plain Python objects so specs pickle and compare cleanly."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # omegaconf is optional for rebuilding a model
        pass
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate registered model ``name`` with ``kwargs`` and record ``model.bm2_spec`` for rebuilding."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    kwargs = {k: _plain(v) for k, v in kwargs.items()}
    model = MODELS[name](**kwargs)
    # Stored on the instance so a checkpoint can hold (spec, state_dict) and be reloaded without Hydra.
    model.bm2_spec = {"name": name, "kwargs": copy.deepcopy(kwargs)}  # type: ignore[assignment]
    return model


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model from a ``{"name": ..., "kwargs": {...}}`` spec (as saved in ``model.bm2_spec``)."""
    if "name" not in spec:
        raise KeyError(f"model spec needs a 'name' key, got keys {sorted(spec)}")
    return build_model(spec["name"], **dict(spec.get("kwargs") or {}))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
