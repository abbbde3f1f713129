"""Neural Speech Decoding (Chen et al., Nat. Mach. Intell. 2024): speech encoder, parameter head and the model.

Rebuilt from the description (ANCHORS §2 and ANCHORS_WAVE2 §3; the original is GPL-3.0 and was not read).

- :class:`ParameterHead` turns features ``[B, D, T]`` into the synthesizer's speech parameters (the keys of
  :data:`bm2.models.formant_synth.PARAMETER_KEYS` plus ``formant_amp_noise``), with the release's ranges:
  f0 = sigmoid * range + low (by sex), formant frequencies = sigmoid in each formant's range (by sex), harmonic
  formant amplitudes = softmax over the 6 formants, noise filter amplitudes = softmax over 7 logits (6 harmonic
  formants + the noise formant: ``formant_amp_noise`` and ``noise_amp``, "duomask"), voicing = softmax over
  [harmonic, noise] (``voicing`` is the harmonic share), noise formant 4-8 kHz, its bandwidth
  softplus(x) * 2344 + 586 Hz, loudness = softplus with the last bias at -9. The formant frequencies and their
  amplitudes come from kernel-3 convolutions, the others from 1x1 ones.
- :class:`SpeechEncoder` (spectrogram -> parameters): 1-D convolutions over the [-1, 1] spectrogram ``[B, 256, T]``
  with GroupNorm and LeakyReLU 0.2, then a :class:`ParameterHead`; loudness comes from its own branch, a 1x1-conv
  MLP on the spectrogram smoothed over time by a Hann window (softplus, last bias -9). ``causal``: left padding only.
- :class:`NSDModel` (``model=nsd``): ``stage=a2a`` encodes the true spectrogram and resynthesizes it
  (``inputs = ("features",)``); ``stage=e2a`` decodes the parameters from ECoG with an ECoG decoder
  (``bm2.models.ecog_decoders.build_ecog_decoder``: resnet | lstm | swin, causal or not) and a parameter head, and
  the speech encoder gives the guidance parameters from the true spectrogram without gradient
  (``inputs = ("brain", "features")``). Module names: ``encoder`` (speech encoder), ``synth`` (synthesizer),
  ``decoder`` and ``head`` (e2a), so that an e2a XP starts from its a2a parent with
  ``chain.modules=[encoder, synth] chain.freeze=[encoder, synth]``.
- Pitch augmentation (``pitch_augment``, a2a training only; the release's optional ``--pitch_augment``, off by
  default there and here): each window's encoded f0 is shifted by ``2 ** U(-s, s)`` (the release: s = 1.5 octaves)
  and clamped to the sex's f0 range within the release's [88, 300] Hz, the synthesizer renders the shifted
  parameters (without gradient) and the speech encoder encodes that spectrogram again; the objective's
  ``pitch_cycle`` term pulls the re-encoded f0 to the shifted one (:mod:`bm2.objectives.nsd`). The encoder so sees
  every word at many pitches with its f0 known, instead of only the few it was spoken at.
- f0 by harmonic salience (``f0_estimator="salience"``, not in the release, whose encoder learns f0; off by
  default): :class:`SalienceF0` reads f0 from each frame of the input spectrogram by subharmonic summation
  (Hermes 1988) instead of the learned f0 head. Why: the spectral losses need f0 to about 1 Hz (the 30th harmonic
  moves a whole bin when f0 is 1 Hz off) and a learned head generalises to a few Hz at best from a small study
  (README, Neural Speech Decoding: on the test words of the small grid's synthetic study, 2.05 Hz for the learned
  head with the pitch augmentation at S = 0.5 against 0.69 Hz for the salience).
  It has no parameters, looks at one frame (so it is causal) and runs as one matrix product.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..features import nsd_spec
from .common import ModelConfigError
from .ecog_common import FrameGroupNorm, time_padding
from .formant_synth import (F0_RANGES, FORMANT_RANGES, HARMONIC_CUTOFF_HZ, N_FORMANTS, N_HARMONICS, NOISE_BW_MIN,
                            NOISE_BW_SCALE, NOISE_FORMANT_RANGE, FormantSynthesizer, check_sex)

logger = logging.getLogger(__name__)

LOUDNESS_BIAS = -9.0
STAGES = ("a2a", "e2a")
DECODERS = ("resnet", "lstm", "swin")
# the original's feature width D of each ECoG decoder (the input of its parameter head)
DECODER_CHANNELS = {"resnet": 32, "lstm": 64, "swin": 32}
PARAM_PREFIX, GUIDE_PREFIX = "param_", "guide_"
#: the release clamps the shifted f0 of its pitch augmentation to this range (Hz)
PITCH_AUGMENT_CLAMP = (88.0, 300.0)
#: the speech encoder's ways to get f0 (model.nsd.f0_estimator): the release's learned head, or SalienceF0
F0_ESTIMATORS = ("learned", "salience")
#: below about this f0 (Hz) the release's spectrogram does not resolve the harmonics well enough for SalienceF0
#: (ad hoc checks on steady vowels: 150-170 Hz read right with the test's male formants, lower ones not always)
SALIENCE_MIN_F0 = 170.0


class _Conv(nn.Conv1d):
    """A 1-D convolution padded to keep the length: centred, or on the left only when ``causal``
    (:func:`~bm2.models.ecog_common.time_padding` of the dilated kernel)."""

    def __init__(self, cin: int, cout: int, kernel: int, causal: bool = False, dilation: int = 1) -> None:
        super().__init__(cin, cout, kernel, dilation=dilation)
        self.pads = time_padding(dilation * (kernel - 1) + 1, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))


class ParameterHead(nn.Module):
    """Features ``[B, in_channels, T]`` -> the speech parameters (dict of ``[B, T]`` / ``[B, T, 6]`` tensors).

    ``sex`` picks the f0 and formant ranges (:data:`F0_RANGES`, :data:`FORMANT_RANGES`); ``causal`` pads the
    kernel-3 heads on the left only. ``loudness=False`` leaves out the loudness head: ``forward(x, loudness_logit)``
    then takes a ``[B, T]`` logit from elsewhere (the speech encoder's spectrogram branch), so that no parameter
    goes without gradient (DDP); likewise ``f0=False`` leaves out the f0 convolution and ``forward(x, f0_hz=...)``
    takes f0 ``[B, T]`` in Hz from elsewhere (:class:`SalienceF0`). Raises ``ValueError`` for an unknown sex, a
    wrong channel count, a missing loudness logit or f0, one of shape other than ``[B, T]``, or one given to a head
    that has its own (whose convolution would then go without gradient).
    """

    def __init__(self, in_channels: int, sex: str = "female", causal: bool = False, loudness: bool = True,
                 f0: bool = True) -> None:
        super().__init__()
        self.sex = check_sex(sex)
        self.in_channels = int(in_channels)
        self.f0 = nn.Conv1d(in_channels, 1, 1) if f0 else None
        self.formant_hz = _Conv(in_channels, N_FORMANTS, 3, causal)
        self.formant_amp = _Conv(in_channels, N_FORMANTS, 3, causal)
        self.noise_amps = _Conv(in_channels, N_FORMANTS + 1, 3, causal)
        self.voicing = nn.Conv1d(in_channels, 2, 1)
        self.noise_hz = nn.Conv1d(in_channels, 1, 1)
        self.noise_bw = nn.Conv1d(in_channels, 1, 1)
        self.loudness = nn.Conv1d(in_channels, 1, 1) if loudness else None
        if self.loudness is not None:
            nn.init.constant_(tp.cast(torch.Tensor, self.loudness.bias), LOUDNESS_BIAS)
        lo, hi = zip(*FORMANT_RANGES[sex])
        self.f0_range = F0_RANGES[sex]
        self.register_buffer("formant_lo", torch.tensor(lo).view(1, 1, -1), persistent=False)
        self.register_buffer("formant_span", (torch.tensor(hi) - torch.tensor(lo)).view(1, 1, -1), persistent=False)

    def _own_or_given(self, name: str, given: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` float32: the raw output of this head's ``name`` convolution, or ``given`` when it has none."""
        conv = getattr(self, name)
        what = "loudness_logit" if name == "loudness" else "f0_hz"
        if conv is not None:
            if given is not None:
                raise ValueError(f"this ParameterHead computes {name} itself: build it with {name}=False to pass "
                                 f"{what}")
            return conv(x).float()[:, 0]
        if given is None:
            raise ValueError(f"this ParameterHead has no {name} head: pass {what} [B, T]")
        if given.shape != (x.shape[0], x.shape[-1]):
            raise ValueError(f"{what} must be [B, T] = {[x.shape[0], x.shape[-1]]}, got {list(given.shape)}")
        return given.float()

    def forward(self, x: torch.Tensor, loudness_logit: torch.Tensor | None = None,
                f0_hz: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(f"ParameterHead takes features [B, {self.in_channels}, T], got {tuple(x.shape)}")
        lo, hi = self.f0_range
        noise_lo, noise_hi = NOISE_FORMANT_RANGE
        # the convolutions may run in bf16 (autocast); ranges and softmaxes in float32
        amps7 = torch.softmax(self.noise_amps(x).float(), dim=1)  # [B, 7, T]
        loudness_logit = self._own_or_given("loudness", loudness_logit, x)
        f0_hz = self._own_or_given("f0", f0_hz, x)
        if self.f0 is not None:
            f0_hz = torch.sigmoid(f0_hz) * (hi - lo) + lo
        lo_f, span_f = tp.cast(torch.Tensor, self.formant_lo), tp.cast(torch.Tensor, self.formant_span)
        return {
            "f0_hz": f0_hz.float(),
            "loudness": F.softplus(loudness_logit),
            "voicing": torch.softmax(self.voicing(x).float(), dim=1)[:, 0],
            "formant_hz": torch.sigmoid(self.formant_hz(x).float()).transpose(1, 2) * span_f + lo_f,
            "formant_amp": torch.softmax(self.formant_amp(x).float(), dim=1).transpose(1, 2),
            "formant_amp_noise": amps7[:, :N_FORMANTS].transpose(1, 2),
            "noise_amp": amps7[:, N_FORMANTS],
            "noise_formant_hz": torch.sigmoid(self.noise_hz(x).float()[:, 0]) * (noise_hi - noise_lo) + noise_lo,
            "noise_formant_bw_hz": F.softplus(self.noise_bw(x).float()[:, 0]) * NOISE_BW_SCALE + NOISE_BW_MIN,
        }


def parabolic_peak(values: torch.Tensor) -> torch.Tensor:
    """The position of the maximum of ``values [..., N]`` along the last axis, refined between samples by the
    parabola through the best sample and its two neighbours: ``argmax + 0.5 (a - c) / (a - 2 b + c)`` (the vertex;
    a shift of at most half a sample), as a float tensor ``[...]`` in samples. At either end of the axis, or where
    the three samples are flat, the best sample's own index."""
    best = values.argmax(-1, keepdim=True)
    last = values.shape[-1] - 1
    a, b, c = (values.gather(-1, (best + d).clamp(0, last))[..., 0] for d in (-1, 0, 1))
    curvature = a - 2 * b + c  # < 0 at a strict maximum
    inner = (best[..., 0] > 0) & (best[..., 0] < last) & (curvature < 0)
    shift = torch.where(inner, 0.5 * (a - c) / curvature.clamp(max=-1e-12), torch.zeros_like(b))
    return best[..., 0].to(shift.dtype) + shift.clamp(-0.5, 0.5)


class SalienceF0(nn.Module):
    """f0 of each frame of a [-1, 1] spectrogram ``[B, n_bins, T]`` (any float dtype) -> float32 ``[B, T]`` in Hz on
    the input's device, within ``f0_range``, by subharmonic summation (Hermes, J. Acoust. Soc. Am. 83, 1988).

    The salience of a candidate f0 ``c`` is the weighted mean of the spectrogram at the harmonics ``h * c``, read
    between bins by linear interpolation, for ``h = 1 .. harmonics`` below ``fmax`` (the synthesizer's 40 harmonics
    stop at 7.8 kHz: 26 of them at 300 Hz), weighted ``decay ** (h - 1)``, minus the same mean at the troughs
    ``(h - 1/2) * c``. Subtracting the troughs and the slow decay (Hermes: 0.84) are this project's choices: with
    troughs, ``c / 2`` scores about half of ``c`` (its odd multiples fall in troughs) and ``2 c`` about nothing
    (its troughs are harmonics), so ranges wider than an octave (male, unified) neither halve nor double f0; the
    slow decay keeps the high harmonics, which carry the precision. The candidates lie ``step`` Hz apart over
    ``f0_range``, and the best one is refined by :func:`parabolic_peak`. The range must hold the voice: an f0 a
    few Hz outside it does not read as the nearest edge but as another comb inside (a female range read 176 Hz
    as 234 Hz); widening the candidates by 20 % on each side and clamping did not help on the synthetic study
    (ad hoc: the frames more than 5 Hz off went from 11 to 27 of its 3,473 voiced test frames, combs at 1.5 f0
    beyond the range winning). A frame without harmonic structure (salience at most 1e-4 everywhere, e.g. silence
    at the -1 floor) gets the range's low end rather than a pick among rounding errors. Everything up to the argmax
    is linear in the spectrogram: one product with a fixed ``[n_bins, candidates]`` matrix (a buffer that is not
    saved: checkpoints keep only ``model.nsd.f0_estimator``, so these settings are fixed; a change of them needs a
    new estimator name).

    Not learned and without gradient (the argmax); each frame alone, so causal. In unvoiced frames f0 is whatever
    comb fits best, which the synthesizer's voicing then mutes. Ours, not the release's (module docstring): a
    torch module rather than ``librosa.salience`` because it runs inside the model on batches, on the device, on a
    grid finer than the bins (0.25 Hz against 31.3 Hz). It needs resolved harmonics: with the release's
    511-sample window (main lobe +-63 Hz) f0 below about :data:`SALIENCE_MIN_F0` Hz may be misread (in ad hoc
    checks on steady male vowels 84 Hz read as 98-196 Hz, 110 as 134 and 132 as 168), so it is a tool for female
    voices, and a range reaching below (male, unified) logs a warning.

    Parameters: ``f0_range`` (low, high) Hz; ``n_bins`` of the spectrogram (bins ``k * 16000 / (2 n_bins - 1)``
    Hz); ``step`` Hz between candidates; ``harmonics`` summed at most; ``decay`` of their weights; ``fmax`` Hz, the
    highest harmonic used. Raises ``ValueError`` unless ``0 < low < high < fmax``, ``step > 0``,
    ``harmonics >= 1`` and ``0 < decay <= 1``, and (forward) for a spectrogram of another number of bins.
    """

    def __init__(self, f0_range: tuple[float, float], n_bins: int = nsd_spec.N_FFT, step: float = 0.25,
                 harmonics: int = N_HARMONICS, decay: float = 0.97, fmax: float = HARMONIC_CUTOFF_HZ) -> None:
        super().__init__()
        lo, hi = map(float, f0_range)
        if not (0 < lo < hi < fmax and step > 0 and harmonics >= 1 and 0 < decay <= 1):
            raise ValueError(f"SalienceF0 needs 0 < low < high < fmax, step > 0, harmonics >= 1 and 0 < decay <= 1; "
                             f"got f0_range={f0_range}, fmax={fmax}, step={step}, harmonics={harmonics}, "
                             f"decay={decay}")
        if lo < SALIENCE_MIN_F0:
            logger.warning("salience f0 over %g-%g Hz: below about %g Hz the spectrogram does not resolve the "
                           "harmonics and f0 may be misread (model.nsd.f0_estimator=learned learns it instead)",
                           lo, hi, SALIENCE_MIN_F0)
        self.n_bins, self.lo, self.hi, self.step = int(n_bins), lo, hi, float(step)
        candidates = lo + step * torch.arange(int((hi - lo) / step + 1e-9) + 1, dtype=torch.float64)
        freqs = nsd_spec.bin_frequencies(n_bins).double()
        spacing = float(freqs[1] - freqs[0])
        h = torch.arange(1, harmonics + 1, dtype=torch.float64)
        weight = (decay ** (h - 1))[None, :] * (candidates[:, None] * h[None, :] < fmax)  # [C, H]
        weight = weight / weight.sum(1, keepdim=True)
        matrix = torch.zeros(n_bins, len(candidates), dtype=torch.float64)
        column = torch.arange(len(candidates))[:, None].expand_as(weight)
        for sign, mult in ((1.0, h), (-1.0, h - 0.5)):
            pos = ((candidates[:, None] * mult[None, :] - float(freqs[0])) / spacing).clamp(0, n_bins - 1)
            left = pos.floor().clamp(max=n_bins - 2).long()
            frac = pos - left
            matrix.index_put_((left, column), sign * weight * (1 - frac), accumulate=True)
            matrix.index_put_((left + 1, column), sign * weight * frac, accumulate=True)
        self.register_buffer("matrix", matrix.float(), persistent=False)
        self.register_buffer("candidates", candidates.float(), persistent=False)

    def salience(self, spec: torch.Tensor) -> torch.Tensor:
        """The salience of every candidate, float32 ``[B, T, candidates]`` (:attr:`candidates`, Hz). Raises
        ``ValueError`` for a spectrogram that is not ``[B, n_bins, T]``."""
        if spec.dim() != 3 or spec.shape[1] != self.n_bins:
            raise ValueError(f"SalienceF0 takes a spectrogram [B, {self.n_bins}, T], got {tuple(spec.shape)}")
        return torch.einsum("bft,fc->btc", spec.float(), tp.cast(torch.Tensor, self.matrix))

    @torch.no_grad()
    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=spec.device.type, enabled=False):
            s = self.salience(spec)
            f0 = self.lo + parabolic_peak(s) * self.step
            # a flat frame (silence) would pick among rounding errors, differently per device
            f0 = torch.where(s.amax(-1) > 1e-4, f0, torch.full_like(f0, self.lo))
            return f0.clamp(self.lo, self.hi)


class SpeechEncoder(nn.Module):
    """The [-1, 1] spectrogram ``[B, n_bins, T]`` -> speech parameters (see the module docstring).

    ``channels`` wide, ``depth`` convolution blocks (kernel 3, dilations 1, 2, 4 ..., GroupNorm of
    ``groups``, LeakyReLU 0.2); ``smooth`` frames of Hann smoothing for the loudness branch. With ``causal`` the
    convolutions and the smoothing look back only and GroupNorm normalises each frame over its channels
    (:class:`~bm2.models.ecog_common.FrameGroupNorm`). ``f0_estimator``: ``"learned"`` (the release's f0 head) or
    ``"salience"`` (:class:`SalienceF0` over the input spectrogram in the sex's f0 range; the parameter head then
    has no f0 convolution). ``ValueError`` when the input has another number of bins, or for an unknown
    ``f0_estimator``.
    """

    def __init__(self, n_bins: int = nsd_spec.N_FFT, channels: int = 128, depth: int = 4, groups: int = 8,
                 smooth: int = 5, sex: str = "female", causal: bool = False, f0_estimator: str = "learned") -> None:
        super().__init__()
        if f0_estimator not in F0_ESTIMATORS:
            raise ModelConfigError(f"model.nsd.f0_estimator must be one of {list(F0_ESTIMATORS)}, got {f0_estimator!r}")
        self.n_bins = int(n_bins)
        layers: list[nn.Module] = []
        cin = n_bins
        for i in range(depth):
            norm = FrameGroupNorm(groups, channels) if causal else nn.GroupNorm(groups, channels)
            layers += [_Conv(cin, channels, 3, causal, dilation=2 ** i), norm, nn.LeakyReLU(0.2)]
            cin = channels
        self.trunk = nn.Sequential(*layers)
        self.head = ParameterHead(channels, sex=sex, causal=causal, loudness=False, f0=f0_estimator == "learned")
        self.f0_salience = SalienceF0(F0_RANGES[check_sex(sex)], n_bins) if f0_estimator == "salience" else None
        window = torch.hann_window(smooth + 2, periodic=False)[1:-1]  # no zero taps
        self.register_buffer("smoothing", (window / window.sum()).view(1, 1, -1), persistent=False)
        self.smooth_pads = (smooth - 1, 0) if causal else ((smooth - 1) // 2, smooth // 2)
        self.loudness = nn.Sequential(nn.Conv1d(n_bins, 64, 1), nn.LeakyReLU(0.2), nn.Conv1d(64, 1, 1))
        nn.init.constant_(tp.cast(torch.Tensor, tp.cast(nn.Conv1d, self.loudness[-1]).bias), LOUDNESS_BIAS)

    def forward(self, spec: torch.Tensor) -> dict[str, torch.Tensor]:
        if spec.dim() != 3 or spec.shape[1] != self.n_bins:
            raise ValueError(f"the speech encoder takes a spectrogram [B, {self.n_bins}, T], got {tuple(spec.shape)}")
        b, nb, t = spec.shape
        smoothing = tp.cast(torch.Tensor, self.smoothing).to(spec.dtype)
        smoothed = F.conv1d(F.pad(spec.reshape(b * nb, 1, t), self.smooth_pads, mode="replicate"), smoothing)
        loudness_logit = self.loudness(smoothed.view(b, nb, t))[:, 0]
        f0_hz = None if self.f0_salience is None else self.f0_salience(spec)
        return self.head(self.trunk(spec), loudness_logit=loudness_logit, f0_hz=f0_hz)


class NSDModel(nn.Module):
    """Neural Speech Decoding's model, one stage at a time (see the module docstring).

    Parameters
    ----------
    out_channels : spectrogram bins of the data (must be ``n_fft``, 256); n_subjects : unused (one model).
    n_channels : ECoG electrodes (e2a). stage : "a2a" | "e2a". decoder : "resnet" | "lstm" | "swin" (e2a).
    causal : causal speech encoder and ECoG decoder. sex : "female" | "male" | "unified" (ranges, bandwidths).
    channels : width of the speech encoder. encoder_depth : its blocks. decoder_channels : the ECoG decoder's
        feature width ``D`` (None: the original's, :data:`DECODER_CHANNELS`).
    n_filter_samples, learned_mask, noise_profile, background_mlp : the synthesizer's (:class:`FormantSynthesizer`).
    expected_noise : at evaluation, the spectrogram takes the noise sources' expected power instead of a draw
        (not in the release, which always draws; training always draws). A drawn noise spectrum fluctuates by about
        5 dB per bin, which caps the PCC against a target that has its own draw.
    decoder_kwargs : more keyword arguments of ``build_ecog_decoder`` (e.g. ``grid``).
    pitch_augment : half-width ``s`` (octaves) of the pitch augmentation's shift ``2 ** U(-s, s)`` (module
        docstring; a2a training only). 0 (default, as the release's default): off; the release's option: 1.5.
        When on, the training outputs also hold ``cycle_f0_hz`` (the re-encoded f0) and ``cycle_target_f0_hz``
        (the shifted f0 it should be), both ``[ceil(B / 2), T]`` in Hz, of every other window of the batch
        (``0, 2, 4 ...``: half the cost of the extra synthesis, without gradient, and encoder pass).
    f0_estimator : the speech encoder's f0: ``"learned"`` (default, the release) or ``"salience"``
        (:class:`SalienceF0`, ours; module docstring). It trains nothing, so it excludes ``pitch_augment``.

    ``forward(features)`` (a2a) or ``forward(brain, features)`` (e2a) returns ``output`` (the decoded [-1, 1]
    spectrogram ``[B, 256, T]``), ``power``, the parameters as ``param_<key>`` and, in e2a, the guidance
    parameters as ``guide_<key>``; outside training also ``waveform`` ``[B, T * 128]`` at 16 kHz (the
    synthesizer's noise is then seeded, so evaluation is reproducible). Raises ``ValueError`` for an unknown stage,
    decoder or f0 estimator, a wrong number of bins, ``pitch_augment`` below 0 or above 0 with the salience f0, or
    an ECoG decoder whose output length differs from the spectrogram's.
    """

    inputs: tuple[str, ...] = ("features",)  # a2a; an instance of stage e2a takes ("brain", "features")
    data_kwargs = ("n_channels",)
    audio_sample_rate = nsd_spec.SAMPLE_RATE

    def __init__(self, out_channels: int = nsd_spec.N_FFT, n_subjects: int = 1, n_channels: int = 64,
                 stage: str = "a2a", decoder: str = "resnet", causal: bool = False, sex: str = "female",
                 channels: int = 128, encoder_depth: int = 4, n_filter_samples: int = 80, learned_mask: bool = True,
                 noise_profile: tp.Sequence[float] | None = None, background_mlp: bool = True,
                 expected_noise: bool = False, pitch_augment: float = 0.0, f0_estimator: str = "learned",
                 decoder_channels: int | None = None, decoder_kwargs: dict[str, tp.Any] | None = None) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ModelConfigError(f"model.nsd.stage must be one of {list(STAGES)}, got {stage!r}")
        if out_channels != nsd_spec.N_FFT:
            raise ModelConfigError(f"model=nsd decodes the release's {nsd_spec.N_FFT}-bin spectrogram, but the "
                                   f"data's features have {out_channels} channels: use the NSD spectrogram feature")
        if decoder not in DECODERS:  # checked in a2a too: a typo must not pass silently
            raise ModelConfigError(f"model.nsd.decoder must be one of {list(DECODERS)}, got {decoder!r}")
        self.stage, self.causal, self.expected_noise = stage, bool(causal), bool(expected_noise)
        if not pitch_augment >= 0:
            raise ModelConfigError(f"model.nsd.pitch_augment is a shift in octaves >= 0 (0: off), got {pitch_augment}")
        self.pitch_augment = float(pitch_augment)
        if pitch_augment > 0 and f0_estimator == "salience":
            raise ModelConfigError("model.nsd.pitch_augment trains the speech encoder's learned f0, but "
                                   "model.nsd.f0_estimator=salience learns none: set model.nsd.pitch_augment=0")
        lo, hi = F0_RANGES[check_sex(sex)]
        self.pitch_clamp = (max(lo, PITCH_AUGMENT_CLAMP[0]), min(hi, PITCH_AUGMENT_CLAMP[1]))
        # what a parent XP must share with this model for its encoder and synthesizer to be the ones it was trained
        # with (checked by :meth:`check_parent` when e2a starts from its a2a parent)
        self._shared = {"causal": bool(causal), "sex": sex, "channels": channels, "encoder_depth": encoder_depth,
                        "n_filter_samples": n_filter_samples, "learned_mask": bool(learned_mask),
                        "f0_estimator": f0_estimator}
        self.inputs = ("features",) if stage == "a2a" else ("brain", "features")
        self.encoder = SpeechEncoder(out_channels, channels, encoder_depth, sex=sex, causal=causal,
                                     f0_estimator=f0_estimator)
        self.synth = FormantSynthesizer(sex=sex, n_filter_samples=n_filter_samples, learned_mask=learned_mask,
                                        noise_profile=noise_profile, background_mlp=background_mlp)
        if stage == "e2a":
            # lazy: the ECoG decoders live in their own module, imported only for e2a
            build_ecog_decoder = importlib.import_module("bm2.models.ecog_decoders").build_ecog_decoder
            width = int(decoder_channels or DECODER_CHANNELS[decoder])
            self.decoder = build_ecog_decoder(decoder, n_electrodes=n_channels, causal=causal, out_channels=width,
                                              **(decoder_kwargs or {}))
            self.head = ParameterHead(width, sex=sex, causal=causal)

    @property
    def parent_required(self) -> str | None:
        """Why this model needs a parent XP (``chain.parent``), or None: e2a is guided by, and synthesizes with, the
        encoder and synthesizer of an a2a XP; untrained, they would make the whole stage meaningless."""
        if self.stage != "e2a":
            return None
        return ("recipe=nsd_e2a decodes ECoG through the speech encoder and synthesizer of a trained a2a XP: set "
                "chain.parent=<the a2a XP's signature> (with the same model.nsd.causal, sex, f0_estimator and sizes), "
                "or run the chain in order: python -m scripts.nsd_chain GRID --subject ID (grids/nsd/)")

    def check_parent(self, spec: dict[str, tp.Any]) -> str | None:
        """None when the parent XP's model (its checkpoint's ``model_spec``) can give this e2a model its encoder and
        synthesizer, else what differs and the overrides to set (a causal decoder guided by a non-causal encoder
        would see the future through its guidance)."""
        if self.stage != "e2a":
            return None
        if spec.get("name") != "nsd":
            return f"its model is {spec.get('name')!r}, not an a2a model=nsd"
        given = spec.get("kwargs") or {}
        defaults = {k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()}
        parent = {k: given.get(k, defaults.get(k)) for k in self._shared}
        differ = {k: v for k, v in parent.items() if v != self._shared[k]}
        if not differ:
            return None
        return ("its model differs in " + ", ".join(f"model.nsd.{k}={v!r} (here {self._shared[k]!r})"
                                                   for k, v in differ.items())
                + ": give this XP the parent's values, or start from an a2a XP with these")

    def _synthesize(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        device = params["f0_hz"].device
        generator = None if self.training else torch.Generator(device=device).manual_seed(0)
        # float32 even under the solver's bf16 autocast: phases over 16k samples and dB need the precision
        with torch.autocast(device_type=device.type, enabled=False):
            params = {k: v.float() for k, v in params.items()}
            return self.synth(params, waveform=not self.training, generator=generator,
                              expected_noise=self.expected_noise and not self.training)

    def _pitch_cycle(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The pitch augmentation's cycle (module docstring): the re-encoded and the shifted f0, ``[B, T]`` each."""
        # every other window (half the cost of a synthesis and an encoder pass per step; the release's choice of
        # windows is not described)
        params = {k: v[::2] for k, v in params.items()}
        f0 = params["f0_hz"]
        with torch.no_grad():
            octaves = (torch.rand(f0.shape[0], 1, device=f0.device) * 2.0 - 1.0) * self.pitch_augment
            target = (f0.detach().float() * torch.pow(2.0, octaves)).clamp(*self.pitch_clamp)
            shifted = {k: v.detach() for k, v in params.items()}
            shifted["f0_hz"] = target
            spec = self._synthesize(shifted)["output"]
        return {"cycle_f0_hz": self.encoder(spec)["f0_hz"], "cycle_target_f0_hz": target}

    def forward(self, features: torch.Tensor, brain: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        features = features.float()
        if self.stage == "a2a":
            params = self.encoder(features)
            out = self._synthesize(params)
            out.update({PARAM_PREFIX + k: v for k, v in params.items()})
            if self.training and self.pitch_augment > 0:
                out.update(self._pitch_cycle(params))
            return out
        if brain is None:
            raise ValueError("stage e2a decodes from ECoG: the batch must carry 'brain'")
        hidden = self.decoder(brain.float())
        if hidden.shape[-1] != features.shape[-1]:
            raise ValueError(f"the ECoG decoder gave {hidden.shape[-1]} frames for {features.shape[-1]} spectrogram "
                             f"frames (ECoG {tuple(brain.shape)}, lead {getattr(self.decoder, 'lead', '?')}): the "
                             "ECoG window must be the spectrogram's plus the decoder's lead (dset.window.lead_ms)")
        params = self.head(hidden)
        out = self._synthesize(params)
        with torch.no_grad():
            guide = self.encoder(features)
        out.update({PARAM_PREFIX + k: v for k, v in params.items()})
        out.update({GUIDE_PREFIX + k: v.detach() for k, v in guide.items()})
        return out


__all__ = ["DECODERS", "DECODER_CHANNELS", "F0_ESTIMATORS", "GUIDE_PREFIX", "NSDModel", "PARAM_PREFIX",
           "ParameterHead", "STAGES", "SalienceF0", "SpeechEncoder"]
