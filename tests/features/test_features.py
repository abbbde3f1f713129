import numpy as np
import pandas as pd
import pytest
import soundfile

from bm2.cache import Cache
from bm2.features import FeatureError, FeatureStack, MelSpectrum, Phoneme, WordOnset, build_feature


def _recording_with_sound(array_recording, tmp_path, sr=16000):
    t = np.arange(int(1.5 * sr)) / sr
    wav = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    wav[: sr // 2] = 0.0  # 0.5 s silence, then a tone
    path = tmp_path / "tone.wav"
    soundfile.write(path, wav, sr)
    events = pd.DataFrame([
        dict(kind="block", onset=1.0, duration=5.0, uid="tone"),
        dict(kind="sound", onset=2.0, duration=1.5, filepath=str(path), offset=0.0),
        dict(kind="word", onset=2.5, duration=0.5, text="tone", sentence_id="s", word_index=0),
        dict(kind="phoneme", onset=2.5, duration=0.2, text="T"),
        dict(kind="phoneme", onset=2.7, duration=0.3, text="OW1"),
    ])
    return array_recording(events=events, seconds=8.0), path


def test_mel_timeline_places_sound_and_caches_per_file(array_recording, tmp_path):
    rec, path = _recording_with_sound(array_recording, tmp_path)
    cache = Cache(tmp_path / "cache")
    mel = MelSpectrum(n_mels=20)
    calls = []
    original = mel.compute_sound
    mel.compute_sound = lambda wav, sr: (calls.append(1), original(wav, sr))[1]
    out = mel.timeline(rec, 120.0, 960, cache)
    assert out.shape == (20, 960) and out.dtype == np.float32
    silence = out[:, : 2 * 120]  # before the sound
    assert np.allclose(silence, silence[:, :1])
    tone = out[:, int(2.7 * 120)]
    band = int(np.argmax(tone))
    assert tone[band] > silence[band, 0] + 5  # the 440 Hz tone lights a low band up
    assert 0 < band < 10
    n_calls = len(calls)
    mel.timeline(rec, 120.0, 960, cache)
    assert len(calls) == n_calls  # cached timeline
    mel.sound_features(path, cache)
    assert len(calls) == n_calls  # cached per sound file


def test_event_features(array_recording, tmp_path):
    rec, _ = _recording_with_sound(array_recording, tmp_path)
    onset = WordOnset(width=0.05).compute_events(rec.events(), 100.0, 800)
    assert onset.shape == (1, 800) and onset.sum() == 5 and onset[0, 250] == 1
    ph = Phoneme().compute_events(rec.events(), 100.0, 800)
    assert ph.shape == (39, 800) and ph[:, 260].sum() == 1 and ph[:, 100].sum() == 0
    stack = FeatureStack([WordOnset(), Phoneme()])
    out = stack.timeline(rec, 100.0, 800, Cache(tmp_path / "c"))
    assert out.shape == (40, 800) and np.array_equal(out[1:], ph)


def test_errors(array_recording, tmp_path):
    with pytest.raises(FeatureError, match="valid features are"):
        build_feature("nope")
    with pytest.raises(ValueError, match="fmax"):
        MelSpectrum(fmax=9000, sample_rate=16000)
    with pytest.raises(FeatureError, match="not found"):
        MelSpectrum().sound_features(tmp_path / "missing.wav", Cache(tmp_path))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....garbage")
    with pytest.raises(FeatureError, match="cannot read audio"):
        MelSpectrum().sound_features(bad, Cache(tmp_path))
