"""Helpers shared by the real studies: safe literal parsing, phoneme labels, sentence blocks, TextGrids,
BIDS tables and sidecars, and quiet mne calls."""

from __future__ import annotations

import ast
import contextlib
import logging
import json
import math
import os
import re
import shutil
import typing as tp
import warnings
from pathlib import Path

import pandas as pd

from ..events import ARPABET
from ..utils.hashing import content_hash
from ..utils.text import read_text
from .base import StudyError

logger = logging.getLogger(__name__)

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


# -- BIDS tables and sidecars --------------------------------------------------------------------------

MISSING_VALUES = ("", "n/a", "na", "nan", "none", "null")


def read_tsv(path: str | Path) -> pd.DataFrame:
    """A tab-separated file as a table of stripped strings indexed by **line number** (1-based, the header is
    line 1; blank lines are skipped), read as UTF-8 (BOM or not) else Latin-1 with a warning.

    A row with fewer fields than the header is padded with empty strings; one with more (non-empty) fields is a
    :class:`StudyError` naming the file and the line.
    """
    lines = read_text(path).split("\n")
    if not lines or not lines[0].strip():
        raise StudyError(f"{path}: empty file or empty header line (line 1 must name the columns)")
    header = [h.strip() for h in lines[0].split("\t")]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise StudyError(f"{path} line 1: column(s) {repeated} appear more than once")
    rows, numbers = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) > len(header):
            if any(cells[len(header):]):
                raise StudyError(f"{path} line {number}: {len(cells)} tab-separated fields but the header (line 1) "
                                 f"names {len(header)} columns")
            cells = cells[:len(header)]
        rows.append(cells + [""] * (len(header) - len(cells)))
        numbers.append(number)
    return pd.DataFrame(rows, columns=header, index=pd.Index(numbers, name="line"), dtype=object)


def is_missing(value: tp.Any) -> bool:
    """Whether a table cell holds no value (empty, ``n/a``, ``nan`` ..., any case)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return str(value).strip().lower() in MISSING_VALUES


def canonical_code(value: tp.Any) -> str:
    """The canonical text of a trigger code or label: numbers compare by value (``"1.0"``, ``"1"``, ``1`` and
    ``1.0`` all give ``"1"``; ``"2.50"`` gives ``"2.5"``), anything else is the stripped text."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return str(int(number)) if number.is_integer() else repr(number)


def bids_entities(name: str) -> tuple[dict[str, str], str]:
    """(``{key: value}``, suffix) of a BIDS file name such as ``sub-01_task-x_run-1_meg.fif``."""
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1] if parts and "-" not in parts[-1] else ""


# entities of sidecars that a recording's own name does not carry (coordinate files name their space)
_FREE_ENTITIES = ("space", "split")


def bids_inputs(root: Path, raw_path: Path, skip_suffixes: tp.Collection[str] = ("events",)) -> dict[str, Path]:
    """The files of a BIDS recording that shape its signal: the raw file(s) (every file, or folder such as a
    CTF ``.ds``, of the datatype folder named like the recording, split parts included) and the sidecars it
    inherits (``channels.tsv``, ``*_meg.json`` / ``*_eeg.json``, ``electrodes.tsv``, ``coordsystem.json``,
    ``scans.tsv`` ...: any file of the root, subject, session or datatype folder whose entities are a subset of
    the recording's, ``space`` and ``split`` aside). Files of suffix ``skip_suffixes`` are left out. Keys are
    paths relative to ``root``."""
    root = Path(root)
    own, _ = bids_entities(raw_path.name)
    own = {k: v for k, v in own.items() if k not in _FREE_ENTITIES}
    folders = [raw_path.parent]
    for parent in raw_path.parent.parents:
        if parent == root or root not in parent.parents:
            break
        folders.append(parent)
    folders.append(root)
    found: dict[str, Path] = {}
    for folder in dict.fromkeys(folders):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            entities, suffix = bids_entities(path.name)
            entities = {k: v for k, v in entities.items() if k not in _FREE_ENTITIES}
            if not entities or suffix in skip_suffixes or path.name.startswith("."):
                continue
            if all(own.get(k) == v for k, v in entities.items()):
                found[path.relative_to(root).as_posix()] = path
    return found


def read_raw_bids(bids_path: tp.Any, extra_params: dict[str, tp.Any] | None = None) -> tp.Any:
    """``mne_bids.read_raw_bids`` (quietly). If it fails, it is tried once more without turning the
    ``events.tsv`` into annotations (bm2 never uses them; it reads the events itself, naming the line of any
    value it cannot use): mne-bids stops on a non-numeric onset even in a row bm2 does not use."""
    import mne_bids

    extra = dict(extra_params or {})
    try:
        with quiet():
            return mne_bids.read_raw_bids(bids_path, extra_params=dict(extra), verbose="error")
    except Exception as first:  # noqa: BLE001 - retried once, re-raised if the retry fails too
        import mne_bids.read as reader
        from unittest import mock

        if not hasattr(reader, "_handle_events_reading"):
            raise
        try:
            with quiet(), mock.patch.object(reader, "_handle_events_reading", lambda fname, raw, **kw: (raw, {})):
                raw = mne_bids.read_raw_bids(bids_path, extra_params=dict(extra), verbose="error")
        except Exception:  # noqa: BLE001
            raise first from None
        logger.debug("%s: mne-bids cannot read its events.tsv (%s); read without its "
                                          "annotations", bids_path.fpath, first)
        return raw


# -- Praat TextGrid ------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

def read_textgrid(path: str | Path) -> dict[str, list[tuple[float, float, str]]]:
    """Interval tiers of a Praat TextGrid (long or short text format, UTF-8 or UTF-16).

    Returns ``{tier name: [(xmin, xmax, text), ...]}``; point tiers are skipped.
    """
    text = read_text(path)  # UTF-16 with a BOM, UTF-8, else Latin-1 with a warning
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


def generate_once(final: Path, generate: tp.Callable[[Path], None], marker: str, record: dict[str, tp.Any]) -> None:
    """Generate a dataset into ``final`` exactly once, safely: under a file lock (concurrent callers wait for one
    generator), into a temporary sibling folder renamed into place when complete, with ``marker`` (a JSON file of
    ``record``) written last. Leftovers of a crashed generation are removed first; a failure leaves nothing behind.

    ``generate(folder)`` writes the dataset into ``folder`` (which exists and is empty).
    """
    import filelock

    if (final / marker).is_file():
        return
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(parent / f".{final.name}.lock")):
        if (final / marker).is_file():  # another process finished while we waited
            return
        for stale in [final, *parent.glob(f".{final.name}.tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        tmp = parent / f".{final.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        logger.info("generating %s (once; later runs read it)", final)
        try:
            generate(tmp)
            (tmp / marker).write_text(json.dumps(record, indent=2))
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


class GeneratedStudy:
    """Mixin of the studies bm2 generates itself, seeded, one folder per set of options (put it before the study
    class it extends): :meth:`prepare` writes the folder ``dataset`` once (:func:`generate_once`: concurrent callers
    wait for one generator, a failure leaves nothing), :meth:`is_prepared` checks its marker and
    :meth:`iter_recordings` refuses to read before.

    A subclass sets ``marker`` (file written last) and ``gen_version`` (bumped whenever generation changes), has
    ``name``, ``dataset`` (the folder) and ``options`` (everything the data depend on), and implements
    ``_generate(folder)``."""

    marker: tp.ClassVar[str] = "bm2_complete.json"
    gen_version: tp.ClassVar[str]
    name: tp.ClassVar[str]
    options: dict[str, tp.Any]

    @property
    def dataset(self) -> Path:
        raise NotImplementedError

    def _generate(self, out: Path) -> None:
        raise NotImplementedError

    def is_prepared(self) -> bool:
        """Whether the dataset of these options is complete on disk."""
        return (self.dataset / self.marker).is_file()

    def prepare(self) -> None:
        """Generate the dataset unless it is complete; concurrent callers wait for one generator."""
        generate_once(self.dataset, self._generate, self.marker, {"version": self.gen_version, **self.options})

    def iter_recordings(self) -> tp.Iterator[tp.Any]:
        """The recordings of the generated dataset; :class:`StudyError` before :meth:`prepare`."""
        if not self.is_prepared():
            raise StudyError(f"study {self.name!r}: no generated data in {self.dataset}; call "
                             f"{type(self).__name__}.prepare() first to generate it")
        return super().iter_recordings()  # type: ignore[misc]
