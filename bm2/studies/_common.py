"""Helpers shared by the real studies: safe literal parsing, phoneme labels, sentence blocks, TextGrids,
sensor positions and quiet mne calls."""

from __future__ import annotations

import ast
import contextlib
import re
import typing as tp
import warnings
from pathlib import Path

import pandas as pd

from ..events import ARPABET
from ..utils.hashing import content_hash
from .base import StudyError

if tp.TYPE_CHECKING:
    pass

_LITERALS = (str, int, float, bool, type(None))


@contextlib.contextmanager
def quiet() -> tp.Iterator[None]:
    """Silence the expected warnings of mne / mne-bids readers (naming conventions, units ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def parse_dict_literal(text: tp.Any, source: str) -> dict[str, tp.Any]:
    """A plain dict of literals from its Python source ``text``, parsed with :func:`ast.literal_eval` only.

    Nothing is ever executed: calls, names, attribute access ... are rejected with a :class:`StudyError`
    naming ``source`` (file and row). Values must be str, int, float, bool or None.
    """
    if not isinstance(text, str) or not text.strip().startswith("{"):
        raise StudyError(f"{source}: expected a Python dict literal such as \"{{'kind': 'word'}}\", got {text!r}")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise StudyError(f"{source}: not a plain dict literal ({type(exc).__name__}: {exc}); "
                         f"refusing {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise StudyError(f"{source}: expected a dict literal, got {type(value).__name__}")
    bad = {k: v for k, v in value.items() if not isinstance(k, str) or not isinstance(v, _LITERALS)}
    if bad:
        raise StudyError(f"{source}: dict keys must be strings and values plain literals; offending items {bad}")
    return value


def to_arpabet(label: tp.Any) -> str | None:
    """An ARPABET class (one of the 39) from a label like ``ah_B``, ``AH1`` or ``hh_I``; None if unknown."""
    if not isinstance(label, str):
        return None
    core = re.sub(r"\d", "", label.split("_")[0]).strip().upper()
    return core if core in ARPABET else None


def sentence_blocks(words: pd.DataFrame, pad: float = 1.0, end: float | None = None) -> pd.DataFrame:
    """One ``block`` row per sentence from word rows (``onset``, ``duration``, ``sentence_id``, ``text``).

    The uid of a block is the sentence text (its words joined by spaces, in order); the blocks are laid out by
    :func:`span_blocks` over the sentences' word spans. A sentence heard twice in one recording gives two blocks
    with the same uid.
    """
    if words.empty:
        return pd.DataFrame(columns=["kind", "onset", "duration", "uid"])
    words = words.sort_values("onset", kind="stable")
    runs = (words["sentence_id"] != words["sentence_id"].shift()).cumsum()
    spans = []
    for _, group in words.groupby(runs, sort=True):
        text = " ".join(str(w) for w in group["text"])
        spans.append((float(group["onset"].min()), float((group["onset"] + group["duration"]).max()),
                      {"uid": text}))
    return span_blocks(spans, pad=pad, end=end)


def span_blocks(spans: tp.Sequence[tuple[float, float, dict[str, tp.Any]]], pad: float = 1.0,
                end: float | None = None) -> pd.DataFrame:
    """``block`` rows around time spans ``(start, stop, columns)`` (``columns`` holds ``uid`` and any extra
    column of the block).

    Neighbouring blocks meet in the middle of the gap between their spans (never inside a span); the first
    starts ``pad`` s before its span (not before 0), the last ends ``pad`` s after its span (not after ``end``
    if given). A block left empty by overlapping spans is dropped.
    """
    spans = sorted(spans, key=lambda s: (s[0], s[1]))
    rows = []
    for i, (start, stop, columns) in enumerate(spans):
        lo = start - pad if i == 0 else (spans[i - 1][1] + start) / 2
        hi = stop + pad if i == len(spans) - 1 else (stop + spans[i + 1][0]) / 2
        lo = max(lo, spans[i - 1][1] if i else 0.0)
        if end is not None:
            hi = min(hi, end)
        if hi > lo:
            rows.append(dict(kind="block", onset=lo, duration=hi - lo, **columns))
    return pd.DataFrame(rows)


def sentence_id(text: str) -> str:
    """Stable identifier of a sentence: a content hash of its text."""
    return content_hash(text)


def require_file(path: Path, study: str, fix: str) -> Path:
    """``path`` if it exists, else a :class:`StudyError` naming it and how to fix it."""
    if not path.exists():
        raise StudyError(f"study {study!r}: missing {path}; {fix}")
    return path


# -- Praat TextGrid ------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

def read_textgrid(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """Interval tiers of a Praat TextGrid (long or short text format, UTF-8 or UTF-16).

    Returns ``{tier name: [(xmin, xmax, text), ...]}``; point tiers are skipped.
    """
    raw = Path(path).read_bytes()
    enc = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    text = raw.decode(enc)
    # tokens: quoted strings ("" escapes a quote), or bare numbers / flags; labels "name =" are dropped
    tokens = []
    for m in re.finditer(r'"((?:[^"]|"")*)"|([^\s"=\[\]:]+)(?=\s|$)', text):
        if m.group(1) is not None:
            tokens.append(("s", m.group(1).replace('""', '"')))
        else:
            word = m.group(2)
            number = _NUMBER.match(word)  # a number, possibly with stray trailing characters ("1.17h")
            if number:
                tokens.append(("n", float(number.group(0))))
            else:
                tokens.append(("w", word))  # keys such as xmin, intervals, size, <exists>
    values = [t for t in tokens if t[0] != "w" or t[1] == "<exists>"]
    pos = 0

    def take(kind: str) -> tp.Any:
        nonlocal pos
        while pos < len(values) and values[pos][0] != kind:
            pos += 1
        if pos >= len(values):
            raise StudyError(f"{path}: truncated or invalid TextGrid")
        pos += 1
        return values[pos - 1][1]

    if take("s") != "ooTextFile" or take("s") != "TextGrid":
        raise StudyError(f"{path}: not a Praat TextGrid (expected 'File type = \"ooTextFile\"', 'Object class')")
    take("n"), take("n")  # xmin, xmax
    n_tiers = int(take("n"))
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    for _ in range(n_tiers):
        klass, name = take("s"), take("s")
        take("n"), take("n")
        count = int(take("n"))
        items = []
        for _ in range(count):
            if klass == "IntervalTier":
                a, b, label = take("n"), take("n"), take("s")
                items.append((float(a), float(b), label))
            else:
                take("n"), take("s")
        if klass == "IntervalTier":
            tiers[name] = items
    return tiers
