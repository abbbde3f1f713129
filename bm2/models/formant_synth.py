"""The differentiable formant synthesizer of Neural Speech Decoding (Chen et al., Nat. Mach. Intell. 2024).

Rebuilt from the description of the release's production "wave-based power mode" (ANCHORS_WAVE2 §3; the
original code is GPL-3.0 and was not read). Per 8-ms frame (125 Hz) the speech parameters are:

- ``f0_hz [B, T]``: fundamental frequency (Hz), in :data:`F0_RANGES` of the speaker's sex;
- ``loudness [B, T]``: a **power gain** (>= 0) applied to both excitations. A unit-variance harmonic of the
  511-point STFT peaks at about +45 dB, so voiced speech sits around ``loudness`` 1e-3 to 1e-2 (harmonic peaks
  near +15 to +25 dB, the release's ceiling being +22.5 dB) and silence below 1e-6;
- ``voicing [B, T]`` in [0, 1]: the harmonic share ``alpha_h`` of the voicing mix (``alpha_n = 1 - voicing``);
- ``formant_hz [B, T, 6]`` and ``formant_amp [B, T, 6]`` (summing to 1 over the formants): the six harmonic
  formants, in :data:`FORMANT_RANGES`; their bandwidths are not predicted but follow the fixed formula of
  :func:`formant_bandwidth` (optional ``formant_bw_hz [B, T, 6]`` overrides it);
- ``noise_formant_hz [B, T]`` (4-8 kHz), ``noise_formant_bw_hz [B, T]`` (softplus(x) * 2344 + 586 Hz in the
  encoder) and ``noise_amp [B, T]`` in [0, 1]: the noise formant's share of the 7 formants that filter the noise
  excitation ("duomask"); the six harmonic formants take the rest, split by ``formant_amp_noise [B, T, 6]`` when
  given (the encoder's 7-way softmax), else by ``formant_amp``.

Power spectrogram (bins ``[B, 256, T]``, same STFT as :mod:`bm2.features.nsd_spec`)::

    P = loudness * alpha_h * H * sum_i A_i M_i  +  loudness * alpha_n * N * (sum_i A'_i M_i + a_n M_n)  +  BG

- ``H``: power spectrogram of the harmonic source, ``sum_k sqrt(2) sin(2 pi cumsum(k f0) / 16000)`` for
  k = 1..40 with f0 linearly interpolated to 16 kHz; a harmonic is zeroed at the samples where ``k f0 >= 7.8 kHz``;
- ``N``: power spectrogram of uniform noise of unit variance, ``sqrt(3) U(-1, 1)``;
- ``M_i``: formant filters (power gains, peak 1). With ``learned_mask`` (default, as both released configs) each
  formant has a learned unimodal shape from ``n_filter_samples`` logits: left half softmax -> cumulative sum
  (rising to 1), right half softmax -> reversed cumulative sum (falling from 1), laid on a 2-kHz support; its own
  -3 dB width is measured and the shape is rescaled so that this width equals the bandwidth B, centred at F, and
  sampled on the linear frequency grid. Untrained (zero logits) the shape is a triangle whose half-power width is
  B. Without ``learned_mask``: the Gaussian ``exp(-(f - F)^2 / (2 (B / alpha + 0.01)^2))``, alpha = 2 sqrt(ln 2);
- ``BG``: background noise: Gaussian noise through a learned per-sample MLP (1x1 convolutions 1 -> 128 -> 128
  -> 1, LeakyReLU 0.2), here residual (``z + mlp(z)``, last layer near zero at start, so the untrained
  background is white Gaussian noise; a per-sample map of white noise stays white, its level is learned), as a
  power spectrogram, normalised by the window energy and scaled by
  ``softplus(gain) / softplus(0)`` times a per-bin **noise profile**: by default flat at ``background_db``
  (-35 dB); with :meth:`FormantSynthesizer.set_noise_profile` the release's pre-trial baseline frames
  (``noisesample_re_alldataset``), averaged in normalised-dB units and mapped back to power. (The original
  multiplies by the constant 0.0003 instead of dividing by the window energy: a different normalisation, the same
  shape.)

Output: ``10 log10(P)`` clamped to [-50, 22.5] dB and mapped to [-1, 1] (:func:`bm2.features.nsd_spec.db_to_norm`).

**Waveform** (for listening and STOI; not part of the power-mode training path, so it carries no gradient): the
complex STFTs of the three sources are multiplied by the square roots of their per-bin power gains above and
summed, then inverted (iSTFT, same window and hop), i.e. the excitations filtered by the formant filters frame by
frame. Its spectrogram is the synthesized one up to the overlap-add of neighbouring frames.

:func:`synthesize` renders a waveform from physical parameters with an untrained synthesizer (fixed defaults:
triangular filter shapes, white background at -35 dB), e.g. for a synthetic study.
"""

from __future__ import annotations

import math
import typing as tp

import torch
from torch import nn
from torch.nn import functional as F

from ..features import nsd_spec

SEXES = ("female", "male", "unified")
# f0 = sigmoid(x) * 120 + 80 + 100 * (sex == female) in the release; "unified" spans both (80-300 Hz).
F0_RANGES: dict[str, tuple[float, float]] = {"female": (180.0, 300.0), "male": (80.0, 200.0),
                                            "unified": (80.0, 300.0)}
_FEMALE = ((300, 950), (700, 3400), (1800, 3800), (3400, 5000), (5000, 6000), (6000, 7000))
_MALE = ((200, 850), (500, 3000), (1400, 3400), (3000, 4600), (4000, 6000), (4500, 7500))
# "unified" (not in the release, which has two tables): the envelope of both tables, formant by formant.
FORMANT_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "female": tuple((float(a), float(b)) for a, b in _FEMALE),
    "male": tuple((float(a), float(b)) for a, b in _MALE),
    "unified": tuple((float(min(f[0], m[0])), float(max(f[1], m[1]))) for f, m in zip(_FEMALE, _MALE)),
}
NOISE_FORMANT_RANGE = (4000.0, 8000.0)
NOISE_BW_SCALE, NOISE_BW_MIN = 2344.0, 586.0  # noise-formant bandwidth = softplus(x) * 2344 + 586 Hz
N_HARMONICS = 40
HARMONIC_CUTOFF_HZ = 7800.0
FILTER_SUPPORT_HZ = 2000.0
N_FORMANTS = 6
PARAMETER_KEYS = ("f0_hz", "loudness", "voicing", "formant_hz", "formant_amp", "noise_formant_hz",
                  "noise_formant_bw_hz", "noise_amp")


def check_sex(sex: str) -> str:
    """``sex`` if it is one of :data:`SEXES`, else ``ValueError`` naming the choices."""
    if sex not in SEXES:
        raise ValueError(f"sex must be one of {list(SEXES)}, got {sex!r}")
    return sex


def formant_bandwidth(formant_hz: torch.Tensor, sex: str = "female") -> torch.Tensor:
    """Bandwidth (Hz) of harmonic formants at ``formant_hz`` (any shape), the release's fixed formula:
    female (and "unified") ``0.65 (0.00625 F + 375)``, male ``0.55 * 0.65 (0.00625 F + 300)``."""
    if check_sex(sex) == "male":
        return 0.55 * 0.65 * (0.00625 * formant_hz + 300.0)
    return 0.65 * (0.00625 * formant_hz + 375.0)


def _bins_frames(x: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` -> ``[B, 1, T]`` to broadcast over the frequency bins."""
    return x.unsqueeze(1)


def check_parameters(params: tp.Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """``(B, T)`` of a parameter dict; ``KeyError`` naming a missing key, ``ValueError`` naming a bad shape."""
    missing = [k for k in PARAMETER_KEYS if k not in params]
    if missing:
        raise KeyError(f"speech parameters lack {missing}; a synthesizer needs {list(PARAMETER_KEYS)}")
    b, t = params["f0_hz"].shape[:2] if params["f0_hz"].dim() == 2 else (-1, -1)
    for key in PARAMETER_KEYS:
        want = (b, t, N_FORMANTS) if key in ("formant_hz", "formant_amp") else (b, t)
        if tuple(params[key].shape) != want:
            raise ValueError(f"speech parameter {key!r} has shape {tuple(params[key].shape)}, expected {want} "
                             f"(f0_hz is {tuple(params['f0_hz'].shape)}: [B, T])")
    return b, t


class FormantSynthesizer(nn.Module):
    """Speech parameters per frame -> the release's [-1, 1] dB spectrogram ``[B, n_fft, T]`` and a waveform.

    See the module docstring for the model. Parameters
    ----------
    sex : "female" | "male" | "unified": the bandwidth formula (the f0 / formant ranges live in the encoders).
    n_harmonics : harmonics of the source (40, as the released model builds it; the class default there is 100).
    n_filter_samples : logits per learned formant shape (80 on the release's command line; must be even).
    learned_mask : learned unimodal shapes (True, as the released configs) or the Gaussian fallback (False).
    background_db : level (dB per bin) of the flat default noise profile.
    noise_profile : optional ``[n_fft]`` baseline spectrogram in normalised units (see :meth:`set_noise_profile`).
    background_mlp : the release's per-sample MLP on the background's Gaussian noise (True). A per-sample map of
        white noise is still white, so the MLP changes the background's level only, which ``background_gain``
        also learns; False drops it (about 2/3 of the synthesizer's compute at batch 16 x 128 frames).

    Learned parameters: ``shape_logits [7, n_filter_samples]`` (6 harmonic formants + the noise formant),
    ``background`` (the per-sample MLP, with ``background_mlp``) and ``background_gain``.
    """

    freqs: torch.Tensor
    window: torch.Tensor
    profile: torch.Tensor

    def __init__(self, sex: str = "female", n_harmonics: int = N_HARMONICS, n_filter_samples: int = 80,
                 learned_mask: bool = True, background_db: float = -35.0,
                 noise_profile: tp.Sequence[float] | None = None, background_mlp: bool = True,
                 n_fft: int = nsd_spec.N_FFT,
                 hop: int = nsd_spec.HOP, sample_rate: int = nsd_spec.SAMPLE_RATE) -> None:
        super().__init__()
        if n_filter_samples < 4 or n_filter_samples % 2:
            raise ValueError(f"n_filter_samples must be an even number >= 4, got {n_filter_samples}")
        self.sex = check_sex(sex)
        self.n_harmonics = int(n_harmonics)
        self.learned_mask = bool(learned_mask)
        self.n_fft, self.hop, self.sample_rate = int(n_fft), int(hop), int(sample_rate)
        self.shape_logits = nn.Parameter(torch.zeros(N_FORMANTS + 1, n_filter_samples))
        self.background: nn.Sequential | None = None
        if background_mlp:
            self.background = nn.Sequential(nn.Conv1d(1, 128, 1), nn.LeakyReLU(0.2), nn.Conv1d(128, 128, 1),
                                            nn.LeakyReLU(0.2), nn.Conv1d(128, 1, 1))
            last = tp.cast(nn.Conv1d, self.background[-1])
            # Residual MLP with a small last layer: the untrained background is (nearly) white Gaussian noise, and
            # gradients still reach every layer (a zero last layer would block the ones before it).
            nn.init.normal_(last.weight, std=1e-3)
            nn.init.zeros_(tp.cast(torch.Tensor, last.bias))
        self.background_gain = nn.Parameter(torch.zeros(()))
        self.register_buffer("freqs", nsd_spec.bin_frequencies(n_fft, sample_rate), persistent=False)
        window = torch.hann_window(nsd_spec.stft_length(n_fft), periodic=True)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("profile", torch.full((n_fft,), 10.0 ** (background_db / 10.0)))
        if noise_profile is not None:
            self.set_noise_profile(torch.as_tensor(noise_profile, dtype=torch.float32))

    def set_noise_profile(self, frames: torch.Tensor) -> None:
        """Background profile from pre-trial baseline frames ``[N, n_fft]`` (or one frame ``[n_fft]``) of the
        [-1, 1] spectrogram: averaged in normalised-dB units, mapped back to power. ``ValueError`` on a bad size."""
        frames = torch.as_tensor(frames, dtype=torch.float32)
        frames = frames.reshape(-1, frames.shape[-1]) if frames.dim() else frames
        if frames.dim() != 2 or frames.shape[-1] != self.n_fft or not torch.isfinite(frames).all():
            raise ValueError(f"a noise profile needs finite baseline frames [N, {self.n_fft}] of the [-1, 1] "
                             f"spectrogram, got shape {tuple(frames.shape)}")
        self.profile.copy_(nsd_spec.norm_to_power(frames.mean(dim=0)).to(self.profile))

    # -- sources -------------------------------------------------------------------------------------------
    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """Complex STFT ``[B, n_fft, 1 + (S - 1) // hop]`` (``T`` frames for ``S = T * hop``) of ``wave [B, S]``,
        the same as :func:`bm2.features.nsd_spec.power_spectrogram` (its squared magnitude)."""
        return nsd_spec.release_stft(wave, self.n_fft, self.hop, window=self.window)

    def harmonic_source(self, f0_hz: torch.Tensor) -> torch.Tensor:
        """``[B, T * hop]`` sum of ``n_harmonics`` harmonics of ``f0_hz [B, T]`` (linearly interpolated to the
        sample rate, cumulative phase), each ``sqrt(2) sin``, zeroed where ``k f0 >= 7.8 kHz``."""
        b, t = f0_hz.shape
        f0 = F.interpolate(f0_hz.unsqueeze(1), size=t * self.hop, mode="linear", align_corners=False)[:, 0]
        phase = 2.0 * math.pi * torch.cumsum(f0, dim=-1) / self.sample_rate  # [B, S]
        k = torch.arange(1, self.n_harmonics + 1, device=f0.device, dtype=f0.dtype).view(1, -1, 1)
        keep = (k * f0.unsqueeze(1) < HARMONIC_CUTOFF_HZ).to(f0.dtype)
        return (math.sqrt(2.0) * torch.sin(k * phase.unsqueeze(1)) * keep).sum(dim=1)

    def _noise(self, b: int, s: int, like: torch.Tensor, generator: torch.Generator | None,
               gaussian: bool) -> torch.Tensor:
        if gaussian:
            return torch.randn(b, s, generator=generator, dtype=like.dtype, device=like.device)
        return math.sqrt(3.0) * (2.0 * torch.rand(b, s, generator=generator, dtype=like.dtype,
                                                  device=like.device) - 1.0)

    # -- filters -------------------------------------------------------------------------------------------
    def shapes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned unimodal shapes ``[7, n]`` (peak 1) and their own -3 dB widths (Hz on the 2-kHz support)."""
        n = self.shape_logits.shape[-1]
        half = n // 2
        rising = torch.cumsum(torch.softmax(self.shape_logits[:, :half], dim=-1), dim=-1)
        falling = torch.cumsum(torch.softmax(self.shape_logits[:, half:], dim=-1).flip(-1), dim=-1).flip(-1)
        shape = torch.cat([rising, falling], dim=-1)
        step = FILTER_SUPPORT_HZ / (n - 1)
        left = _crossing(rising)  # in samples from the first one
        right = (half - 1) - _crossing(falling.flip(-1))  # in samples from the first falling one
        width = (half + right - left) * step
        return shape, width

    def filters(self, centre_hz: torch.Tensor, bandwidth_hz: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Power gains ``[B, K, n_fft, T]`` of formants ``index [K]`` (0-5 harmonic, 6 noise) centred at
        ``centre_hz [B, T, K]`` with -3 dB-rescaled width ``bandwidth_hz [B, T, K]``."""
        f = self.freqs.to(centre_hz).view(1, 1, -1, 1)
        centre = centre_hz.permute(0, 2, 1).unsqueeze(2)  # [B, K, 1, T]
        bw = bandwidth_hz.permute(0, 2, 1).unsqueeze(2).clamp_min(1.0)
        if not self.learned_mask:
            alpha = 2.0 * math.sqrt(math.log(2.0))
            return torch.exp(-(f - centre) ** 2 / (2.0 * (bw / alpha + 0.01) ** 2))
        shape, width = self.shapes()
        shape, width = shape[index].to(centre), width[index].to(centre)  # [K, n], [K]
        # Frequency f sits at (f - F) * width / B on the shape's support; grid_sample's x in [-1, 1] spans it.
        x = (f - centre) * width.view(1, -1, 1, 1) / bw / (FILTER_SUPPORT_HZ / 2.0)  # [B, K, n_fft, T]
        b, k, nf, t = x.shape
        grid = torch.stack([x, torch.zeros_like(x)], dim=-1).permute(1, 0, 2, 3, 4).reshape(k, 1, b * nf * t, 2)
        out = F.grid_sample(shape.view(k, 1, 1, -1), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=True)  # [K, 1, 1, B * nf * t]
        return out.view(k, b, nf, t).permute(1, 0, 2, 3)

    # -- synthesis -----------------------------------------------------------------------------------------
    def forward(self, params: tp.Mapping[str, torch.Tensor], waveform: bool = True,
                generator: torch.Generator | None = None, expected_noise: bool = False) -> dict[str, torch.Tensor]:
        """Synthesize from ``params`` (the keys of :data:`PARAMETER_KEYS`, ``[B, T]`` / ``[B, T, 6]``).

        Returns ``output`` (the [-1, 1] dB spectrogram ``[B, n_fft, T]``), ``power`` (``[B, n_fft, T]``) and,
        with ``waveform``, ``waveform [B, T * hop]`` (16 kHz, detached). ``generator`` seeds the noise sources.
        ``expected_noise``: the spectrogram takes the expected power of the noise and background sources (flat,
        their variance times the window energy) instead of one draw's (the waveform still uses a draw): a
        deterministic spectrogram, closest on average to a noisy target (not in the release, which always draws).
        Raises ``KeyError`` / ``ValueError`` (see :func:`check_parameters`).
        """
        b, t = check_parameters(params)
        f0 = params["f0_hz"].float()
        s = t * self.hop
        harm = self.stft(self.harmonic_source(f0))[..., :t]
        noise = self.stft(self._noise(b, s, f0, generator, gaussian=False))[..., :t]
        z = self._noise(b, s, f0, generator, gaussian=True).unsqueeze(1)
        bg_wave = (z if self.background is None else z + self.background(z))[:, 0]
        bg = self.stft(bg_wave)[..., :t]
        energy = self.window.square().sum()

        formant_hz = params["formant_hz"].float()
        bw = params.get("formant_bw_hz")
        bw = formant_bandwidth(formant_hz, self.sex) if bw is None else bw.float()
        centres = torch.cat([formant_hz, params["noise_formant_hz"].float().unsqueeze(-1)], dim=-1)
        widths = torch.cat([bw, params["noise_formant_bw_hz"].float().unsqueeze(-1)], dim=-1)
        masks = self.filters(centres, widths, torch.arange(N_FORMANTS + 1, device=f0.device))  # [B, 7, nf, T]
        amp = params["formant_amp"].float().permute(0, 2, 1).unsqueeze(2)  # [B, 6, 1, T]
        noise_amp = _bins_frames(params["noise_amp"].float())
        harmonic_gain = (amp * masks[:, :N_FORMANTS]).sum(dim=1)
        amp_noise = params.get("formant_amp_noise")
        if amp_noise is None:  # the harmonic formants share what the noise formant leaves, as formant_amp
            amp_noise = (1.0 - noise_amp.unsqueeze(1)) * amp
        else:  # the encoder's 7-way softmax: the six shares and noise_amp already sum to 1
            amp_noise = amp_noise.float().permute(0, 2, 1).unsqueeze(2)
        noise_gain = (amp_noise * masks[:, :N_FORMANTS]).sum(dim=1) + noise_amp * masks[:, N_FORMANTS]

        loud = _bins_frames(params["loudness"].float())
        voicing = _bins_frames(params["voicing"].float())
        bg_gain = F.softplus(self.background_gain) / math.log(2.0) * self.profile.view(1, -1, 1) / energy
        gains = (loud * voicing * harmonic_gain, loud * (1.0 - voicing) * noise_gain, bg_gain.expand_as(noise_gain))
        sources = (harm, noise, bg)
        powers = [x.real.square() + x.imag.square() for x in sources]
        if expected_noise:  # E|X|^2 of white noise is its variance times the window energy, in every bin
            powers[1] = torch.full_like(powers[1], 1.0) * energy
            powers[2] = (bg_wave.square().mean(dim=-1) * energy).view(-1, 1, 1).expand_as(powers[2])
        power = tp.cast(torch.Tensor, sum(g * x for g, x in zip(gains, powers)))
        out = {"output": nsd_spec.db_to_norm(nsd_spec.power_to_db(power)), "power": power}
        if waveform:
            with torch.no_grad():
                spec = sum(g.detach().clamp_min(0).sqrt() * x for g, x in zip(gains, sources))
                # one more, silent frame: the 511-point STFT of T * hop samples has T frames, and the overlap-add needs
                # the next window to reach the last samples
                spec = F.pad(tp.cast(torch.Tensor, spec), (0, 1))
                length = nsd_spec.stft_length(self.n_fft)
                out["waveform"] = torch.istft(spec, n_fft=length, hop_length=self.hop, win_length=length,
                                              window=self.window, center=True, length=s)
        return out


def _crossing(rising: torch.Tensor) -> torch.Tensor:
    """Fractional index ``[K]`` where each non-decreasing row of ``rising [K, n]`` (ending at 1) first reaches
    0.5 (half power), linearly interpolated; 0 when the first sample is already above. Differentiable in the
    values."""
    below = (rising < 0.5).sum(dim=-1)  # a prefix, the row being non-decreasing
    i = (below - 1).clamp(min=0, max=rising.shape[-1] - 2)
    lo = rising.gather(-1, i.unsqueeze(-1))[:, 0]
    hi = rising.gather(-1, (i + 1).unsqueeze(-1))[:, 0]
    frac = ((0.5 - lo) / (hi - lo).clamp_min(1e-6)).clamp(0.0, 1.0)
    return torch.where(below > 0, i.to(rising.dtype) + frac, torch.zeros_like(frac))


def synthesize(params: tp.Mapping[str, torch.Tensor], sex: str = "female", seed: int = 0,
               noise_profile: tp.Sequence[float] | None = None) -> torch.Tensor:
    """A 16-kHz waveform ``[B, T * 128]`` (float32) from physical parameters per 8-ms frame, with an untrained
    :class:`FormantSynthesizer` (triangular formant shapes, white background at -35 dB unless ``noise_profile``).

    ``params``: ``f0_hz``, ``loudness``, ``voicing``, ``noise_formant_hz``, ``noise_formant_bw_hz``,
    ``noise_amp`` ``[B, T]`` and ``formant_hz``, ``formant_amp`` ``[B, T, 6]`` (see the module docstring for units;
    optional ``formant_bw_hz``, ``formant_amp_noise``). ``seed`` fixes the noise sources: the same call gives the
    same waveform. Raises ``KeyError`` / ``ValueError`` for missing keys or bad shapes, ``ValueError`` for an
    unknown ``sex``.
    """
    with torch.random.fork_rng(devices=[]):  # the same untrained synthesizer at every call, global RNG untouched
        torch.manual_seed(0)
        synth = FormantSynthesizer(sex=sex, noise_profile=noise_profile)
    generator = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        return synth({k: torch.as_tensor(v, dtype=torch.float32) for k, v in params.items()},
                     generator=generator)["waveform"]


def smooth_random_parameters(batch: int, frames: int, sex: str = "female", seed: int = 0,
                             knots: int = 8) -> dict[str, torch.Tensor]:
    """Smooth random speech parameters ``[batch, frames]`` / ``[batch, frames, 6]`` within the ranges of ``sex``
    (for tests and synthetic data): each trajectory joins ``knots`` seeded uniform random points linearly; formants
    sorted, their amplitudes falling with rank; loudness a power gain between about 1e-6 (silence, ramping in the
    first and last eighth of the frames) and 1e-2; ``speech [batch, frames]`` is the on-stage mask (loudness above
    1e-4)."""
    g = torch.Generator().manual_seed(int(seed))

    def curve(n: int = 1) -> torch.Tensor:  # [batch, frames, n] in [0, 1]
        points = torch.rand(batch, n, knots, generator=g)
        return F.interpolate(points, size=frames, mode="linear", align_corners=True).permute(0, 2, 1)

    lo, hi = F0_RANGES[check_sex(sex)]
    f_lo = torch.tensor([r[0] for r in FORMANT_RANGES[sex]])
    f_hi = torch.tensor([r[1] for r in FORMANT_RANGES[sex]])
    formants = torch.sort(curve(N_FORMANTS) * (f_hi - f_lo) + f_lo, dim=-1).values
    # amplitudes falling with the formant's rank, as in speech (and as the a2a amplitude-ordering term expects)
    amps = torch.sort(torch.softmax(3.0 * curve(N_FORMANTS), dim=-1), dim=-1, descending=True).values
    t = torch.arange(frames, dtype=torch.float32)
    onset, offset = frames / 8.0, frames * 7.0 / 8.0
    envelope = torch.sigmoid((t - onset) / 2.0) * torch.sigmoid((offset - t) / 2.0)  # [frames]
    loud_db = -60.0 + envelope * (35.0 + 10.0 * curve()[..., 0])
    loudness = torch.pow(10.0, loud_db / 10.0)
    return {"f0_hz": curve()[..., 0] * (hi - lo) + lo, "loudness": loudness,
            "voicing": 0.3 + 0.7 * curve()[..., 0], "formant_hz": formants, "formant_amp": amps,
            "noise_formant_hz": curve()[..., 0] * 4000.0 + 4000.0,
            "noise_formant_bw_hz": curve()[..., 0] * 2000.0 + 1000.0, "noise_amp": 0.5 * curve()[..., 0],
            "speech": (loudness > 1e-4).float()}


__all__ = ["F0_RANGES", "FORMANT_RANGES", "FormantSynthesizer", "N_HARMONICS", "NOISE_FORMANT_RANGE",
           "PARAMETER_KEYS", "SEXES", "check_parameters", "check_sex", "formant_bandwidth", "smooth_random_parameters",
           "synthesize"]
