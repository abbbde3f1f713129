"""Brain encoders, a name -> class registry, and self-describing builds (``bm2_spec``) for checkpoints.

Every registered model class declares
- ``inputs``: the batch keys its ``forward`` takes (see :func:`bm2.tasks.base.run_model`);
- ``data_kwargs``: the data-dependent sizes its constructor needs among :data:`DATA_KWARGS`, beside
  ``out_channels`` and ``n_subjects`` that every constructor takes; :func:`data_kwargs_for` picks them.
The braindecode models of :mod:`bm2.models.zoo` are registered here too, but braindecode itself is only
imported when one of them is built (optional extra ``pip install bm2[zoo]``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from torch import nn

from .demega import DeMEGa
from .common import ChannelDropout, ChannelMerger, FourierEmb, SubjectLayers
from .duin import DuinClassifier
from .duin_vq import DuinMAE, DuinVQVAE
from .inr import INRDecoder
from .nsd import NSDModel
from .simpleconv import SimpleConv
from .zoo import ZOO, BraindecodeModel

MODELS: dict[str, type[nn.Module]] = {"simpleconv": SimpleConv, "duin": DuinClassifier, **ZOO}
MODELS["demega"] = DeMEGa
MODELS.update(duin_vqvae=DuinVQVAE, duin_mae=DuinMAE)  # Du-IN pre-training stages 1 and 2
MODELS["inr"] = INRDecoder  # Lee et al. 2024's class-codebook decoder of superlet spectra
MODELS["nsd"] = NSDModel  # Neural Speech Decoding: speech encoder / ECoG decoder -> formant synthesizer

# Always passed to a model constructor, and the data-dependent sizes a model may declare in ``data_kwargs``:
# number of sensors, window length in samples, sampling rate in Hz, number of frequencies of [B, C, F, T] inputs.
ALWAYS_KWARGS = ("out_channels", "n_subjects")
DATA_KWARGS = ("n_channels", "n_times", "sample_rate", "n_freqs")

__all__ = [
    "ALWAYS_KWARGS",
    "BraindecodeModel",
    "DATA_KWARGS",
    "MODELS",
    "ChannelDropout",
    "ChannelMerger",
    "DuinClassifier",
    "FourierEmb",
    "INRDecoder",
    "NSDModel",
    "SimpleConv",
    "SubjectLayers",
    "build_model",
    "count_parameters",
    "data_kwargs_for",
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


def data_kwargs_for(name: str, available: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keyword arguments model ``name`` takes from the data, picked from ``available``.

    Returns ``out_channels``, ``n_subjects`` and the sizes the class declares in ``data_kwargs`` (a subset of
    :data:`DATA_KWARGS`: ``n_channels``, ``n_times`` in samples, ``sample_rate`` in Hz, ``n_freqs``), in that
    order; other keys of ``available`` are ignored. Raises ``KeyError`` for an unknown model name, and
    ``ValueError`` naming the model and the size when one it needs is missing from ``available`` (or None),
    or when the class declares a size outside :data:`DATA_KWARGS`.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    declared = tuple(getattr(MODELS[name], "data_kwargs", ()))
    unknown = [key for key in declared if key not in DATA_KWARGS]
    if unknown:
        raise ValueError(f"model {name!r} declares data_kwargs {unknown} outside the known sizes {DATA_KWARGS}")
    picked = {}
    for key in ALWAYS_KWARGS + declared:
        if available.get(key) is None:
            raise ValueError(f"model {name!r} needs {key!r} from the data, but it is not available (got "
                             f"{sorted(k for k, v in available.items() if v is not None)})")
        picked[key] = available[key]
    return picked


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
