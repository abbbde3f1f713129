"""Neural Speech Decoding's objectives (Chen et al. 2024), for :class:`bm2.models.nsd.NSDModel`.

Rebuilt from the description (ANCHORS_WAVE2 §3; the original is GPL-3.0 and was not read). Both compare the
decoded [-1, 1] spectrogram ``output [B, 256, T]`` with ``batch["features"]`` through three spectral terms:

- ``linear_amp``: L1 between amplitudes ``10 ** ((dB - 22.5) / 20)`` (the square root of the power relative to the
  release's +22.5 dB ceiling, in [0.002, 1]: the description says "amplitude" without its scale);
- ``linear_db``: L1 between the [-1, 1] dB spectrograms;
- ``mel_db``: L1 between 128-band mel spectrograms (HTK mel, f_max 8 kHz, triangles from
  ``transformers.audio_utils.mel_filter_bank``; each band is the weighted mean power of its bins so that it shares
  the linear scale's dB range and clamps) mapped to [-1, 1] dB, each band weighted by its width in Hz (weights of
  mean 1). Bands narrower than a bin (none of the 256 bins falls in them) are left out.

``nsd_a2a`` (stage 1, weights as the release's ``run_a2a_loss``): ``linear_amp`` 8, ``linear_db`` 4 and
``mel_db`` 4 (8 x [L1 amplitude + 1/2 L1 dB] + 8 x 1/2 L1 mel dB); ``silence`` = mean(loudness x (1 - wide
on-stage mask)), the wide mask being ``batch["speech"]`` dilated by 5 frames on each side, weight 2e6 (1e6, added
twice by the code: ``silence_twice``; 1e6 with it false, the paper's single term); ``smoothness`` = the mean
squared first and second differences over time of f0, formant frequencies (kHz), formant and noise amplitudes and
noise-formant frequency / bandwidth (kHz), weighted by :data:`SMOOTH_WEIGHTS` (the description gives "1.5 to
1500" without the assignment: ours is a choice) and divided by 2000; ``formant_order`` = mean relu(F_k - F_{k+1})
(kHz), weight 1; ``amp_order`` = mean relu(A_{k+1} - A_k) over the first 4 harmonic formants on on-stage frames
(the release uses voiced frames from phoneme labels, which bm2 does not have), weight 30; and, when the batch has
``praat [B, 4, T]`` (f0, F1, F2, F3 in Hz, NaN where undefined), ``praat_f0`` (squared error on on-stage frames,
weight 4e-4) and ``praat_formant`` (6, 3, 1.5 x the squared errors of F1-F3, weight 3e-6), whose weights decay
linearly from 1 to 0 between epochs 20 and 40 (:meth:`NSDA2AObjective.set_epoch`); 0 without Praat tracks.
``pitch_cycle``: with the model's pitch augmentation (``model.nsd.pitch_augment``), the squared error (Hz^2)
between the re-encoded f0 of the pitch-shifted resynthesis and the shifted f0 (outputs ``cycle_f0_hz``,
``cycle_target_f0_hz``, of every other window of the batch) on on-stage frames, weight 4e-4 (the description
gives no weight: ours, the pitch supervision's), not decayed (its target is exact); 0 without those outputs.

``nsd_e2a`` (stage 2): ``linear_amp`` 80, ``linear_db`` 40 (80 x the linear spectrogram loss) and ``mel_db`` 80
(the description's "80 x mel dB loss", taken as written), plus one ``guide_<key>`` term per parameter: the squared
error between the ECoG-decoded parameter and the frozen speech encoder's (``guide_<key>`` of the outputs), with
frequencies in kHz and loudness in dB / 50 (clamped at -70 dB), averaged over frames weighted by the guidance
loudness ``(max(dB, -70) + 70) / 50`` and the on-stage mask (the loudness term itself by the wide on-stage mask
alone), then "flooded": ``|L - b| + b`` with floors :data:`FLOODS`. Weights: formant frequency and formant
amplitude ("formant ratio") 4, the others 1.

Every term is computed in float32; ``loss.weights`` overrides any weight (0 = logged only).
"""

from __future__ import annotations

import math
import typing as tp
import warnings

import torch
from torch.nn import functional as F

from ..features import nsd_spec
from ..models.nsd import GUIDE_PREFIX, PARAM_PREFIX
from . import OBJECTIVES, OUTPUT, Objective

WIDE_FRAMES = 5
SMOOTH_WEIGHTS = {"f0_hz": 1500.0, "formant_hz": 150.0, "formant_amp": 15.0, "noise_amp": 15.0,
                  "noise_formant_hz": 1.5, "noise_formant_bw_hz": 1.5}
FLOODS = {"loudness": 0.01, "formant_hz": 0.0025, "noise_formant_hz": 0.05, "noise_formant_bw_hz": 0.01}
GUIDED = ("loudness", "f0_hz", "voicing", "formant_hz", "formant_amp", "formant_amp_noise", "noise_formant_hz",
          "noise_formant_bw_hz", "noise_amp")
_KHZ = ("f0_hz", "formant_hz", "noise_formant_hz", "noise_formant_bw_hz")


def mel_bank(n_bins: int = nsd_spec.N_FFT, n_mels: int = 128, f_max: float = 8000.0,
             sample_rate: int = nsd_spec.SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bank [n_bins, M], width_weights [M])``: HTK mel triangles over the linear bins, each column normalised to
    sum 1 (a weighted mean of the bins' power), for the ``M <= n_mels`` bands that cover at least one bin, and
    their widths in Hz normalised to mean 1."""
    from transformers.audio_utils import mel_filter_bank

    with warnings.catch_warnings():  # the lowest bands are narrower than a bin: we drop them below
        warnings.simplefilter("ignore")
        bank = torch.from_numpy(mel_filter_bank(num_frequency_bins=n_bins, num_mel_filters=n_mels, min_frequency=0.0,
                                                max_frequency=f_max, sampling_rate=sample_rate, norm=None,
                                                mel_scale="htk")).float()
    mel = torch.linspace(0.0, 2595.0 * math.log10(1.0 + f_max / 700.0), n_mels + 2, dtype=torch.float64)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    widths = (edges[2:] - edges[:-2]).float()
    keep = bank.sum(dim=0) > 0
    bank, widths = bank[:, keep], widths[keep]
    return bank / bank.sum(dim=0, keepdim=True), widths / widths.mean()


def amplitude(spec: torch.Tensor) -> torch.Tensor:
    """Amplitude relative to the +22.5 dB ceiling, ``10 ** ((dB - 22.5) / 20)``, of a [-1, 1] spectrogram."""
    return torch.pow(10.0, (nsd_spec.norm_to_db(spec) - nsd_spec.MAX_DB) / 20.0)


def wide_mask(speech: torch.Tensor, frames: int = WIDE_FRAMES) -> torch.Tensor:
    """The on-stage mask ``[B, T]`` dilated by ``frames`` on each side (float 0 / 1)."""
    return F.max_pool1d(speech.float().unsqueeze(1), 2 * frames + 1, stride=1, padding=frames)[:, 0]


def _check(batch: tp.Mapping[str, torch.Tensor], outputs: tp.Mapping[str, torch.Tensor]) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    output = outputs[OUTPUT].float()
    target = batch["features"].to(output.device).float()
    if output.shape != target.shape:
        raise ValueError(f"the decoded spectrogram {tuple(output.shape)} and batch['features'] "
                         f"{tuple(target.shape)} differ: the NSD objectives need the release's [B, 256, T] spectrogram")
    return output, target


def _param(outputs: tp.Mapping[str, torch.Tensor], key: str, prefix: str = PARAM_PREFIX) -> torch.Tensor:
    name = prefix + key
    if name not in outputs:
        raise KeyError(f"the NSD objective needs the model output {name!r} (model=nsd); got {sorted(outputs)}")
    return outputs[name].float()


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0  # keeps the graph, so a term can be trained on even when it is empty


def _masked_mean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum() / weight.sum().clamp_min(1e-6)


class SpectralTerms(Objective):
    """The shared spectral terms (``linear_amp``, ``linear_db``, ``mel_db``) and their mel bank."""

    mel: torch.Tensor
    mel_weights: torch.Tensor

    def __init__(self, weights: dict[str, float] | None = None, n_mels: int = 128) -> None:
        super().__init__(weights)
        bank, widths = mel_bank(n_mels=n_mels)
        self.register_buffer("mel", bank, persistent=False)
        self.register_buffer("mel_weights", widths, persistent=False)

    def spectral(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``linear_amp``, ``linear_db`` and ``mel_db`` of ``output`` against ``target`` (both ``[B, 256, T]``)."""
        def mel_norm(spec: torch.Tensor) -> torch.Tensor:
            power = torch.einsum("bft,fm->bmt", nsd_spec.norm_to_power(spec), self.mel.to(spec))
            return nsd_spec.db_to_norm(nsd_spec.power_to_db(power))

        mel_error = (mel_norm(output) - mel_norm(target)).abs().mean(dim=(0, 2))
        return {"linear_amp": (amplitude(output) - amplitude(target)).abs().mean(),
                "linear_db": (output - target).abs().mean(),
                "mel_db": (mel_error * self.mel_weights.to(mel_error)).mean()}


class NSDA2AObjective(SpectralTerms):
    """Stage a2a (``loss.name=nsd_a2a``): see the module docstring for the terms and their weights.

    ``silence_twice`` (default True, as the release's code): the silence term's default weight is 2e6 (1e6 added
    twice); False: 1e6. ``praat_decay``: the epochs ``(start, end)`` between which the Praat weights fall from
    their value to 0.
    """

    terms = ("linear_amp", "linear_db", "mel_db", "silence", "smoothness", "formant_order", "amp_order",
             "praat_f0", "praat_formant", "pitch_cycle")

    def __init__(self, weights: dict[str, float] | None = None, silence_twice: bool = True,
                 praat_decay: tp.Sequence[int] = (20, 40), n_mels: int = 128) -> None:
        defaults = {"linear_amp": 8.0, "linear_db": 4.0, "mel_db": 4.0, "silence": 2e6 if silence_twice else 1e6,
                    "smoothness": 1.0 / 2000.0, "formant_order": 1.0, "amp_order": 30.0, "praat_f0": 4e-4,
                    "praat_formant": 3e-6, "pitch_cycle": 4e-4}
        super().__init__({**defaults, **(weights or {})}, n_mels=n_mels)
        self.praat_base = {k: self.weights[k] for k in ("praat_f0", "praat_formant")}
        self.praat_decay = (int(praat_decay[0]), int(praat_decay[1]))
        if self.praat_decay[1] <= self.praat_decay[0]:
            raise ValueError(f"loss.praat_decay must be (start, end) epochs with start < end, got {praat_decay}")

    def set_epoch(self, epoch: int) -> None:
        """Scale the Praat weights: 1 until ``praat_decay[0]``, linearly to 0 at ``praat_decay[1]``."""
        start, end = self.praat_decay
        factor = min(1.0, max(0.0, (end - epoch) / (end - start)))
        for key, base in self.praat_base.items():
            self.weights[key] = base * factor

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output, target = _check(batch, outputs)
        terms = self.spectral(output, target)
        loud = _param(outputs, "loudness")
        speech = batch.get("speech")
        stage = None if speech is None else speech.to(output.device).float()
        terms["silence"] = _zero(loud) if stage is None else (loud * (1.0 - wide_mask(stage))).mean()

        smooth = _zero(loud)
        for key, weight in SMOOTH_WEIGHTS.items():
            value = _param(outputs, key) / (1000.0 if key in _KHZ else 1.0)
            first = value.diff(dim=1)
            smooth = smooth + weight * (first.square().mean() + first.diff(dim=1).square().mean())
        terms["smoothness"] = smooth
        formants = _param(outputs, "formant_hz") / 1000.0
        terms["formant_order"] = F.relu(formants[..., :-1] - formants[..., 1:]).mean()
        amps = _param(outputs, "formant_amp")[..., :4]
        rise = F.relu(amps[..., 1:] - amps[..., :-1]).mean(dim=-1)  # [B, T]
        terms["amp_order"] = rise.mean() if stage is None else _masked_mean(rise, stage)

        terms["praat_f0"], terms["praat_formant"] = _zero(loud), _zero(loud)
        praat = batch.get("praat")
        if praat is not None:
            praat = praat.to(output.device).float()
            on = torch.ones_like(loud) if stage is None else stage
            f0 = _param(outputs, "f0_hz")
            known = torch.isfinite(praat[:, 0]).float() * on
            terms["praat_f0"] = _masked_mean((f0 - praat[:, 0].nan_to_num()).square(), known)
            formant = _zero(loud)
            for k, weight in enumerate((6.0, 3.0, 1.5)):
                known = torch.isfinite(praat[:, k + 1]).float() * on
                error = (formants[..., k] * 1000.0 - praat[:, k + 1].nan_to_num()).square()
                formant = formant + weight * _masked_mean(error, known)
            terms["praat_formant"] = formant
        terms["pitch_cycle"] = _zero(loud)
        if "cycle_f0_hz" in outputs:
            # the model's cycle holds every other window of the batch
            on = torch.ones_like(loud[::2]) if stage is None else stage[::2]
            error = (_param(outputs, "f0_hz", "cycle_") - _param(outputs, "f0_hz", "cycle_target_")).square()
            terms["pitch_cycle"] = _masked_mean(error, on)
        return terms


class NSDE2AObjective(SpectralTerms):
    """Stage e2a (``loss.name=nsd_e2a``): spectral terms and the flooded parameter guidance (module docstring).

    ``flood`` (default True): the floors of :data:`FLOODS`; False: plain squared errors.
    """

    terms = ("linear_amp", "linear_db", "mel_db", *(f"guide_{k}" for k in GUIDED))

    def __init__(self, weights: dict[str, float] | None = None, flood: bool = True, n_mels: int = 128) -> None:
        defaults = {"linear_amp": 80.0, "linear_db": 40.0, "mel_db": 80.0,
                    **{f"guide_{k}": 4.0 if k in ("formant_hz", "formant_amp") else 1.0 for k in GUIDED}}
        super().__init__({**defaults, **(weights or {})}, n_mels=n_mels)
        self.flood = bool(flood)

    def forward(self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output, target = _check(batch, outputs)
        terms = self.spectral(output, target)
        guide_db = nsd_spec.power_to_db(_param(outputs, "loudness", GUIDE_PREFIX)).clamp_min(-70.0)
        weight = (guide_db + 70.0) / 50.0  # [B, T]
        speech = batch.get("speech")
        loud_weight = torch.ones_like(weight)
        if speech is not None:
            stage = speech.to(output.device).float()
            weight, loud_weight = weight * stage, wide_mask(stage)
        for key in GUIDED:
            pred, guide = _param(outputs, key), _param(outputs, key, GUIDE_PREFIX)
            if key == "loudness":
                pred, guide = nsd_spec.power_to_db(pred).clamp_min(-70.0) / 50.0, guide_db / 50.0
            elif key in _KHZ:
                pred, guide = pred / 1000.0, guide / 1000.0
            error = (pred - guide).square()
            if error.dim() == 3:
                error = error.mean(dim=-1)
            loss = _masked_mean(error, loud_weight if key == "loudness" else weight)
            floor = FLOODS.get(key, 0.0) if self.flood else 0.0
            terms[f"guide_{key}"] = (loss - floor).abs() + floor if floor else loss
        return terms


OBJECTIVES.update(nsd_a2a=NSDA2AObjective, nsd_e2a=NSDE2AObjective)

__all__ = ["FLOODS", "GUIDED", "NSDA2AObjective", "NSDE2AObjective", "SMOOTH_WEIGHTS", "amplitude", "mel_bank",
           "wide_mask"]
