"""Brain-signal preprocessing: channel picking, filtering and resampling into the cache, then scaling.

The slow part (filter + resample of the whole recording) runs once per recording and parameter set and
is stored in the :class:`~bm2.cache.Cache`; it works on chunks of channels so that a long recording is
never loaded whole into memory. The robust scaler depends on the train split, so it is fitted in the
dataset (on training windows only) and applied on the fly, with clamping.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
from fractions import Fraction

import numpy as np

from .cache import Cache, CacheEntry, EntryWriter
from .studies.base import Recording

logger = logging.getLogger(__name__)

PREPROCESS_VERSION = "2"  # 2: exact resampling ratios, effective rate recorded
DATA_CHANNEL_TYPES = ("meg", "eeg", "ecog", "seeg")
TF_STEPS = (None, "superlet")
TF_CHUNK_CHANNELS = 4
"""Channels transformed at a time by the TF step (its buffers are a few ``[chunk, n_fft]`` complex arrays)."""


class RecordingDataError(ValueError):
    """A recording holds unusable samples (NaN / inf); the message names the recording and channels."""


@dataclasses.dataclass(frozen=True)
class PreprocessParams:
    """Parameters of :func:`preprocess` (each one enters the cache key).

    Parameters
    ----------
    sample_rate : output rate in Hz (the model rate; 120 in the paper). The cache entry records the
        effective rate, which differs (by < 1e-5 relative) when no exact ratio is usable.
    picks : channel types to keep (mne names: meg, mag, grad, eeg, ecog, seeg).
    notch : line-noise frequencies to notch out (harmonics included if listed), or empty.
    highpass, lowpass : cut-offs in Hz (None = no filter); zero-phase 4th-order Butterworth.
    chunk_channels : channels filtered at a time (bounds memory; does not change results).
    tf : time-frequency step after resampling: None (the cached brain is ``[C, T]``) or ``"superlet"``
        (the cached brain is the superlet power ``[C, F, T]``, see :mod:`bm2.superlet`; meta ``foi`` in Hz).
    superlet : settings of the superlet step (used only when ``tf == "superlet"``): ``foi`` (a list of Hz,
        or ``{fmin, fmax, n}``), else ``fmin``, ``fmax``, ``n_freqs`` (evenly spaced, Hz), ``c1`` (base
        cycles, default 3), ``order`` (``[min, max]`` or one number, default ``[1, 30]``), ``rule``
        (``multiplicative`` default | ``additive``), ``log`` (store ``log10(power + eps)``, default false)
        and ``eps`` (default 1e-30, in the signal's SI unit^2 (V^2 for EEG): far below any EEG / MEG power, it
        only keeps ``log10`` of an exactly flat stretch finite) and ``phase`` (default false: also store the
        superlet's phase, radians in ``[-pi, pi]``, as ``F`` more rows of the frequency axis: ``[C, 2F, T]``, power
        rows first; an optional second input, as the original's FieldTrip phase).
    """

    sample_rate: float = 120.0
    picks: tuple[str, ...] = DATA_CHANNEL_TYPES
    notch: tuple[float, ...] = ()
    highpass: float | None = None
    lowpass: float | None = None
    chunk_channels: int = 32
    tf: str | None = None
    superlet: tp.Mapping[str, tp.Any] | None = None

    def __post_init__(self) -> None:
        if self.tf not in TF_STEPS:
            raise ValueError(f"preprocess.tf must be one of {list(TF_STEPS)}, got {self.tf!r}")
        if self.tf == "superlet":
            self.superlet_settings()  # fail early on bad settings

    def __hash__(self) -> int:
        return hash(repr(self.key()))

    def superlet_settings(self) -> dict[str, tp.Any]:
        """The resolved ``preprocess.superlet`` settings (``foi`` as a list of Hz); ``ValueError`` if unusable."""
        from .superlet import foi_from_config

        given = dict(self.superlet or {})
        unknown = set(given) - {"foi", "fmin", "fmax", "n_freqs", "c1", "order", "rule", "log", "eps", "phase"}
        if unknown:
            raise ValueError(f"unknown preprocess.superlet keys {sorted(unknown)} "
                             "(foi, fmin, fmax, n_freqs, c1, order, rule, log, eps, phase)")
        if given.get("foi") is not None:
            foi = foi_from_config(given["foi"])
        elif all(given.get(k) is not None for k in ("fmin", "fmax", "n_freqs")):
            foi = foi_from_config({"fmin": given["fmin"], "fmax": given["fmax"], "n": given["n_freqs"]})
        else:
            raise ValueError("preprocess.tf=superlet needs preprocess.superlet.foi (a list of Hz) or "
                             "fmin, fmax and n_freqs (evenly spaced)")
        order = given.get("order", (1.0, 30.0))
        order = [float(order)] * 2 if isinstance(order, (int, float)) else [float(o) for o in order]
        if len(order) != 2 or min(order) < 1:
            raise ValueError(f"preprocess.superlet.order must be one order or [min, max], each >= 1, got {order}")
        rule = str(given.get("rule", "multiplicative"))
        if rule not in ("multiplicative", "additive"):
            raise ValueError(f"preprocess.superlet.rule must be multiplicative or additive, got {rule!r}")
        c1 = float(given.get("c1", 3.0))
        if not c1 > 0:
            raise ValueError(f"preprocess.superlet.c1 must be > 0, got {c1}")
        out = {"foi": [float(f) for f in foi], "c1": c1, "order": order, "rule": rule,
               "log": bool(given.get("log", False))}
        if out["log"]:  # the floor of the log only: power entries keep their key whatever eps says
            out["eps"] = float(given.get("eps", 1e-30))
        if given.get("phase"):  # only when on: the keys of power-only entries stay as they were
            out["phase"] = True
        return out

    def key(self) -> dict[str, tp.Any]:
        """Parameters that change the output (chunking does not; without a TF step, the key of version 2)."""
        out = dataclasses.asdict(self)
        out.pop("chunk_channels")
        out["picks"] = list(self.picks)
        out["notch"] = list(self.notch)
        out.pop("tf")
        out.pop("superlet")
        if self.tf == "superlet":
            out["tf"] = {"superlet": self.superlet_settings()}
        return out


def pick_channels(raw: tp.Any, picks: tp.Sequence[str]) -> list[str]:
    """Names of the good channels of ``raw`` whose type is in ``picks`` (bads excluded)."""
    import mne

    kwargs: dict[str, tp.Any] = {t: False for t in ("meg", "eeg", "ecog", "seeg", "stim", "eog", "ecg", "misc")}
    for p in picks:
        if p in ("mag", "grad"):
            kwargs["meg"] = p
        else:
            kwargs[p] = True
    idx = mne.pick_types(raw.info, exclude="bads", **kwargs)
    names = [raw.ch_names[i] for i in idx]
    if not names:
        types = sorted(set(raw.get_channel_types()))
        raise RecordingDataError(f"no channel of types {list(picks)} in the recording (it has {types}); "
                                 "set `preprocess.picks` accordingly")
    return names


def _filters(params: PreprocessParams, sfreq: float) -> list[np.ndarray]:
    """Second-order sections of the notch / high-pass / low-pass filters, in application order."""
    from scipy import signal  # imported here: a run with everything cached never needs it (0.6 s)

    nyq = sfreq / 2
    sos: list[np.ndarray] = []
    for freq in params.notch:
        if freq < nyq:
            b, a = signal.iirnotch(freq, Q=30.0, fs=sfreq)
            sos.append(signal.tf2sos(b, a))
    if params.highpass:
        sos.append(signal.butter(4, params.highpass, btype="highpass", fs=sfreq, output="sos"))
    if params.lowpass and params.lowpass < nyq:
        sos.append(signal.butter(4, params.lowpass, btype="lowpass", fs=sfreq, output="sos"))
    return sos


MAX_RESAMPLE_FACTOR = 100_000
"""Largest up / down factor of the polyphase resampling (its anti-aliasing filter has 20 x that many taps)."""


def _declared(rate: float) -> Fraction:
    """A rate as written (the shortest decimal that gives the float back): 2034.5101 -> 20345101 / 10000."""
    return Fraction(repr(float(rate)))


def resample_ratio(sfreq: float, sample_rate: float) -> Fraction:
    """The ``up / down`` ratio used to resample from ``sfreq`` to ``sample_rate`` (both in Hz).

    Exact whenever both factors stay under :data:`MAX_RESAMPLE_FACTOR` (600 -> 120: 1/5; 1017.25 -> 120:
    480/4069; 599.9 -> 120: 1200/5999); otherwise (2034.5101 -> 120 would need 1200000/20345101) the closest
    ratio with both factors under the bound, whose rate :func:`effective_rate` gives (within 1e-5 relative
    of ``sample_rate``, usually far closer).
    """
    if not (sfreq > 0 and sample_rate > 0):
        raise ValueError(f"sampling rates must be > 0, got {sfreq} -> {sample_rate}")
    exact = _declared(sample_rate) / _declared(sfreq)
    if max(exact.numerator, exact.denominator) <= MAX_RESAMPLE_FACTOR:
        return exact
    if exact <= 1:  # downsampling: the denominator is the larger factor
        return exact.limit_denominator(MAX_RESAMPLE_FACTOR)
    return 1 / (1 / exact).limit_denominator(MAX_RESAMPLE_FACTOR)


def effective_rate(sfreq: float, up: int, down: int) -> float:
    """The true rate of a signal at ``sfreq`` resampled by ``up / down``: output sample k lies at k / rate s.

    Computed exactly on the declared rate, so it is ``sample_rate`` itself whenever the ratio is exact.
    """
    return float(_declared(sfreq) * up / down)


def resampled_length(n_times: int, sfreq: float, sample_rate: float) -> tuple[int, int, int]:
    """(up, down, output length) of a polyphase resampling from ``sfreq`` to ``sample_rate``."""
    ratio = resample_ratio(sfreq, sample_rate)
    up, down = ratio.numerator, ratio.denominator
    return up, down, -(-int(n_times) * up // down)  # ceil(n * up / down), the length resample_poly gives


def preprocess(recording: Recording, cache: Cache, params: PreprocessParams) -> CacheEntry:
    """The preprocessed signal of ``recording``: arrays ``brain`` (C, T) float32 and ``positions`` (C, 2).

    With ``params.tf == "superlet"``, ``brain`` is the superlet power (C, F, T) float32 of the resampled
    signal (in the signal's SI unit squared: V^2 for EEG, T^2 for magnetometers; or ``log10`` of it with
    ``superlet.log``; the transform sees the whole recording, so only its two ends suffer edge effects),
    computed :data:`TF_CHUNK_CHANNELS` channels at a time, and the meta holds ``foi`` (Hz) and ``tf``.

    A recording of trials laid end to end (:attr:`~bm2.studies.base.Recording.trial_samples` set, e.g. lee2024's
    raw ``x_data``) is processed **trial by trial**: each trial's own mean is removed (only ahead of filters or
    resampling), filters, resampling and the superlet run on that trial alone (zero-padded / edge-handled at its
    borders), so a trial's output never depends on its neighbours; the entry's key records the trial length.
    Each trial must resample to a whole number of samples (``ValueError`` naming the recording otherwise).

    The manifest meta holds ``ch_names``, ``sample_rate`` and ``n_times``. ``sample_rate`` is the effective
    rate of ``brain`` (sample k lies at k / sample_rate s from the start of the raw): ``params.sample_rate``
    itself when the resampling ratio is exact, else the rate the closest usable ratio gives (see
    :func:`resample_ratio`). Place events and features with it, never with ``params.sample_rate``, or
    they drift (58 ms over an hour at 2034.5101 Hz with a ratio limited to 1000). The meta also holds
    ``requested_sample_rate``, ``raw_sfreq`` and the ``resample_up`` / ``resample_down`` factors.
    """
    spectra = recording.spectra()
    if spectra is not None:
        return _precomputed(recording, spectra, cache, params)
    key: dict[str, tp.Any] = {"recording": recording.signal_uid, "params": params.key()}  # events do not shape it
    per_trial = recording.trial_samples
    if per_trial is not None:  # a different output from the same signal and params: its own entry
        key["per_trial"] = int(per_trial)

    def build(writer: EntryWriter) -> None:
        raw = recording.raw()
        names = pick_channels(raw, params.picks)
        sfreq = float(raw.info["sfreq"])
        if per_trial is None:
            n_trials = 1
            up, down, n_out = resampled_length(raw.n_times, sfreq, params.sample_rate)
            trial_out = n_out
        else:
            n_trials, trial_out = _trial_layout(recording, raw.n_times, int(per_trial), sfreq, params.sample_rate)
            up, down, _ = resampled_length(int(per_trial), sfreq, params.sample_rate)
            n_out = n_trials * trial_out
        tf = params.superlet_settings() if params.tf == "superlet" else None
        if tf is not None:
            rate = effective_rate(sfreq, up, down)
            if max(tf["foi"]) > rate / 2:
                raise ValueError(f"preprocess.superlet.foi reaches {max(tf['foi'])} Hz, above the Nyquist "
                                 f"frequency {rate / 2:g} Hz of preprocess.sample_rate; lower foi or raise the rate")
            rows = len(tf["foi"]) * (2 if tf.get("phase") else 1)  # power, then phase
            out = writer.create("brain", (len(names), rows, n_out), np.float32)
        else:
            out = writer.create("brain", (len(names), n_out), np.float32)
        sos = _filters(params, sfreq)
        from scipy import signal

        chunks = range(0, len(names), params.chunk_channels)
        with writer.progress(len(names), f"preprocess {recording.subject_uid} {recording.session}") as bar:
            for start in chunks:
                sub = names[start:start + params.chunk_channels]
                data = raw.get_data(picks=sub)
                bad = ~np.isfinite(data).all(axis=1)
                if bad.any():
                    raise RecordingDataError(
                        f"{recording!r}: non-finite samples (NaN or inf) in channels "
                        f"{[n for n, b in zip(sub, bad) if b][:5]}; mark them as bad (raw.info['bads']) "
                        "or repair the file")
                if per_trial is not None:
                    # [c, trials * t] -> [c, trials, t]: every step below runs along the last axis, trial by trial
                    data = data.reshape(len(sub), n_trials, int(per_trial))
                    if sos or up != down:  # a trial's own mean: its neighbours' must not shape it
                        data = data - data.mean(axis=-1, keepdims=True)
                else:
                    data = data - data.mean(axis=-1, keepdims=True)  # keeps filters free of a huge DC step
                for s in sos:
                    data = signal.sosfiltfilt(s, data, axis=-1)
                if up != down:
                    data = signal.resample_poly(data, up, down, axis=-1)
                data = data[..., :trial_out]
                if tf is None:
                    out[start:start + len(sub)] = data.reshape(len(sub), n_out).astype(np.float32)
                elif per_trial is None:
                    _superlet_into(out, start, data, effective_rate(sfreq, up, down), tf)
                else:
                    _superlet_trials_into(out, start, data, effective_rate(sfreq, up, down), tf)
                bar.update(len(sub))
        writer.save("positions", recording.sensor_positions(names))
        rate = effective_rate(sfreq, up, down)
        if rate != params.sample_rate:
            logger.info("%r: %g Hz -> %g Hz has no usable exact ratio; resampled by %d/%d, i.e. to %.9g Hz "
                        "(events and features are placed at that rate)", recording, sfreq, params.sample_rate,
                        up, down, rate)
        writer.meta.update(ch_names=names, sample_rate=rate, n_times=n_out, raw_sfreq=sfreq,
                           requested_sample_rate=params.sample_rate, resample_up=up, resample_down=down)
        if tf is not None:
            writer.meta.update(tf="superlet", foi=tf["foi"], phase=bool(tf.get("phase")))

    return cache.get("preprocess", key, PREPROCESS_VERSION, build, desc=f"preprocess {recording!r}")


PRECOMPUTED_TRIALS = 64
"""Trials read at a time when storing precomputed spectra (bounds memory: 64 x 127 x 64 x 512 float32 = 1 GiB)."""


def _precomputed(recording: Recording, spectra: tp.Any, cache: Cache, params: PreprocessParams) -> CacheEntry:
    """Store the spectra a release already holds (:meth:`Recording.spectra`, trials end to end) as the
    ``[C, F, T]`` brain, multiplied by ``spectra.scale`` (into the unit of the superlet step: V^2 for EEG) and
    resampled in time to ``params.sample_rate`` trial by trial (a trial's length must map to a whole number of
    samples). Filters and a TF step would apply to a signal that is not there: they are errors."""
    if params.tf is not None or params.notch or params.highpass or params.lowpass:
        raise ValueError(f"{recording!r} holds time-frequency spectra already (the release's): set "
                         "preprocess.tf=null and leave preprocess.notch / highpass / lowpass empty (they apply to "
                         "raw signals; use the study's raw variant for them)")
    n_trials, n_channels, n_freqs, n_times = spectra.shape
    up, down, n_out = resampled_length(n_times, spectra.sfreq, params.sample_rate)
    if n_out * down != n_times * up:
        raise ValueError(f"{recording!r}: trials of {n_times} samples at {spectra.sfreq:g} Hz are not a whole number "
                         f"of samples at preprocess.sample_rate={params.sample_rate:g}; pick a rate that divides them")
    scale = float(getattr(spectra, "scale", 1.0))
    key = {"recording": recording.signal_uid, "params": params.key(), "precomputed": "spectra", "scale": scale}

    def build(writer: EntryWriter) -> None:
        from scipy import signal

        out = writer.create("brain", (n_channels, n_freqs, n_trials * n_out), np.float32)
        with writer.progress(n_trials, f"spectra {recording.subject_uid}") as bar:
            for start in range(0, n_trials, PRECOMPUTED_TRIALS):
                block = np.asarray(spectra.read(slice(None), slice(start, start + PRECOMPUTED_TRIALS)), np.float32)
                if not np.isfinite(block).all():
                    raise RecordingDataError(f"{recording!r}: non-finite values (NaN or inf) in trials "
                                             f"{start}..{start + len(block) - 1} of the spectra")
                if scale != 1.0:  # to the unit of bm2's superlet step (see Spectra.scale)
                    block = block * np.float32(scale)
                if up != down:
                    block = signal.resample_poly(block, up, down, axis=-1)[..., :n_out].astype(np.float32)
                # [trials, C, F, T'] -> [C, F, trials * T']: trials end to end on one timeline
                out[:, :, start * n_out:(start + len(block)) * n_out] = block.transpose(1, 2, 0, 3).reshape(
                    n_channels, n_freqs, -1)
                bar.update(len(block))
        writer.save("positions", recording.sensor_positions(spectra.ch_names))
        writer.meta.update(ch_names=list(spectra.ch_names), sample_rate=effective_rate(spectra.sfreq, up, down),
                           n_times=n_trials * n_out, raw_sfreq=float(spectra.sfreq),
                           requested_sample_rate=params.sample_rate, resample_up=up, resample_down=down,
                           tf="precomputed", foi=None if spectra.foi is None else [float(f) for f in spectra.foi])

    return cache.get("preprocess", key, PREPROCESS_VERSION, build, desc=f"spectra {recording!r}")


def _trial_layout(recording: Recording, n_times: int, per_trial: int, sfreq: float,
                  sample_rate: float) -> tuple[int, int]:
    """``(n_trials, samples per trial after resampling)`` of a recording of trials laid end to end
    (:attr:`~bm2.studies.base.Recording.trial_samples`); ``ValueError`` naming the recording when the signal is
    not a whole number of trials or a trial does not resample to a whole number of samples."""
    if per_trial <= 0 or n_times % per_trial:
        raise ValueError(f"{recording!r}: {n_times} samples are not a whole number of trials of {per_trial} samples "
                         "(Recording.trial_samples)")
    up, down, trial_out = resampled_length(per_trial, sfreq, sample_rate)
    if trial_out * down != per_trial * up:
        raise ValueError(f"{recording!r}: trials of {per_trial} samples at {sfreq:g} Hz are not a whole number of "
                         f"samples at preprocess.sample_rate={sample_rate:g}; pick a rate that divides them")
    return int(n_times) // per_trial, int(trial_out)


def _transform(x: np.ndarray, rate: float, tf: dict[str, tp.Any]) -> np.ndarray:
    """Superlet power (``log10`` with ``tf["log"]``) of ``x [..., T]`` -> ``[..., F, T]``, or with ``tf["phase"]``
    power then phase (radians) -> ``[..., 2F, T]``."""
    from .superlet import superlet

    result = superlet(x, rate, tf["foi"], tf["c1"], tf["order"], rule=tf["rule"], phase=bool(tf.get("phase")))
    power, angle = result if tf.get("phase") else (result, None)
    if tf["log"]:
        power = np.log10(power + np.float32(tf["eps"]))
    return power if angle is None else np.concatenate([power, angle], axis=-2)


def _superlet_into(out: np.ndarray, start: int, data: np.ndarray, rate: float, tf: dict[str, tp.Any]) -> None:
    """Superlet power of ``data`` [c, T] into ``out[start:start + c]`` ([C, F, T], or [C, 2F, T] with phase), a few
    channels at a time."""
    for i in range(0, len(data), TF_CHUNK_CHANNELS):
        block = data[i:i + TF_CHUNK_CHANNELS]
        out[start + i:start + i + len(block)] = _transform(block, rate, tf)


TF_CHUNK_TRIALS = 256
"""Trials transformed at a time by the per-trial TF step (with :data:`TF_CHUNK_CHANNELS`, bounds its buffers)."""


def _superlet_trials_into(out: np.ndarray, start: int, data: np.ndarray, rate: float,
                          tf: dict[str, tp.Any]) -> None:
    """Superlet power of each trial of ``data`` [c, n_trials, t] into ``out[start:start + c]`` ([C, F, n_trials *
    t], trials end to end): the wavelets see one trial, zero-padded at its edges, never its neighbours."""
    c, n_trials, t = data.shape
    for i in range(0, c, TF_CHUNK_CHANNELS):
        rows = out[start + i:start + min(i + TF_CHUNK_CHANNELS, c)]
        view = rows.reshape(len(rows), rows.shape[1], n_trials, t)  # a view: rows are whole C-contiguous slices
        for k in range(0, n_trials, TF_CHUNK_TRIALS):
            block = data[i:i + TF_CHUNK_CHANNELS, k:k + TF_CHUNK_TRIALS]
            view[:, :, k:k + block.shape[1]] = _transform(block, rate, tf).transpose(0, 2, 1, 3)  # [c', n', F, t]


@dataclasses.dataclass
class RobustScaler:
    """Per-channel median / IQR scaling followed by clamping to ``±max_scale`` (None = no clamp)."""

    center: np.ndarray
    scale: np.ndarray
    max_scale: float | None = 20.0

    @classmethod
    def fit(cls, samples: np.ndarray, max_scale: float | None = 20.0) -> RobustScaler:
        """Fit on ``samples`` of shape (C, N) (training windows concatenated in time)."""
        q25, center, q75 = np.quantile(samples, [0.25, 0.5, 0.75], axis=1)  # one partition pass, not three
        scale = q75 - q25
        scale = np.where(scale > 0, scale, 1.0)  # flat channels stay flat rather than exploding
        return cls(center.astype(np.float32), scale.astype(np.float32), max_scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scale ``x`` (C, T) and clamp."""
        y = (x - self.center[:, None]) / self.scale[:, None]
        if self.max_scale is not None:
            np.clip(y, -self.max_scale, self.max_scale, out=y)
        return y


@dataclasses.dataclass
class StandardScaler:
    """Per-dimension mean / std standardisation (used for the speech features)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, samples: np.ndarray) -> StandardScaler:
        """Fit on ``samples`` of shape (D, N)."""
        std = samples.std(axis=1)
        return cls(samples.mean(axis=1).astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Standardise ``x`` (D, T)."""
        return (x - self.mean[:, None]) / self.std[:, None]
