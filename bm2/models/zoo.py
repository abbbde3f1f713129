"""braindecode's EEG classifiers (EEGConformer, EEGNet, ShallowFBCSPNet) as bm2 models, through one thin adapter.

Source: the architectures and their weights' layout are braindecode's (https://braindecode.org,
BSD-3-Clause); this module only builds a braindecode model from bm2's plain keyword arguments and adapts the
call to bm2's batch. braindecode is an optional extra (``pip install bm2[zoo]``): it is imported when a
model is built, never when :mod:`bm2.models` is imported.

Keyword mapping (bm2 -> braindecode): ``out_channels -> n_outputs``, ``n_channels -> n_chans``,
``n_times -> n_times``, ``sample_rate -> sfreq``; any other keyword argument goes to the braindecode class
unchanged (e.g. ``drop_prob``, ``att_depth``, ``F1``). Defaults bm2 sets where braindecode's own would not fit
every study: the size of the last layer is inferred from ``n_times`` (``final_fc_length`` /
``final_conv_length = "auto"``) and the output is raw logits (``add_log_softmax=False`` where the installed
braindecode still has that option), to be used with a cross-entropy loss.

These models take one fixed montage: sensor ``c`` of every batch must be the same physical sensor (unlike
SimpleConv's spatial attention, which reads sensor positions). Sensors masked out in the batch are zeroed, and
a batch with fewer sensors than ``n_channels`` (subjects with fewer sensors, padded by the data to the largest
montage) is zero-padded at the end.
"""

from __future__ import annotations

import importlib
import inspect
import typing as tp

import torch
from torch import nn

INSTALL_HINT = "pip install bm2[zoo]"


def import_braindecode_models() -> tp.Any:
    """Import and return ``braindecode.models``.

    Raises ``ImportError`` naming ``pip install bm2[zoo]`` when braindecode is not installed, and an
    ``ImportError`` with the underlying error when it is installed but cannot be imported (e.g. braindecode
    >= 1.0 needs a torchaudio built for the installed torch).
    """
    try:
        return importlib.import_module("braindecode.models")
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != "braindecode":
            raise ImportError(f"braindecode is installed but one of its dependencies is missing: {error}; "
                              f"reinstall it with `{INSTALL_HINT}`") from error
        raise ImportError(f"the braindecode models (EEGConformer, EEGNet, ShallowFBCSPNet) need braindecode: "
                          f"`{INSTALL_HINT}`") from error
    except (ImportError, OSError) as error:
        raise ImportError(f"braindecode is installed but failed to import ({type(error).__name__}: {error}); "
                          f"install the version bm2 pins with `{INSTALL_HINT}`") from error


class BraindecodeModel(nn.Module):
    """A braindecode model on a bm2 batch: ``brain[B, C, T]`` (+ ``mask[B, C]``) -> logits ``[B, out_channels]``.

    Subclasses set :attr:`braindecode_names`, the braindecode class names to try in order (braindecode
    renames models between versions, e.g. ``EEGNetv4`` -> ``EEGNet``).

    Args:
        out_channels: number of outputs (classes), braindecode's ``n_outputs``.
        n_subjects: accepted for a uniform builder call and ignored (braindecode models are not per subject).
        n_channels: number of sensors, braindecode's ``n_chans``; a batch with fewer is zero-padded.
        n_times: window length T in samples; every batch must have exactly this length.
        sample_rate: sampling rate of ``brain`` in Hz, braindecode's ``sfreq``.
        **kwargs: passed to the braindecode class unchanged (plain values: they are saved in ``bm2_spec``).

    Raises:
        ImportError: braindecode is missing (the message names ``pip install bm2[zoo]``) or broken.
        ValueError: a size is not positive, a keyword argument is one bm2 fills in itself, or braindecode
            cannot build the model for these sizes (e.g. a window shorter than its kernels and pooling).
        RuntimeError: no braindecode class of :attr:`braindecode_names` exists in the installed braindecode.
    """

    braindecode_names: tp.ClassVar[tuple[str, ...]] = ()
    # Batch keys forward takes (bm2.tasks.base.run_model) and sizes the builder fills in from the data.
    inputs: tuple[str, ...] = ("brain", "mask")
    data_kwargs: tuple[str, ...] = ("n_channels", "n_times", "sample_rate")
    per_sample = False  # one vector per window [B, K]: classification only
    # bm2 name -> braindecode name, filled in by the adapter; passing the braindecode name too is an error.
    _RENAMED: tp.ClassVar[dict[str, str]] = {"out_channels": "n_outputs", "n_channels": "n_chans",
                                             "n_times": "n_times", "sample_rate": "sfreq"}

    def __init__(self, out_channels: int, n_subjects: int, n_channels: int, n_times: int, sample_rate: float,
                 **kwargs: tp.Any) -> None:
        super().__init__()
        for key, value in {"out_channels": out_channels, "n_channels": n_channels, "n_times": n_times,
                           "sample_rate": sample_rate}.items():
            if not value or value <= 0:
                raise ValueError(f"{type(self).__name__}: {key} must be > 0, got {value!r}")
        clash = sorted(set(kwargs) & {"n_outputs", "n_chans", "sfreq", "n_classes", "in_chans",
                                      "input_window_samples", "chs_info", "input_window_seconds"})
        if clash:
            raise ValueError(f"{type(self).__name__}: {clash} are set from out_channels / n_channels / n_times / "
                             f"sample_rate; do not pass them")
        models = import_braindecode_models()
        found = [name for name in self.braindecode_names if hasattr(models, name)]
        if not found:
            raise RuntimeError(f"{type(self).__name__}: none of {list(self.braindecode_names)} exists in the "
                               f"installed braindecode; install the version bm2 pins with `{INSTALL_HINT}`")
        cls = getattr(models, found[0])
        parameters = inspect.signature(cls).parameters
        defaults: dict[str, tp.Any] = {}
        for key in ("final_fc_length", "final_conv_length"):  # last layer sized from n_times
            if key in parameters:
                defaults[key] = "auto"
        if "add_log_softmax" in parameters:  # braindecode < 0.9 ends with a log-softmax by default
            defaults["add_log_softmax"] = False
        self.out_channels = int(out_channels)
        self.n_channels = int(n_channels)
        self.n_times = int(n_times)
        self.sample_rate = float(sample_rate)
        self.braindecode_class = f"{cls.__module__}.{cls.__qualname__}"
        try:
            self.model = cls(n_outputs=self.out_channels, n_chans=self.n_channels, n_times=self.n_times,
                             sfreq=self.sample_rate, **{**defaults, **kwargs})
        except (RuntimeError, ValueError) as error:  # braindecode sizes its last layer with a dry run
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"braindecode {found[0]} could not be built for n_chans={self.n_channels}, n_times={self.n_times} "
                f"samples at {self.sample_rate:g} Hz: {first_line}. A window shorter than the model's temporal "
                f"kernels and pooling needs smaller ones (e.g. filter_time_length, pool_time_length, "
                f"kernel_length) or a longer window") from error

    def forward(self, brain: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, out_channels]`` for ``brain[B, C, T]`` (T = n_times), masked sensors zeroed.

        ``C`` may be below ``n_channels``: the batch's montages are padded to the largest of the batch
        (:func:`bm2.data.dataset.collate`), the model's to the largest of the data, so a batch of the subjects with
        fewer sensors (e.g. one subject's windows, ``dset.subjects``) is zero-padded at the end, like the padded
        sensors of a mixed batch.

        Raises ``ValueError`` for another shape (more than ``n_channels`` sensors, another length: braindecode
        models have a fixed input size).
        """
        if brain.dim() != 3 or brain.shape[1] > self.n_channels or brain.shape[2] != self.n_times:
            raise ValueError(f"{type(self).__name__} was built for brain [B, {self.n_channels}, {self.n_times}] "
                             f"(n_channels, n_times), got shape {tuple(brain.shape)}")
        if mask is not None:
            # where() rather than a product: a missing sensor may hold NaN.
            brain = torch.where(mask.bool()[..., None], brain, torch.zeros_like(brain))
        if brain.shape[1] < self.n_channels:
            brain = nn.functional.pad(brain, (0, 0, 0, self.n_channels - brain.shape[1]))
        out = self.model(brain)
        if out.dim() > 2:  # some braindecode versions keep singleton time / space axes
            out = out.flatten(1)
        if out.shape != (brain.shape[0], self.out_channels):
            raise RuntimeError(f"{self.braindecode_class} returned shape {tuple(out.shape)}, expected "
                               f"{(brain.shape[0], self.out_channels)}")
        return out

    def extra_repr(self) -> str:
        """Show the braindecode class and sizes in ``print(model)``."""
        return (f"{self.braindecode_class}, out_channels={self.out_channels}, n_channels={self.n_channels}, "
                f"n_times={self.n_times}, sample_rate={self.sample_rate}")


class EEGConformer(BraindecodeModel):
    """braindecode's EEGConformer (Song et al. 2023: conv patch embedding + transformer); see BraindecodeModel."""

    braindecode_names = ("EEGConformer",)


class EEGNet(BraindecodeModel):
    """braindecode's EEGNet v4 (Lawhern et al. 2018; ``EEGNetv4``, renamed ``EEGNet`` in braindecode 1.x)."""

    braindecode_names = ("EEGNet", "EEGNetv4")


class ShallowFBCSPNet(BraindecodeModel):
    """braindecode's ShallowFBCSPNet (Schirrmeister et al. 2017, shallow ConvNet); see BraindecodeModel."""

    braindecode_names = ("ShallowFBCSPNet",)


ZOO: dict[str, type[BraindecodeModel]] = {
    "eegconformer": EEGConformer,
    "eegnet": EEGNet,
    "shallowfbcspnet": ShallowFBCSPNet,
}
