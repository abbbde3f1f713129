"""Speech-like stimuli for the synthetic study: a small lexicon, a sentence grammar and a formant synthesiser.

The audio is not intelligible speech, but it has the properties that matter to a brain-decoding pipeline:
word and phoneme timings known to the sample, phoneme-specific spectra (formants for vowels, noise bands
for fricatives, bursts for stops), a moving pitch, and smooth envelopes.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ...events import ARPABET

SAMPLE_RATE = 16_000

# Word classes of the sentence grammar; pronunciations use the 39 ARPABET classes (no stress digits).
LEXICON: dict[str, dict[str, str]] = {
    "det": {"the": "DH AH", "this": "DH IH S", "that": "DH AE T", "my": "M AY", "our": "AW ER",
            "every": "EH V R IY", "some": "S AH M", "one": "W AH N"},
    "name": {"anna": "AE N AH", "david": "D EY V IH D", "maria": "M AA R IY AH", "peter": "P IY T ER",
             "john": "JH AA N", "sarah": "S EH R AH"},
    "noun": {"dog": "D AO G", "cat": "K AE T", "house": "HH AW S", "garden": "G AA R D AH N",
             "river": "R IH V ER", "window": "W IH N D OW", "teacher": "T IY CH ER", "child": "CH AY L D",
             "letter": "L EH T ER", "table": "T EY B AH L", "city": "S IH T IY", "bird": "B ER D",
             "book": "B UH K", "music": "M Y UW Z IH K", "morning": "M AO R N IH NG", "boat": "B OW T",
             "forest": "F AO R AH S T", "road": "R OW D", "doctor": "D AA K T ER", "apple": "AE P AH L",
             "kitchen": "K IH CH AH N", "picture": "P IH K CH ER", "mountain": "M AW N T AH N",
             "friend": "F R EH N D", "voice": "V OY S", "water": "W AO T ER", "story": "S T AO R IY",
             "door": "D AO R", "village": "V IH L AH JH", "shoe": "SH UW", "fish": "F IH SH",
             "treasure": "T R EH ZH ER", "thing": "TH IH NG", "sugar": "SH UH G ER", "ocean": "OW SH AH N",
             "bridge": "B R IH JH", "boy": "B OY", "girl": "G ER L", "light": "L AY T", "clock": "K L AA K",
             "song": "S AO NG", "bottle": "B AA T AH L"},
    "verb": {"saw": "S AO", "found": "F AW N D", "opened": "OW P AH N D", "painted": "P EY N T IH D",
             "heard": "HH ER D", "carried": "K AE R IY D", "watched": "W AA CH T", "liked": "L AY K T",
             "moved": "M UW V D", "visited": "V IH Z IH T IH D", "cleaned": "K L IY N D",
             "pushed": "P UH SH T", "followed": "F AA L OW D", "wanted": "W AA N T IH D", "took": "T UH K",
             "brought": "B R AO T", "loved": "L AH V D", "showed": "SH OW D"},
    "adj": {"big": "B IH G", "small": "S M AO L", "old": "OW L D", "red": "R EH D", "green": "G R IY N",
            "quiet": "K W AY AH T", "happy": "HH AE P IY", "yellow": "Y EH L OW", "bright": "B R AY T",
            "heavy": "HH EH V IY", "little": "L IH T AH L", "warm": "W AO R M", "strange": "S T R EY N JH",
            "smooth": "S M UW DH"},
    "prep": {"near": "N IH R", "under": "AH N D ER", "behind": "B IH HH AY N D", "with": "W IH DH",
             "across": "AH K R AO S", "beside": "B IH S AY D", "toward": "T AO R D", "inside": "IH N S AY D"},
    "adv": {"today": "T AH D EY", "again": "AH G EH N", "slowly": "S L OW L IY",
            "yesterday": "Y EH S T ER D EY", "outside": "AW T S AY D"},
}
PRONUNCIATIONS: dict[str, tuple[str, ...]] = {
    word: tuple(pron.split()) for group in LEXICON.values() for word, pron in group.items()}
WORDS: tuple[str, ...] = tuple(PRONUNCIATIONS)


@dataclasses.dataclass(frozen=True)
class Phone:
    """Acoustic description of one ARPABET class for the synthesiser."""

    kind: str  # vowel, diphthong, glide, nasal, fricative, stop, affricate, aspirate
    voicing: float  # amplitude of the harmonic (voiced) part
    formants: tuple[float, float, float] = (500.0, 1500.0, 2500.0)
    formants_end: tuple[float, float, float] | None = None  # diphthong glide target
    band: tuple[float, float] | None = None  # noise band of fricatives / bursts
    noise: float = 0.0  # amplitude of the noise part


def _phones() -> dict[str, Phone]:
    vowels = {"IY": (270, 2290, 3010), "IH": (390, 1990, 2550), "EH": (530, 1840, 2480), "AE": (660, 1720, 2410),
              "AA": (730, 1090, 2440), "AO": (570, 840, 2410), "UH": (440, 1020, 2240), "UW": (300, 870, 2240),
              "AH": (640, 1190, 2390), "ER": (490, 1350, 1690)}
    diphthongs = {"EY": ((480, 1900, 2550), (330, 2200, 2900)), "AY": ((700, 1200, 2500), (350, 2100, 2800)),
                  "AW": ((700, 1200, 2500), (400, 900, 2300)), "OY": ((550, 850, 2400), (350, 2000, 2700)),
                  "OW": ((520, 1000, 2400), (370, 800, 2300))}
    p: dict[str, Phone] = {k: Phone("vowel", 1.0, v) for k, v in vowels.items()}
    p.update({k: Phone("diphthong", 1.0, a, b) for k, (a, b) in diphthongs.items()})
    p.update({"W": Phone("glide", 0.6, (300, 610, 2200)), "Y": Phone("glide", 0.6, (260, 2070, 3020)),
              "R": Phone("glide", 0.6, (310, 1060, 1380)), "L": Phone("glide", 0.6, (360, 1300, 2800)),
              "M": Phone("nasal", 0.35, (250, 900, 2200)), "N": Phone("nasal", 0.35, (250, 1500, 2500)),
              "NG": Phone("nasal", 0.35, (250, 2000, 2700))})
    fricatives = {"F": ((1500, 7500), 0.12, 0.0), "TH": ((2200, 7500), 0.1, 0.0), "S": ((4000, 7800), 0.4, 0.0),
                  "SH": ((2000, 5000), 0.4, 0.0), "V": ((1500, 7500), 0.1, 0.3), "DH": ((2200, 7500), 0.08, 0.3),
                  "Z": ((4000, 7800), 0.25, 0.3), "ZH": ((2000, 5000), 0.25, 0.3), "HH": ((400, 5000), 0.12, 0.0)}
    for k, (band, noise, voicing) in fricatives.items():
        kind = "aspirate" if k == "HH" else "fricative"
        p[k] = Phone(kind, voicing, (280, 1400, 2500), band=band, noise=noise)
    stops = {"P": (500, 2000), "B": (500, 2000), "T": (3000, 7000), "D": (3000, 7000), "K": (1500, 3500),
             "G": (1500, 3500)}
    for k, band in stops.items():
        p[k] = Phone("stop", 0.06 if k in "BDG" else 0.0, (250, 1200, 2400), band=band, noise=0.5)
    p["CH"] = Phone("affricate", 0.0, band=(2000, 5000), noise=0.4)
    p["JH"] = Phone("affricate", 0.25, (280, 1400, 2500), band=(2000, 5000), noise=0.3)
    return p


PHONES: dict[str, Phone] = _phones()
# Typical duration range (s) of each kind, before a word's total is brought into [MIN_WORD, MAX_WORD].
DURATIONS = {"vowel": (0.09, 0.16), "diphthong": (0.13, 0.19), "glide": (0.05, 0.09), "nasal": (0.06, 0.1),
             "fricative": (0.08, 0.14), "aspirate": (0.05, 0.08), "stop": (0.06, 0.1), "affricate": (0.09, 0.14)}
MIN_PHONE, MAX_PHONE = 0.05, 0.2
MIN_WORD, MAX_WORD = 0.25, 0.7
assert set(PHONES) == set(ARPABET)
assert all(set(p) <= set(ARPABET) for p in PRONUNCIATIONS.values())


def make_sentences(n: int, rng: np.random.Generator, min_words: int = 4, max_words: int = 9) -> list[str]:
    """``n`` distinct sentences of ``min_words``-``max_words`` words drawn from a small grammar."""
    pick = {k: sorted(v) for k, v in LEXICON.items()}

    def choose(kind: str) -> str:
        return pick[kind][rng.integers(len(pick[kind]))]

    def noun_phrase() -> list[str]:
        if rng.random() < 0.2:
            return [choose("name")]
        return [choose("det")] + ([choose("adj")] if rng.random() < 0.5 else []) + [choose("noun")]

    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < n:
        words = noun_phrase() + [choose("verb")] + noun_phrase()
        if rng.random() < 0.5:
            words += [choose("prep")] + noun_phrase()
        if rng.random() < 0.3:
            words.append(choose("adv"))
        text = " ".join(words)
        if min_words <= len(words) <= max_words and text not in seen:
            seen.add(text)
            sentences.append(text)
    return sentences


@dataclasses.dataclass
class SentenceAudio:
    """A synthesised sentence: audio and the exact word / phoneme timings (seconds from the file start)."""

    text: str
    audio: np.ndarray  # float32, mono, SAMPLE_RATE
    words: list[tuple[str, float, float]]  # (word, onset, duration)
    phonemes: list[tuple[str, float, float]]  # (label, onset, duration)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / SAMPLE_RATE


def _word_durations(phones: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Phoneme durations in samples, each within [MIN_PHONE, MAX_PHONE], summing to a word length in range."""
    dur = np.array([rng.uniform(*DURATIONS[PHONES[p].kind]) for p in phones])
    for _ in range(4):  # rescaling then clipping converges in a couple of rounds
        total = dur.sum()
        target = np.clip(total, MIN_WORD, MAX_WORD)
        dur = np.clip(dur * target / total, MIN_PHONE, MAX_PHONE)
    return np.maximum(np.round(dur * SAMPLE_RATE), MIN_PHONE * SAMPLE_RATE).astype(int)


@functools.lru_cache(maxsize=64)
def _bandpass(lo: float, hi: float) -> np.ndarray:
    from scipy import signal  # lazy: not needed once the study is generated

    return signal.butter(4, [lo, min(hi, 0.48 * SAMPLE_RATE)], btype="bandpass", fs=SAMPLE_RATE, output="sos")


def _smooth(x: np.ndarray, seconds: float) -> np.ndarray:
    """Moving Hann-window average along axis 0 (edge-padded), so tracks move without clicks."""
    from scipy import signal  # lazy: not needed once the study is generated

    n = max(3, int(seconds * SAMPLE_RATE) | 1)
    win = np.hanning(n + 2)[1:-1]
    win /= win.sum()
    pad = [(n // 2, n // 2)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="edge")
    if x.ndim == 1:
        return signal.fftconvolve(xp, win, mode="valid")
    return signal.fftconvolve(xp, win[:, None], mode="valid", axes=0)


def _ramp(n: int, ramp: int) -> np.ndarray:
    """Flat-top window of ``n`` samples with raised-cosine edges of ``ramp`` samples."""
    env = np.ones(n)
    ramp = max(1, min(ramp, n // 2))
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
    env[:ramp] = edge
    env[n - ramp:] = edge[::-1]
    return env


class _Tracks:
    """Per-sample control tracks of a sentence, filled phoneme by phoneme."""

    def __init__(self, n: int) -> None:
        self.voice = np.zeros(n)
        self.formants = np.full((n, 3), np.nan)
        self.noise = np.zeros(n)

    def add_noise(self, start: int, length: int, band: tuple[float, float], amp: float,
                  rng: np.random.Generator, ramp: float = 0.006) -> None:
        from scipy import signal  # lazy: not needed once the study is generated

        pad = 256  # let the filter transient die out before the segment starts
        white = rng.standard_normal(length + pad)
        seg = signal.sosfilt(_bandpass(*band), white)[pad:]
        seg /= np.sqrt(np.mean(seg ** 2)) + 1e-12
        self.noise[start:start + length] += amp * seg * _ramp(length, int(ramp * SAMPLE_RATE))


def _render_phone(tr: _Tracks, label: str, start: int, n: int, scale: float, rng: np.random.Generator) -> None:
    ph = PHONES[label]
    stop = start + n
    f = np.array(ph.formants) * scale
    if ph.formants_end is not None:
        frac = np.linspace(0.0, 1.0, n)[:, None]
        tr.formants[start:stop] = (1 - frac) * f + frac * np.array(ph.formants_end) * scale
    else:
        tr.formants[start:stop] = f
    if ph.kind in ("stop", "affricate"):
        assert ph.band is not None
        closure = int(n * (0.55 if ph.kind == "stop" else 0.35))
        tr.voice[start:start + closure] = ph.voicing
        burst = n - closure
        if ph.kind == "stop":
            tr.add_noise(start + closure, min(burst, int(0.015 * SAMPLE_RATE)), ph.band, ph.noise, rng, 0.002)
            if ph.voicing == 0:  # aspiration of voiceless stops
                tr.add_noise(start + closure, burst, (500, 5000), 0.1, rng, 0.008)
            else:
                tr.voice[start + closure:stop] = 0.5
        else:
            tr.add_noise(start + closure, burst, ph.band, ph.noise, rng, 0.01)
            tr.voice[start + closure:stop] = ph.voicing
        return
    tr.voice[start:stop] = ph.voicing
    if ph.band is not None:
        tr.add_noise(start, n, ph.band, ph.noise, rng)


def _harmonics(f0: np.ndarray, formants: np.ndarray, active: np.ndarray, hop: int = 32,
               fmax: float = 5000.0) -> np.ndarray:
    """Sum of harmonics of ``f0`` whose amplitudes follow a cascade of three formant resonances.

    Only the ``active`` (voiced) samples are computed; harmonics fade out smoothly towards ``fmax``.
    """
    n = len(f0)
    out = np.zeros(n)
    idx = np.flatnonzero(active)
    if not len(idx):
        return out
    phase = np.mod(2 * np.pi * np.cumsum(f0) / SAMPLE_RATE, 2 * np.pi)[idx]
    k = np.arange(1, int(fmax / f0.min()) + 1)
    frames = np.arange(0, n + hop, hop).clip(max=n - 1)
    freqs = f0[frames, None] * k[None, :]
    gain = 1.0 / k[None, :]  # glottal source roll-off (with lip radiation)
    for i, bw in enumerate((80.0, 110.0, 170.0)):
        fi = formants[frames, i, None]
        gain = gain * fi ** 2 / np.sqrt((fi ** 2 - freqs ** 2) ** 2 + (bw * freqs) ** 2)
    # a smooth taper, not a hard cut: harmonics crossing fmax as f0 moves would click
    gain *= np.cos(0.5 * np.pi * np.clip((freqs - 0.8 * fmax) / (0.2 * fmax), 0, 1)) ** 2
    gain /= np.sqrt((gain ** 2).sum(axis=1, keepdims=True)) + 1e-12  # unit power per frame
    gain = np.ascontiguousarray(gain.T, dtype=np.float32)
    pos = idx / hop
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(frames) - 1)
    w = (pos - i0).astype(np.float32)
    # sin(k x) by the Chebyshev recurrence: one multiply-add per harmonic instead of a sine
    c2 = (2 * np.cos(phase)).astype(np.float32)
    s_prev, s_cur = np.zeros(len(idx), np.float32), np.sin(phase).astype(np.float32)
    acc = np.zeros(len(idx), np.float32)
    for g in gain:
        acc += (g[i0] + (g[i1] - g[i0]) * w) * s_cur
        s_prev, s_cur = s_cur, c2 * s_cur - s_prev
    out[idx] = np.sqrt(2) * acc
    return out


def synthesize(text: str, rng: np.random.Generator) -> SentenceAudio:
    """Synthesise ``text`` (words of :data:`LEXICON`) into speech-like audio with exact timings."""
    words = text.split()
    lead, tail = int(0.05 * SAMPLE_RATE), int(0.1 * SAMPLE_RATE)
    plan: list[tuple[str, int, np.ndarray]] = []
    pos = lead
    for i, word in enumerate(words):
        if i:
            pos += int(rng.uniform(0.03, 0.15) * SAMPLE_RATE)  # inter-word gap
        durs = _word_durations(PRONUNCIATIONS[word], rng)
        plan.append((word, pos, durs))
        pos += int(durs.sum())
    n = pos + tail
    tr = _Tracks(n)
    scale = rng.uniform(0.9, 1.15)  # speaker's vocal-tract length
    word_events, phone_events = [], []
    for word, start, durs in plan:
        word_events.append((word, start / SAMPLE_RATE, durs.sum() / SAMPLE_RATE))
        p_start = start
        for label, d in zip(PRONUNCIATIONS[word], durs):
            phone_events.append((label, p_start / SAMPLE_RATE, d / SAMPLE_RATE))
            _render_phone(tr, label, p_start, int(d), scale, rng)
            p_start += int(d)
    # Formants are held through silences and smoothed: coarticulation without jumps.
    idx = np.where(~np.isnan(tr.formants[:, 0]), np.arange(n), 0)
    idx = np.maximum.accumulate(idx)
    first = int(np.argmax(~np.isnan(tr.formants[:, 0])))
    formants = tr.formants[np.where(np.isnan(tr.formants[idx, 0]), first, idx)]
    formants = _smooth(formants, 0.025)
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(100, 220) * (1.1 - 0.2 * t / t[-1])  # declination across the sentence
    for _, onset, dur in word_events:  # pitch accents
        f0 *= 1 + rng.uniform(0.0, 0.12) * np.exp(-0.5 * ((t - onset - dur / 2) / 0.08) ** 2)
    f0 *= 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t + rng.uniform(0, 2 * np.pi))
    voice = _smooth(tr.voice, 0.01)
    audio = voice * _harmonics(f0, formants, voice > 1e-4) + tr.noise
    audio *= 0.1 / np.sqrt(np.mean(audio[lead:n - tail] ** 2))
    audio *= _ramp(n, int(0.005 * SAMPLE_RATE))
    return SentenceAudio(text, np.clip(audio, -0.99, 0.99).astype(np.float32), word_events, phone_events)
