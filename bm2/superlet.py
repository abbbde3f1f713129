"""The (fractional adaptive) superlet transform, per trial and vectorised.

Source: Moca, Bârzan, Nagy-Dăbâcan & Mureșan (2021), "Time-frequency super-resolution with superlets",
Nat. Commun. 12:337, doi 10.1038/s41467-020-20539-9. Where the paper and the authors' reference code
(TransylvanianInstituteOfNeuroscience/Superlets, MIT, ``python/superlet.py`` and ``matlab-pure/faslt.m``)
differ, bm2 follows the code; each difference is flagged below with "(code)". This is bm2's own
implementation of the published definitions; it was checked against outputs of the reference code.

Definitions
-----------
* Morlet wavelet of centre frequency ``f`` (Hz) with ``c`` cycles: a Gaussian envelope whose SD is
  ``c / (5 f)`` s (the ``c`` cycles span ±2.5 SD), sampled over ±3 SD on an odd number of samples
  ``2 * floor(round(6 * SD * fs) / 2) + 1``, times ``exp(i 2 pi f t)``, divided by the **sum** of the
  Gaussian (L1), so that a sinusoid of amplitude A gives ``|x * psi| ~ A / 2`` and power ``2 |x * psi|^2``
  ~ ``A^2 / 2`` (its mean square). (code) The sampled envelope is the Gaussian of SD ``half / 3`` samples
  with ``half = (n - 1) / 2`` (the support rounded to samples), not exactly ``SD * fs``.
* Per-wavelet power ``P = 2 |x * psi|^2`` with a "same"-size linear convolution (zero padding outside the
  signal; edges are attenuated over about half a wavelet).
* A superlet of order ``o`` at ``f``: wavelets with cycles ``c_i = i * c1`` (multiplicative) or
  ``c_i = c1 + i`` (additive; (code) ``faslt.m`` uses ``c1 + i``, the paper's Methods write ``c1 + i - 1``),
  ``i = 1 .. ceil(o)``.
* Response: the weighted geometric mean ``(prod_{i <= floor(o)} P_i * P_ceil(o) ^ (o - floor(o))) ^ (1 / o)``
  (computed in log space). Order 1 is a plain CWT.
* Adaptive order: linear from ``order[0]`` to ``order[1]`` over the frequencies of interest. (code) Linear in
  the **index** of ``foi`` (``linspace(o_min, o_max, n_freqs)``), which is linear in frequency only for
  evenly spaced ``foi`` (the paper's Eq. 7 is linear in frequency).
* (code) The reference ``superlets()`` averages the power over all leading (trial) axes; bm2 keeps every
  leading axis (per-trial features). Call ``superlet(x).mean(0)`` for the reference behaviour.
* Phase (optional): the angle of the order-weighted sum of the unit phasors ``(x * psi_i) / |x * psi_i|``
  (weights 1 and ``o - floor(o)`` for the last), as in the authors' complex superlet ``superletcx.py``;
  convolution (not correlation) with ``psi``, so ``cos(2 pi f t)`` has phase ``+2 pi f t``.

Tolerance against the reference code (tests/test_superlet.py): see :data:`REFERENCE_RTOL`.
"""

from __future__ import annotations

import typing as tp

import numpy as np

SD_CYCLES = 5.0
"""The wavelet's cycles span this many Gaussian SDs (``SD = c / (SD_CYCLES f)``)."""
SUPPORT_SDS = 6.0
"""The wavelet is sampled over this many SDs (±3)."""
REFERENCE_RTOL = 1e-6
"""Relative tolerance asserted against the reference outputs (stored as float32) on all 3 signals x 5 settings;
the largest relative error observed is 6e-8 (float32 rounding of the stored outputs)."""

CycleRule = tp.Literal["multiplicative", "additive"]


def wavelet_length(freq: float, cycles: float, fs: float) -> int:
    """Number of samples (odd) of the Morlet of ``cycles`` cycles at ``freq`` Hz sampled at ``fs`` Hz."""
    sd = cycles / (SD_CYCLES * freq)
    return int(2 * np.floor(np.round(sd * fs * SUPPORT_SDS) / 2) + 1)


def morlet(freq: float, cycles: float, fs: float) -> np.ndarray:
    """The L1-normalised complex Morlet wavelet, shape ``[n]`` complex128 (``n`` from :func:`wavelet_length`).

    Raises ``ValueError`` for a non-positive frequency, cycle count or rate, or a wavelet under 3 samples.
    """
    if not (freq > 0 and cycles > 0 and fs > 0):
        raise ValueError(f"morlet needs freq, cycles and fs > 0, got {freq}, {cycles}, {fs}")
    n = wavelet_length(freq, cycles, fs)
    if n < 3:
        raise ValueError(f"a Morlet of {cycles} cycles at {freq} Hz is under 3 samples at {fs} Hz; "
                         "raise the cycles or lower the frequency")
    half = (n - 1) // 2
    k = np.arange(n) - half
    envelope = np.exp(-0.5 * (k * (SUPPORT_SDS / 2) / half) ** 2)
    return envelope * np.exp(2j * np.pi * freq * k / fs) / envelope.sum()


def orders_for(n_freqs: int, order: float | tp.Sequence[float]) -> np.ndarray:
    """Superlet order of each of ``n_freqs`` frequencies: constant, or linear from ``order[0]`` to ``order[1]``."""
    lo, hi = (float(order), float(order)) if np.isscalar(order) else (float(order[0]), float(order[-1]))  # type: ignore[index, arg-type]
    if lo < 1 or hi < 1:
        raise ValueError(f"superlet orders must be >= 1, got {order}")
    return np.linspace(lo, hi, n_freqs)


def superlet(x: np.ndarray, fs: float, foi: tp.Sequence[float] | np.ndarray, c1: float = 3.0,
             order: float | tp.Sequence[float] = (1.0, 30.0), rule: CycleRule = "multiplicative",
             phase: bool = False, dtype: tp.Any = np.float32, out: np.ndarray | None = None) -> tp.Any:
    """Superlet power of ``x`` (per trial, every leading axis kept).

    Parameters
    ----------
    x : array ``[..., n_times]`` (real; any unit U), sampled at ``fs`` Hz.
    fs : sampling rate in Hz.
    foi : frequencies of interest in Hz, shape ``[n_freqs]``, each in ``(0, fs / 2]``.
    c1 : cycles of the base wavelet.
    order : a fixed order (multiplicative SLT, ``(o, o)`` likewise), or ``(o_min, o_max)`` for the fractional
        adaptive transform (order linear over the ``foi`` index; see the module notes). ``1`` = plain CWT.
    rule : ``"multiplicative"`` (``c_i = i c1``, the reference Python code) or ``"additive"`` (``c1 + i``).
    phase : also return the phase (radians, ``[..., n_freqs, n_times]``).
    dtype : dtype of the outputs (computed in float64).
    out : optional array ``[..., n_freqs, n_times]`` (e.g. a slice of a memory map) the power is written
        into and returned; it bounds memory to a few ``[..., n_fft]`` buffers whatever the number of frequencies.

    Returns
    -------
    power ``[..., n_freqs, n_times]`` in U^2 (a unit sinusoid gives ~0.5 at its frequency), or
    ``(power, phase)`` when ``phase``.

    Raises ``ValueError`` for an empty signal, a frequency outside ``(0, fs / 2]``, an order < 1, ``c1 <= 0``
    or an unknown rule.
    """
    from scipy import fft

    x = np.asarray(x, dtype=np.float64)
    foi = np.asarray(foi, dtype=np.float64).reshape(-1)
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"superlet needs a signal [..., n_times] with n_times > 0, got shape {x.shape}")
    if foi.size == 0 or not ((foi > 0).all() and (foi <= fs / 2).all()):
        raise ValueError(f"frequencies of interest must lie in (0, fs/2 = {fs / 2}] Hz, got {foi}")
    if not c1 > 0:
        raise ValueError(f"c1 must be > 0, got {c1}")
    if rule not in ("multiplicative", "additive"):
        raise ValueError(f"unknown cycle rule {rule!r} (multiplicative | additive)")
    orders = orders_for(len(foi), order)
    n = x.shape[-1]

    def cycles(i: int) -> float:
        return i * c1 if rule == "multiplicative" else c1 + i

    longest = max(wavelet_length(f, cycles(int(np.ceil(o))), fs) for f, o in zip(foi, orders))
    nfft = fft.next_fast_len(n + longest - 1)
    spectrum = fft.fft(x, nfft, axis=-1)
    lead = x.shape[:-1]
    if out is not None and out.shape != lead + (len(foi), n):
        raise ValueError(f"out has shape {out.shape}, expected {lead + (len(foi), n)}")
    power = np.empty(lead + (len(foi), n), dtype=dtype) if out is None else out
    angle = np.empty(lead + (len(foi), n), dtype=dtype) if phase else None
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, (f, o) in enumerate(zip(foi, orders)):
            log_power = np.zeros(lead + (n,))
            phasor = np.zeros(lead + (n,), dtype=np.complex128) if phase else None
            n_int = int(np.floor(o))
            frac = o - n_int
            for i in range(1, int(np.ceil(o)) + 1):
                weight = 1.0 if i <= n_int else frac
                if weight == 0:
                    continue
                w = morlet(f, cycles(i), fs)
                half = (len(w) - 1) // 2
                z = fft.ifft(spectrum * fft.fft(w, nfft), axis=-1)[..., half:half + n]
                mag2 = z.real ** 2 + z.imag ** 2
                log_power += weight * np.log(2 * mag2)
                if phasor is not None:
                    phasor += weight * np.where(mag2 > 0, z / np.sqrt(mag2), 0)
            power[..., j, :] = np.exp(log_power / o)
            if angle is not None and phasor is not None:
                angle[..., j, :] = np.angle(phasor)
    return (power, angle) if phase else power


def foi_from_config(foi: tp.Any) -> np.ndarray:
    """Frequencies of interest from a config value: a list of Hz, or ``{fmin, fmax, n}`` (evenly spaced)."""
    if isinstance(foi, tp.Mapping):
        missing = {"fmin", "fmax", "n"} - set(foi)
        if missing:
            raise ValueError(f"preprocess.superlet.foi as a mapping needs fmin, fmax and n (missing {sorted(missing)})")
        return np.linspace(float(foi["fmin"]), float(foi["fmax"]), int(foi["n"]))
    out = np.asarray(list(foi), dtype=np.float64)
    if out.ndim != 1 or out.size == 0:
        raise ValueError(f"preprocess.superlet.foi must be a non-empty list of Hz or {{fmin, fmax, n}}, got {foi}")
    return out
