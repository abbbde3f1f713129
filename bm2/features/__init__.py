"""Speech features (targets) computed on a recording's timeline; see :mod:`bm2.features.base`."""

from __future__ import annotations

import typing as tp

import numpy as np

from ..cache import Cache, EntryWriter
from ..studies.base import Recording
from .base import EventFeature, Feature, FeatureError, SoundFeature, load_audio
from .nsd import NSDSpectrogram
from .speech import Envelope, MelSpectrum
from .text import PartOfSpeech, Phoneme, WordEmbedding, WordFrequency, WordOnset, WordPhonemes
from .wav2vec import Wav2Vec2

FEATURES: dict[str, type[Feature]] = {cls.name: cls for cls in (
    MelSpectrum, WordOnset, Phoneme, Wav2Vec2, Envelope, WordEmbedding, WordFrequency, WordPhonemes, PartOfSpeech,
    NSDSpectrogram)}


def build_feature(name: str, **kwargs: tp.Any) -> Feature:
    """The feature registered as ``name``, built with ``kwargs``; the error lists the valid names."""
    try:
        cls = FEATURES[name]
    except KeyError:
        raise FeatureError(f"unknown feature {name!r}; valid features are {sorted(FEATURES)}") from None
    return cls(**kwargs)


class FeatureStack:
    """Several features concatenated along the channel axis."""

    def __init__(self, features: tp.Sequence[Feature]) -> None:
        if not features:
            raise FeatureError("at least one feature is needed (dset.features)")
        self.features = list(features)

    @property
    def dimension(self) -> int:
        """Total number of channels."""
        return sum(f.dimension for f in self.features)

    def timeline(self, recording: Recording, sample_rate: float, n_times: int, cache: Cache) -> np.ndarray:
        """All features for ``recording``, concatenated and cached (a read-only memory map)."""
        if len(self.features) == 1:
            return self.features[0].timeline(recording, sample_rate, n_times, cache)
        key = {"recording": recording.uid, "sample_rate": sample_rate, "n_times": n_times,
               "features": [(f.name, f.version, f.params()) for f in self.features]}

        def build(writer: EntryWriter) -> None:
            out = writer.create("value", (self.dimension, n_times), np.float32)
            row = 0
            for f in self.features:
                out[row:row + f.dimension] = f.timeline(recording, sample_rate, n_times, cache)
                row += f.dimension

        return cache.get("feature-stack", key, "1", build)["value"]


__all__ = ["Envelope", "EventFeature", "FEATURES", "Feature", "FeatureError", "FeatureStack", "MelSpectrum",
           "NSDSpectrogram", "PartOfSpeech", "Phoneme", "SoundFeature", "Wav2Vec2", "WordEmbedding", "WordFrequency",
           "WordOnset", "WordPhonemes", "build_feature", "load_audio"]
