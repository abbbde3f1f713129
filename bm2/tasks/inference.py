"""Inference add-ons of the classification evaluation: db4 wavelet denoising and test-time augmentation (TTA).

Both change only how a trained model is *evaluated* (``test.denoise.*``, ``test.tta.*``); training is untouched.
The evaluation reports every metric with and without them side by side (suffixes ``_denoise``, ``_tta``,
``_denoise_tta``; :mod:`bm2.tasks.classification`).

Source: DeMEGa (September-Labs/pnpl-2025-experiments, LibriBrain 2025; rebuilt from the description in bm2's
notes, none of its CC BY-NC code). The original **configured** TTA (time shifts of 2 / 4 / 6 samples, 5 % channel
dropout, small noise, original view weighted x2) but never implemented it: its submission script calls a
``predict_with_tta`` that exists nowhere, and its paper says TTA did not help. What it did use is wavelet
denoising of the holdout inputs (db4, level 3, universal threshold scaled by 0.6, soft, rescaled to the channel's
mean and standard deviation). bm2 implements both for real; where the original is silent the choices below are
the standard ones and are flags.

Denoising (:func:`wavelet_denoise`), per window and channel, on the model's input (after standardisation and,
with ``dset.grouping``, after averaging, as the 2025 holdout items were pre-averaged and pre-standardised):

1. ``pywt.wavedec`` to ``level`` (db4, level 3, PyWavelets' default ``symmetric`` extension: not stated);
2. noise level sigma = median(|finest detail coefficients|) / 0.6745 (Donoho & Johnstone 1994, the MAD rule);
3. threshold lambda = sigma * sqrt(2 ln n) * ``strength`` (VisuShrink's universal threshold; n = samples of the
   window; strength 0.6 as the original), applied (soft by default) to every detail level, not the approximation;
4. ``pywt.waverec``, cropped to the window, then rescaled to the input channel's mean and standard deviation
   (the original's last step; ``rescale=False`` keeps the plain VisuShrink estimate).

TTA (:func:`tta_views`, :func:`combine_views`): the views of a batch are stacked and run in one forward pass:
the original (weight ``original_weight``), one view per shift in ``shifts`` (sample k of the shifted view is
sample k - s of the original, ``fill`` at the uncovered edge: zeros by default, i.e. the training mean of
standardised data), one channel-dropout view (``round(channel_dropout * present channels)`` channels, at least
one, set to 0) and one noise view (``x + noise * std_t(x) * N(0, 1)`` per channel: noise relative to each
channel's standard deviation over the window), each of weight 1. Views are combined by the weighted mean of
their softmax probabilities (``combine=probs``; the combined score is the log of that mean, so the saved
``probs.npy`` is the mean itself) or of their logits (``combine=logits``). The random draws depend only on
``seed``, the item's ``index`` in its split, the view and the channel / sample (a counter-based hash), so a
result does not depend on the batch size or the device.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import torch

from .base import OUTPUT, model_inputs, run_model

FILLS = ("zero", "edge", "wrap")
COMBINES = ("probs", "logits")
THRESHOLDS = ("soft", "hard")
MAD_TO_SIGMA = 0.6745  # median |N(0, 1)|: the MAD of Gaussian noise in units of its standard deviation


@dataclasses.dataclass(frozen=True)
class DenoiseParams:
    """Wavelet denoising of each window's channels (``test.denoise.*``; module docstring for the steps).

    ``wavelet``: a discrete PyWavelets wavelet (db4); ``level``: decomposition levels (3); ``strength``: factor of
    the universal threshold (0.6, the original's ``denoise_strength``); ``threshold``: soft | hard; ``mode``: the
    signal extension of PyWavelets (symmetric); ``rescale``: back to each channel's mean and standard deviation.
    Raises ``ValueError`` naming the ``test.denoise`` key of a bad value.
    """

    enabled: bool = False
    wavelet: str = "db4"
    level: int = 3
    strength: float = 0.6
    threshold: str = "soft"
    mode: str = "symmetric"
    rescale: bool = True

    def __post_init__(self) -> None:
        import pywt

        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"test.denoise.wavelet={self.wavelet!r} is not a discrete PyWavelets wavelet "
                             "(e.g. db4, sym8; pywt.wavelist(kind='discrete') lists them)")
        if int(self.level) < 1:
            raise ValueError(f"test.denoise.level={self.level}: set at least 1 decomposition level")
        if self.strength < 0:
            raise ValueError(f"test.denoise.strength={self.strength}: set a factor >= 0 (0.6 in DeMEGa)")
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"test.denoise.threshold={self.threshold!r}: choose one of {THRESHOLDS}")
        if self.mode not in pywt.Modes.modes:
            raise ValueError(f"test.denoise.mode={self.mode!r}: choose a PyWavelets mode, one of {pywt.Modes.modes}")


@dataclasses.dataclass(frozen=True)
class TTAParams:
    """Test-time augmentation of classification windows (``test.tta.*``; module docstring for the views).

    ``shifts``: samples (positive: the content moves later; 2 / 4 / 6 as DeMEGa's configuration);
    ``channel_dropout``: fraction of the present channels zeroed in the dropout view (0.05; 0: no view);
    ``noise``: Gaussian noise in units of each channel's standard deviation over the window (0.01; 0: no view);
    ``original_weight``: weight of the unaugmented view (2; the others weigh 1); ``combine``: probs | logits;
    ``fill``: zero | edge | wrap, what enters at the edge a shift uncovers; ``seed``: of the random views.
    The views of a batch go through the model together: memory grows with :attr:`n_views` (lower
    ``test.batch_size`` if needed). Raises ``ValueError`` naming the ``test.tta`` key of a bad value.
    """

    enabled: bool = False
    shifts: tuple[int, ...] = (2, 4, 6)
    channel_dropout: float = 0.05
    noise: float = 0.01
    original_weight: float = 2.0
    combine: str = "probs"
    fill: str = "zero"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shifts", tuple(int(s) for s in self.shifts))
        if not 0.0 <= self.channel_dropout < 1.0:
            raise ValueError(f"test.tta.channel_dropout={self.channel_dropout}: set a fraction in [0, 1)")
        if self.noise < 0:
            raise ValueError(f"test.tta.noise={self.noise}: set a standard deviation >= 0")
        if self.original_weight <= 0:
            raise ValueError(f"test.tta.original_weight={self.original_weight}: set a weight > 0")
        if self.combine not in COMBINES:
            raise ValueError(f"test.tta.combine={self.combine!r}: choose one of {COMBINES}")
        if self.fill not in FILLS:
            raise ValueError(f"test.tta.fill={self.fill!r}: choose one of {FILLS}")

    @property
    def n_views(self) -> int:
        """Views per item, the original included."""
        return 1 + len(self.shifts) + int(self.channel_dropout > 0) + int(self.noise > 0)

    def weights(self) -> torch.Tensor:
        """``[V]`` weights of the views in :func:`tta_views` order (original first)."""
        weights = torch.ones(self.n_views, dtype=torch.float64)
        weights[0] = self.original_weight
        return weights


def wavelet_denoise(x: torch.Tensor | np.ndarray, params: DenoiseParams = DenoiseParams()) -> tp.Any:
    """Wavelet-denoise every channel of ``x`` along its last (time) axis (module docstring for the steps).

    ``x``: ``[..., T]`` (e.g. ``[B, C, T]`` windows), a tensor or an array; returns the same type, shape and
    dtype. Computed in float64 with PyWavelets, all channels at once. A channel whose finest details are all 0
    (e.g. a constant or padded channel) gets threshold 0 and is returned unchanged. Raises ``ValueError`` when ``T``
    is too short for ``params.level`` levels of ``params.wavelet``, naming what to set.
    """
    import pywt

    data = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    n = data.shape[-1]
    wavelet = pywt.Wavelet(params.wavelet)
    max_level = pywt.dwt_max_level(n, wavelet.dec_len)
    if params.level > max_level:
        raise ValueError(f"windows of {n} samples allow at most {max_level} levels of {params.wavelet}, not "
                         f"test.denoise.level={params.level}: lower the level or lengthen dset.window")
    coeffs = pywt.wavedec(data, wavelet, mode=params.mode, level=params.level, axis=-1)
    sigma = np.median(np.abs(coeffs[-1]), axis=-1, keepdims=True) / MAD_TO_SIGMA
    lam = sigma * math.sqrt(2.0 * math.log(n)) * params.strength
    with np.errstate(invalid="ignore"):  # pywt's soft rule divides by |d|: 0 / 0 for exact zeros, set back to 0
        details = [np.where(d == 0, 0.0, pywt.threshold(d, lam, mode=params.threshold)) for d in coeffs[1:]]
    coeffs = [coeffs[0], *details]
    out = pywt.waverec(coeffs, wavelet, mode=params.mode, axis=-1)[..., :n]
    if params.rescale:
        std_out = out.std(axis=-1, keepdims=True)
        gain = np.divide(data.std(axis=-1, keepdims=True), std_out, out=np.ones_like(std_out), where=std_out > 0)
        out = (out - out.mean(axis=-1, keepdims=True)) * gain + data.mean(axis=-1, keepdims=True)
    if isinstance(x, torch.Tensor):
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)
    return out.astype(np.asarray(x).dtype, copy=False)


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    # A 32-bit integer finaliser (multiplier 0x45d9f3b, good avalanche); every product stays below 2**59, so
    # int64 arithmetic never overflows and the result is the same on every device.
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _MASK32
    return (x >> 16) ^ x


def counter_uniform(seed: int, *keys: torch.Tensor) -> torch.Tensor:
    """Uniform numbers in (0, 1), float64, one per element of the broadcast ``keys`` (int64 tensors).

    A counter-based generator: the value depends only on ``seed`` and the keys (e.g. item index, view, channel,
    sample), not on how elements are batched. 32 bits of resolution.
    """
    h = _mix32(torch.tensor(int(seed) & _MASK32, dtype=torch.int64))
    for i, key in enumerate(keys):
        h = _mix32(h ^ _mix32((key.to(torch.int64) + 0x9E3779B9 * (i + 1)) & _MASK32))
    return (h.double() + 0.5) / 2.0**32


def _shift(x: torch.Tensor, s: int, fill: str) -> torch.Tensor:
    """``y[..., t] = x[..., t - s]`` with ``fill`` where ``t - s`` leaves the window."""
    n = x.shape[-1]
    if abs(s) >= n:
        raise ValueError(f"test.tta.shifts has {s} samples but the windows have {n}: choose |shift| < {n}")
    if s == 0:
        return x.clone()
    if fill == "wrap":
        return torch.roll(x, s, dims=-1)
    y = torch.roll(x, s, dims=-1)
    if s > 0:
        y[..., :s] = 0.0 if fill == "zero" else x[..., :1]
    else:
        y[..., s:] = 0.0 if fill == "zero" else x[..., -1:]
    return y


def tta_views(brain: torch.Tensor, index: torch.Tensor, params: TTAParams,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ``[V, B, C, ...T]`` views of a batch of windows ``brain`` ``[B, C, ...T]`` (time last), in the order of
    :meth:`TTAParams.weights`: original, shifts, channel dropout, noise.

    ``index``: ``[B]`` the items' indices in their split (they key the random draws); ``mask``: ``[B, C]``, True for
    present sensors (padded channels are never chosen for dropout). Raises ``ValueError`` for a shift as long as the
    window.
    """
    b, c = brain.shape[:2]
    views = [brain] + [_shift(brain, s, params.fill) for s in params.shifts]
    view = len(views)
    index = index.to(torch.int64).cpu()
    if params.channel_dropout > 0:
        present = torch.ones(b, c, dtype=torch.bool) if mask is None else mask.cpu().bool()
        u = counter_uniform(params.seed, index[:, None], torch.tensor(view), torch.arange(c)[None, :])
        u = u.masked_fill(~present, math.inf)  # absent channels rank last
        n_drop = (params.channel_dropout * present.sum(1)).round().clamp(min=1).long()
        rank = u.argsort(dim=1).argsort(dim=1)
        drop = (rank < n_drop[:, None]) & present
        keep = (~drop).to(brain.dtype).to(brain.device).reshape(b, c, *([1] * (brain.dim() - 2)))
        views.append(brain * keep)
        view += 1
    if params.noise > 0:
        per_item = torch.arange(int(np.prod(brain.shape[1:]))).reshape(brain.shape[1:])[None]
        u1 = counter_uniform(params.seed, index.reshape(-1, *([1] * (brain.dim() - 1))), torch.tensor(view),
                             2 * per_item)
        u2 = counter_uniform(params.seed, index.reshape(-1, *([1] * (brain.dim() - 1))), torch.tensor(view),
                             2 * per_item + 1)
        normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)  # Box-Muller
        std = brain.double().std(dim=-1, keepdim=True, unbiased=False)
        noisy = brain.double() + params.noise * std * normal.to(brain.device)
        views.append(noisy.to(brain.dtype))
    return torch.stack(views)


def combine_views(logits: torch.Tensor, weights: torch.Tensor, combine: str = "probs") -> torch.Tensor:
    """``[B, K]`` scores from the ``[V, B, K]`` logits of V views and their ``[V]`` weights (normalised to sum 1).

    ``probs``: log of the weighted mean of the softmax probabilities (its softmax is that mean); ``logits``: the
    weighted mean of the logits. Computed in float64.
    """
    w = (weights.double() / weights.double().sum()).to(logits.device)
    z = logits.double()
    if combine == "logits":
        return torch.einsum("v,vbk->bk", w, z)
    if combine != "probs":
        raise ValueError(f"test.tta.combine={combine!r}: choose one of {COMBINES}")
    return torch.logsumexp(torch.log_softmax(z, dim=-1) + torch.log(w)[:, None, None], dim=0)


@dataclasses.dataclass(frozen=True)
class InferenceAddOns:
    """One evaluation variant: denoising and / or TTA, applied around a model call (:meth:`__call__`).

    ``suffix`` names its metrics (``_denoise``, ``_tta``, ``_denoise_tta``) and ``name`` its output folder.
    """

    denoise: DenoiseParams | None = None
    tta: TTAParams | None = None

    @property
    def name(self) -> str:
        """``denoise``, ``tta`` or ``denoise_tta`` (``none`` when neither is set)."""
        parts = [p for p, on in (("denoise", self.denoise), ("tta", self.tta)) if on is not None]
        return "_".join(parts) or "none"

    @property
    def suffix(self) -> str:
        """``_`` + :attr:`name`: appended to the names of this variant's metrics."""
        return f"_{self.name}"

    def describe(self) -> str:
        """A short human description of the settings (logs, result tables)."""
        parts = []
        if self.denoise is not None:
            d = self.denoise
            parts.append(f"{d.wavelet} wavelet denoising (level {d.level}, {d.threshold} threshold x{d.strength:g}"
                         f"{', rescaled' if d.rescale else ''})")
        if self.tta is not None:
            t = self.tta
            parts.append(f"TTA ({t.n_views} views: shifts {list(t.shifts)} samples, channel dropout "
                         f"{100 * t.channel_dropout:g}%, noise {t.noise:g} std, original x{t.original_weight:g}, "
                         f"mean of {t.combine})")
        return " + ".join(parts) or "none"

    def settings(self) -> dict[str, tp.Any]:
        """The settings as plain JSON values (recorded next to the test metrics they produced)."""
        out: dict[str, tp.Any] = {}
        for key, params in (("denoise", self.denoise), ("tta", self.tta)):
            if params is not None:
                values = dataclasses.asdict(params)
                out[key] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k != "enabled"}
        return out

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """:func:`bm2.tasks.run_model` with the add-ons: ``output`` holds the combined ``[B, K]`` scores (the other
        outputs are the original view's)."""
        from .classification import pooled_logits

        if self.denoise is not None:
            batch = {**batch, "brain": wavelet_denoise(batch["brain"], self.denoise)}
        if self.tta is None:
            return run_model(model, batch, device)
        brain = batch["brain"]
        b = brain.shape[0]
        views = tta_views(brain, batch["index"], self.tta, batch.get("mask"))
        n_views = views.shape[0]
        stacked = {key: value.repeat(n_views, *([1] * (value.dim() - 1)))
                   for key, value in batch.items() if key in model_inputs(model) and isinstance(value, torch.Tensor)}
        stacked["brain"] = views.reshape(n_views * b, *brain.shape[1:])
        outputs = run_model(model, stacked, device)
        logits = pooled_logits(outputs[OUTPUT]).reshape(n_views, b, -1)
        combined = {key: value[:b] for key, value in outputs.items() if key != OUTPUT}
        combined[OUTPUT] = combine_views(logits, self.tta.weights(), self.tta.combine).float()
        return combined


def variants(denoise: DenoiseParams | None, tta: TTAParams | None) -> tuple[InferenceAddOns, ...]:
    """The evaluation variants reported next to the plain one: each enabled add-on alone, then both together."""
    out = []
    if denoise is not None and denoise.enabled:
        out.append(InferenceAddOns(denoise=denoise))
    if tta is not None and tta.enabled:
        out.append(InferenceAddOns(tta=tta))
    if len(out) == 2:
        out.append(InferenceAddOns(denoise=denoise, tta=tta))
    return tuple(out)


__all__ = ["DenoiseParams", "InferenceAddOns", "TTAParams", "combine_views", "counter_uniform", "tta_views",
           "variants", "wavelet_denoise"]
