"""wav2vec 2.0 feature, end to end on a tiny randomly initialised model saved to disk (no download)."""

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch

from bm2.cache import Cache
from bm2.features import FeatureError, FeatureStack, Wav2Vec2, build_feature
from bm2.features.base import cut_at
from bm2.features.speech import Envelope

transformers = pytest.importorskip("transformers")

SR = 16000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 4-layer, 32-channel wav2vec 2.0 with the real conv strides (320 samples: 50 Hz, 400-sample field)."""
    config = transformers.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
        conv_dim=(8,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
        do_stable_layer_norm=True, vocab_size=8)
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(config).eval()
    folder = tmp_path_factory.mktemp("w2v") / "tiny-wav2vec2"
    model.save_pretrained(folder)
    return folder


def _wav(seconds, seed=0, sr=SR):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) +
            0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _direct(folder, wav, layers, center):
    """Reference: the model's hidden_states on the normalised (and padded) waveform, averaged over layers."""
    model = transformers.Wav2Vec2Model.from_pretrained(folder, local_files_only=True).eval()
    x = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    if center:
        x = np.pad(x, (200, 200))
    with torch.no_grad():
        states = model(torch.from_numpy(x.astype(np.float32))[None], output_hidden_states=True).hidden_states
    return torch.stack([states[k] for k in layers]).mean(0)[0].T.numpy()


@pytest.fixture
def count_forwards(monkeypatch):
    calls = []
    original = transformers.Wav2Vec2Model.forward

    def forward(self, input_values, *args, **kwargs):
        calls.append(int(input_values.shape[-1]))
        return original(self, input_values, *args, **kwargs)

    monkeypatch.setattr(transformers.Wav2Vec2Model, "forward", forward)
    return calls


def test_layer_average_and_frame_rate(tiny_model):
    wav = _wav(1.0)
    for center in (False, True):
        feat = Wav2Vec2(model=str(tiny_model), layers=(1, 3), device="cpu", center=center)
        assert feat.dimension == 32 and feat.frame_rate == 50.0 and feat.receptive_field == 400
        value, rate = feat.compute_sound(wav, SR)
        expected = _direct(tiny_model, wav, (1, 3), center)
        assert rate == 50.0
        assert value.shape == expected.shape == (32, 49 if not center else 51)
        np.testing.assert_allclose(value, expected, atol=1e-5)
    # other sample rates are resampled to 16 kHz: frames = duration x 50 (+1 with centring)
    value, rate = feat.compute_sound(_wav(2.0, sr=8000), 8000)
    assert value.shape == (32, 101) and rate == 50.0


def test_layers_validated_and_in_cache_key(tiny_model):
    with pytest.raises(FeatureError, match=r"valid indices are 0\.\.4"):
        _ = Wav2Vec2(model=str(tiny_model), layers=(3, 5)).dimension
    with pytest.raises(FeatureError, match="non-empty"):
        Wav2Vec2(model=str(tiny_model), layers=())
    a = Wav2Vec2(model=str(tiny_model), layers=(1,)).params()
    b = Wav2Vec2(model=str(tiny_model), layers=(2,)).params()
    assert a != b and a["model"]["path"] == str(tiny_model.resolve())
    assert a["model"]["files"]["model.safetensors"] > 0 and a["model"]["config_sha1"]
    feat = build_feature("wav2vec2", model=str(tiny_model), layers=[0, 4])  # as Hydra passes it
    assert feat.layers == (0, 4)


def test_missing_weights_clear_error(tmp_path, array_recording):
    feat = Wav2Vec2(model=str(tmp_path / "absent-model"))
    with pytest.raises(FeatureError, match="huggingface-cli download facebook/wav2vec2-large-xlsr-53") as info:
        _ = feat.dimension
    assert "features.wav2vec2.model=" in str(info.value) and "HF_HOME" in str(info.value)
    hub = Wav2Vec2(model="bm2-test/not-a-cached-model")
    with pytest.raises(FeatureError, match="huggingface-cli download bm2-test/not-a-cached-model"):
        hub.load_model()
    path = tmp_path / "a.wav"
    soundfile.write(path, _wav(0.5), SR)
    rec = array_recording(events=pd.DataFrame([
        dict(kind="block", onset=0.5, duration=2.0, uid="b"),
        dict(kind="sound", onset=1.0, duration=0.5, filepath=str(path), offset=0.0)]), seconds=4.0)
    with pytest.raises(FeatureError, match="cannot load the model"):
        feat.timeline(rec, 100.0, 400, Cache(tmp_path / "cache"))


def _sound_recording(array_recording, path, seed=0, twice=False):
    rows = [dict(kind="block", onset=1.0, duration=3.0, uid="sentence one"),
            dict(kind="sound", onset=2.0, duration=1.5, filepath=str(path), offset=0.0)]
    if twice:
        rows += [dict(kind="block", onset=5.0, duration=2.0, uid="sentence two"),
                 dict(kind="sound", onset=5.2, duration=1.5, filepath=str(path), offset=0.0)]
    return array_recording(events=pd.DataFrame(rows), seconds=8.0, seed=seed)


def test_timeline_alignment_and_once_per_file(tiny_model, tmp_path, array_recording, count_forwards):
    wav = _wav(1.5)
    path = tmp_path / "sentence.wav"
    soundfile.write(path, wav, SR, subtype="FLOAT")
    cache = Cache(tmp_path / "cache")
    feat = Wav2Vec2(model=str(tiny_model), layers=(2, 3, 4), device="cpu")
    rec1 = _sound_recording(array_recording, path, seed=1, twice=True)
    out = feat.timeline(rec1, 100.0, 800, cache)
    assert out.shape == (32, 800) and out.dtype == np.float32
    # one forward for the value of silence, one for the file (played twice, same segment)
    assert len(count_forwards) == 2
    value, rate = feat.compute_sound(wav, SR)
    n_forwards = len(count_forwards)
    # at 100 Hz, sample 200 + 2j is exactly frame j of the sound (onset 2.0 s, frame i at i / 50 s)
    j = np.arange(0, 75)
    np.testing.assert_allclose(out[:, 200 + 2 * j], value[:, j], atol=1e-5)
    np.testing.assert_allclose(out[:, 520 + 2 * j], value[:, j], atol=1e-5)  # second play, at 5.2 s
    silence = feat.silence()
    np.testing.assert_allclose(out[:, 150], silence, atol=1e-6)  # before the sound
    np.testing.assert_allclose(out[:, 400], silence, atol=1e-6)  # between the two plays
    assert not np.allclose(out[:, 210], silence, atol=1e-3)
    # a second recording (another subject) playing the same file: no forward at all
    rec2 = _sound_recording(array_recording, path, seed=2)
    feat.timeline(rec2, 100.0, 800, cache)
    # a new feature object (another process), another brain rate: silence and segments come from the cache
    fresh = Wav2Vec2(model=str(tiny_model), layers=(2, 3, 4), device="cpu")
    again = fresh.timeline(rec2, 120.0, 960, cache)
    assert len(count_forwards) == n_forwards and fresh._model is None
    assert again.shape == (32, 960)
    # through the stack, with another feature, and the keyed cache
    stack = FeatureStack([fresh, Envelope()])
    both = stack.timeline(rec1, 100.0, 800, cache)
    assert both.shape == (33, 800) and np.array_equal(both[:32], out)
    assert len(count_forwards) == n_forwards


def test_chunked_forwards(tiny_model, count_forwards):
    wav = _wav(3.0, seed=3)
    feat = Wav2Vec2(model=str(tiny_model), layers=(4,), device="cpu", max_seconds=1.0, context_seconds=0.2,
                    center=False)
    value, _ = feat.compute_sound(wav, SR)
    assert len(count_forwards) > 3 and max(count_forwards) <= SR * 1.0
    full = _direct(tiny_model, wav, (4,), center=False)
    assert value.shape == full.shape == (32, 149)  # exactly the frames of one long forward
    # the first chunk's core frames are those of a forward on the first chunk's audio alone
    core = len(range(0, (SR - 400) // 320 + 1)) - 2 * 10
    x = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    first = feat._forward(x[:(core + 10 - 1) * 320 + 400].astype(np.float32))
    np.testing.assert_allclose(value[:, :core], first[:, :core], atol=1e-5)
    with pytest.raises(FeatureError, match="max_seconds"):
        Wav2Vec2(model=str(tiny_model), max_seconds=1.0, context_seconds=0.5)


def test_cut_at():
    assert cut_at(2.0, 4.0, np.array([1.0, 3.0, 5.0])) == [(2.0, 3.0), (3.0, 4.0)]
    assert cut_at(2.0, 4.0, np.array([2.0, 4.0])) == [(2.0, 4.0)]


def test_contextual_cut_at_block_boundaries(tiny_model, tmp_path, array_recording):
    """Audio after a block's end must not influence the features inside the block."""
    a = _wav(2.0, seed=4)
    b = a.copy()
    b[SR:] = np.random.default_rng(5).standard_normal(SR).astype(np.float32)  # same first second only
    paths = []
    for name, wav in (("a.wav", a), ("b.wav", b)):
        paths.append(tmp_path / name)
        soundfile.write(paths[-1], wav, SR, subtype="FLOAT")

    def recording(path, seed):  # (the fixture's uid ignores events: one seed per recording)
        # one sound event [2, 4) s spanning two blocks [1, 3) and [3, 5): the cut is at 1.0 s into the file
        return array_recording(events=pd.DataFrame([
            dict(kind="block", onset=1.0, duration=2.0, uid="first"),
            dict(kind="block", onset=3.0, duration=2.0, uid="second"),
            dict(kind="sound", onset=2.0, duration=2.0, filepath=str(path), offset=0.0)]), seconds=6.0, seed=seed)

    cache = Cache(tmp_path / "cache")
    feat = Wav2Vec2(model=str(tiny_model), layers=(3, 4), device="cpu")
    out_a = feat.timeline(recording(paths[0], 0), 100.0, 600, cache)
    out_b = feat.timeline(recording(paths[1], 1), 100.0, 600, cache)
    first, second = slice(200, 300), slice(300, 400)
    np.testing.assert_allclose(out_a[:, first], out_b[:, first], atol=1e-6)
    assert not np.allclose(out_a[:, second], out_b[:, second], atol=1e-3)
    # inside the first block: the features of the first second of audio processed alone
    alone, _ = feat.compute_sound(a[:SR], SR)
    np.testing.assert_allclose(out_a[:, 200:300:2], alone[:, :50], atol=1e-5)
    # without the cut, the whole-file features of the first second do depend on the later audio (attention)
    whole_a, _ = feat.compute_sound(a, SR)
    whole_b, _ = feat.compute_sound(b, SR)
    assert not np.allclose(whole_a[:, :45], whole_b[:, :45], atol=1e-3)
