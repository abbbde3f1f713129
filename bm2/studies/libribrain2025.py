"""LibriBrain 2025 (Landau et al. 2025): one listener, ~52 h of Neuromag MEG during the Sherlock Holmes audiobooks.

Read from the **serialised** release exactly as it lies on disk (the layout of the hub repository
``pnpl/LibriBrain``), with h5py and pandas only (no ``pnpl`` dependency: see ANCHORS_WAVE2 §1.1):

* MEG, one file per run:
  ``{root}/{book}/derivatives/serialised/sub-{s}_ses-{ses}_task-{book}_run-{run}_proc-{proc}_meg.h5`` with dataset
  ``data`` (306 x N, float32) and file attribute ``sample_frequency`` (250). Only these two are relied on; the
  optional ``channel_names`` attribute (comma-joined) is used when it names 306 channels.
* Events, one file per run: ``{root}/{book}/derivatives/events/sub-{s}_ses-{ses}_task-{book}_run-{run}_events.tsv``
  with columns ``kind`` (word / phoneme / silence), ``segment``, ``timemeg`` (s, on the MEG clock: 0 = first
  sample of the h5), ``duration`` (s) and ``sentenceidx``.

Reads are lazy: :class:`H5Raw` is an :class:`mne.io.BaseRaw` whose samples are h5 slices read on demand (the
preprocessing reads ``chunk_channels`` rows at a time, never the whole file at once), and the files are only ever
opened read-only (pnpl tries to write its statistics back into them; bm2 never does).

Events mapping onto the bm2 schema (:mod:`bm2.events`)
------------------------------------------------------
* ``phoneme`` rows: the label before the first ``_`` (``ah_B`` -> ``AH``), upper-cased; ``sil`` and ``oov_S``
  (and any label outside the 39 ARPABET classes) are dropped and counted (:attr:`LibriBrainRecording.dropped`),
  like pnpl's phoneme samples.
* ``word`` rows become ``word`` events (``sentence_id`` = ``{run key}:{sentenceidx}``, ``word_index`` = position
  within the sentence).
* Speech / silence follows pnpl's rule: every sample is speech, except those before the first annotation and
  those inside ``silence`` rows (a run without silence rows: speech = word spans). Each speech span is one
  ``sound`` event (``filepath`` names the run's audio, which the release does not ship: audio features cannot be
  used; ``offset`` = its onset), so ``dset.speech.kinds: [sound]`` gives the per-sample target.
* One ``block`` per run spans the whole recording (uid = the run key): the split is decided per run.

Splits: ``split: "2025"`` (default) reads the pinned list :data:`SPLIT_2025` (90 runs: 88 train, the validation
run ``('0', '11', 'Sherlock1', '2')`` and the test run ``('0', '12', 'Sherlock1', '2')``); a listed run absent on
disk is reported (``on_missing: warn`` logs every one, ``error`` raises), never silently dropped. ``split: null``
reads every run found on disk. Recordings expose ``run`` (and ``book`` = task) so that the ``named`` split
strategy selects them: ``{subject: "0", session: "11", task: Sherlock1, run: "2"}``.
"""

from __future__ import annotations

import logging
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import to_arpabet
from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

FORMAT = 1  # loader version: enters the recordings' uids
PREPROC = "bads+headpos+sss+notch+bp+ds"
N_CHANNELS = 306
LINE_FREQ = 50.0
RUN_PATTERN = re.compile(r"^sub-(?P<sub>[^_]+)_ses-(?P<ses>[^_]+)_task-(?P<task>[^_]+)_run-(?P<run>[^_]+)"
                         r"_proc-(?P<proc>[^_]+)_meg\.h5$")
EVENT_COLUMNS = ("kind", "segment", "timemeg", "duration")


def _book_runs(book: str, sessions: tp.Iterable[int], run2: tp.Iterable[int] = ()) -> list[tuple[str, str, str, str]]:
    two = set(run2)
    return [("0", str(s), book, "2" if s in two else "1") for s in sessions]


#: The LibriBrain 2025 competition split, pinned as data: run keys ``(subject, session, book, run)``.
#: Provenance: the remote ``constants.json`` of the competition (served from 2025-07-23 on, also
#: ``public/constants.json`` of the competition repository), as summarised in ANCHORS_WAVE2 §1.1: Sherlock1
#: sessions 1-12 (run 2 for sessions 11 and 12), Sherlock2-3 sessions 1-12, Sherlock4 sessions 1-12 but 8,
#: Sherlock5 sessions 1-15, Sherlock6-7 sessions 1-14: 90 runs, 88 of which train. pnpl 0.2.0's built-in
#: fallback (86 runs) differs and is NOT used; the DeMEGa paper's "91 training sessions" matches neither.
SPLIT_2025: dict[str, tp.Any] = {
    "provenance": ("LibriBrain 2025 competition remote constants.json (2025-07-23 onward; competition repo "
                   "public/constants.json); pnpl 0.2.0 fallback list (86 runs) not used. See ANCHORS_WAVE2 §1.1."),
    "runs": (_book_runs("Sherlock1", range(1, 13), run2=(11, 12)) + _book_runs("Sherlock2", range(1, 13))
             + _book_runs("Sherlock3", range(1, 13)) + _book_runs("Sherlock4", [s for s in range(1, 13) if s != 8])
             + _book_runs("Sherlock5", range(1, 16)) + _book_runs("Sherlock6", range(1, 15))
             + _book_runs("Sherlock7", range(1, 15))),
    "valid": [("0", "11", "Sherlock1", "2")],
    "test": [("0", "12", "Sherlock1", "2")],
}
SPLITS = {"2025": SPLIT_2025}


def run_key(subject: str, session: str, book: str, run: str) -> str:
    """``sub-0_ses-11_task-Sherlock1_run-2``: the stem shared by a run's files."""
    return f"sub-{subject}_ses-{session}_task-{book}_run-{run}"


def h5_path(root: Path, subject: str, session: str, book: str, run: str, proc: str = PREPROC) -> Path:
    """Where the serialised MEG of a run lies under ``root``."""
    return root / book / "derivatives" / "serialised" / f"{run_key(subject, session, book, run)}_proc-{proc}_meg.h5"


def events_path(root: Path, subject: str, session: str, book: str, run: str) -> Path:
    """Where the events of a run lie under ``root`` (no ``proc`` part)."""
    return root / book / "derivatives" / "events" / f"{run_key(subject, session, book, run)}_events.tsv"


def selectors(split: str = "2025") -> dict[str, list[dict[str, str]]]:
    """The ``dset.split.valid_recordings`` / ``test_recordings`` selectors of a pinned split."""
    spec = SPLITS[split]
    return {name: [dict(zip(("subject", "session", "task", "run"), key)) for key in spec[part]]
            for name, part in (("valid_recordings", "valid"), ("test_recordings", "test"))}


def neuromag_channels() -> tuple[list[str], list[str]]:
    """The 306 Neuromag Vectorview channel names in acquisition order (triplets grad, grad, mag: ``MEG 0113``,
    ``MEG 0112``, ``MEG 0111`` ...; mne's ``Vectorview-all`` layout) and their types (``mag`` for names ending
    in 1, ``grad`` otherwise). The h5 ``data`` rows are assumed in this order unless the file names them."""
    import mne

    names = list(mne.channels.read_layout("Vectorview-all").names)
    return names, ["mag" if n.endswith("1") else "grad" for n in names]


def neuromag_info(sfreq: float, names: tp.Sequence[str] | None = None) -> mne.Info:
    """An :class:`mne.Info` of the 306 Neuromag sensors (102 magnetometers, 204 planar gradiometers) whose coil
    types let mne pick the ``Vectorview-mag`` / ``Vectorview-grad`` layouts for sensor positions."""
    import mne
    from mne.io.constants import FIFF

    default, _ = neuromag_channels()
    names = list(names) if names is not None else default
    types = ["mag" if n.replace(" ", "").endswith("1") else "grad" for n in names]
    info = mne.create_info(names, float(sfreq), types, verbose="error")
    for ch, kind in zip(info["chs"], types):
        ch["coil_type"] = FIFF.FIFFV_COIL_VV_MAG_T3 if kind == "mag" else FIFF.FIFFV_COIL_VV_PLANAR_T1
    info["line_freq"] = LINE_FREQ
    return info


def _h5_error(path: Path, exc: BaseException, what: str) -> StudyError:
    return StudyError(f"libribrain2025: cannot {what} {path} ({type(exc).__name__}: {exc}); the file is "
                      "truncated or damaged: download it again")


def read_header(path: Path) -> tuple[int, float, list[str] | None]:
    """``(n_times, sample_frequency, channel names or None)`` of a serialised h5, checking its layout; a
    :class:`StudyError` naming the file when it cannot be opened (truncated) or lacks ``data`` /
    ``sample_frequency``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise StudyError(f"{path}: no dataset 'data' (found {sorted(f)}); not a serialised LibriBrain run")
            shape = f["data"].shape
            if "sample_frequency" not in f.attrs:
                raise StudyError(f"{path}: no attribute 'sample_frequency' (found {sorted(f.attrs)})")
            sfreq = float(np.asarray(f.attrs["sample_frequency"]).ravel()[0])
            names = f.attrs.get("channel_names")
    except StudyError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise _h5_error(path, exc, "open") from None
    if len(shape) != 2 or shape[0] != N_CHANNELS:
        raise StudyError(f"{path}: dataset 'data' has shape {shape}, expected ({N_CHANNELS}, n_times)")
    if not np.isfinite(sfreq) or sfreq <= 0:
        raise StudyError(f"{path}: sample_frequency {sfreq} is not a positive number")
    if isinstance(names, bytes):
        names = names.decode()
    parsed = [n.strip() for n in names.split(",")] if isinstance(names, str) else None
    if parsed is not None and (len(parsed) != N_CHANNELS or len(set(parsed)) != N_CHANNELS):
        parsed = None
    return int(shape[1]), sfreq, parsed


def _h5raw_class() -> type:
    import mne

    class H5Raw(mne.io.BaseRaw):
        """A raw whose samples are read from the h5 ``data`` dataset on demand (rows x time slices)."""

        def __init__(self, path: Path, info: mne.Info, n_times: int) -> None:
            super().__init__(info, preload=False, first_samps=[0], last_samps=[n_times - 1],
                             filenames=[str(path)], raw_extras=[{"path": str(path)}], orig_format="single",
                             verbose="error")

        def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):  # type: ignore[no-untyped-def]
            import h5py

            path = self._raw_extras[fi]["path"]
            try:
                with h5py.File(path, "r") as f:
                    ds = f["data"]
                    if mult is not None:
                        data[:] = mult @ np.asarray(ds[:, start:stop], dtype=np.float64)
                        return
                    if isinstance(idx, slice) and (idx.step or 1) > 0:
                        one = ds[idx, start:stop]
                    else:
                        rows = np.arange(ds.shape[0])[idx]
                        unique, inverse = np.unique(rows, return_inverse=True)
                        one = ds[unique, start:stop][inverse]  # h5py needs increasing indices
            except (OSError, KeyError, ValueError) as exc:
                raise _h5_error(Path(path), exc, f"read samples {start}:{stop} of") from None
            np.multiply(one, np.asarray(cals).reshape(-1, 1), out=data, casting="unsafe")

    return H5Raw


class LibriBrainRecording(Recording):
    """One run: a lazily read h5 and its events TSV."""

    events_in_uid = True

    def __init__(self, study: LibriBrain2025, subject: str, session: str, book: str, run: str) -> None:
        self.h5 = h5_path(study.root, subject, session, book, run, study.preproc)
        self.tsv = events_path(study.root, subject, session, book, run)
        super().__init__(study.name, subject, session, book,
                         identity={"run": str(run), "file": self.h5.relative_to(study.root).as_posix(),
                                   "format": FORMAT})
        self.run = str(run)
        self.book = book
        self.root = study.root
        #: rows of the events file left out of the phoneme events, by label (``sil``, ``oov_S`` ...)
        self.dropped: dict[str, int] = {}

    @property
    def key(self) -> str:
        """The run key ``sub-0_ses-11_task-Sherlock1_run-2``."""
        return run_key(self.subject, self.session, self.book, self.run)

    def input_files(self) -> dict[str, Path]:
        """The h5 of the run (its content fingerprint enters the uid); the events enter it through their table."""
        return {self.h5.relative_to(self.root).as_posix(): self.h5}

    def _load_raw(self) -> mne.io.BaseRaw:
        n_times, sfreq, names = read_header(self.h5)
        return _h5raw_class()(self.h5, neuromag_info(sfreq, names), n_times)

    def _load_events(self) -> pd.DataFrame:
        n_times, sfreq, _ = read_header(self.h5)
        return parse_events(self.tsv, n_times / sfreq, self.key, self.dropped)


def parse_events(tsv: Path, run_seconds: float, key: str, dropped: dict[str, int] | None = None) -> pd.DataFrame:
    """The bm2 events of one run's TSV (see the module docstring); ``dropped`` receives the counts of phoneme
    rows left out, by label."""
    if not tsv.is_file():
        raise StudyError(f"libribrain2025: missing events file {tsv} (every run needs its events TSV under "
                         "{book}/derivatives/events/)")
    table = pd.read_csv(tsv, sep="\t", keep_default_na=False, na_values=["", "n/a", "nan", "NaN"])
    missing = [c for c in EVENT_COLUMNS if c not in table.columns]
    if missing:
        raise StudyError(f"{tsv}: missing column(s) {missing}; columns are {list(table.columns)}")
    kind = table["kind"].astype(str).str.strip().str.lower()
    onset = pd.to_numeric(table["timemeg"], errors="coerce")
    duration = pd.to_numeric(table["duration"], errors="coerce").fillna(0.0).clip(lower=0.0)
    used = kind.isin(["word", "phoneme", "silence"])
    bad = used & ~np.isfinite(onset.to_numpy(dtype=float))
    if bad.any():
        raise StudyError(f"{tsv}: rows {list(table.index[bad][:5] + 2)} (file lines) have no numeric timemeg")
    segment = table["segment"].astype(str).str.strip()
    rows: list[dict[str, tp.Any]] = []
    counts: dict[str, int] = {}
    for i in np.flatnonzero((kind == "phoneme").to_numpy()):
        label = to_arpabet(segment.iat[i])
        if label is None:
            counts[segment.iat[i]] = counts.get(segment.iat[i], 0) + 1
            continue
        rows.append(dict(kind="phoneme", onset=float(onset.iat[i]), duration=float(duration.iat[i]), text=label))
    if dropped is not None:
        dropped.clear()
        dropped.update(counts)
    if counts:
        logger.debug("%s: phoneme rows left out: %s", tsv.name, counts)
    words = table[(kind == "word").to_numpy()]
    if len(words):
        sentence = (words["sentenceidx"].astype(str).str.strip() if "sentenceidx" in words.columns
                    else pd.Series("0", index=words.index))
        order = np.argsort(onset[words.index].to_numpy(dtype=float), kind="stable")
        words, sentence = words.iloc[order], sentence.iloc[order]
        position = sentence.groupby(sentence, sort=False).cumcount()
        for idx in words.index:
            rows.append(dict(kind="word", onset=float(onset[idx]), duration=float(duration[idx]),
                             text=segment[idx], sentence_id=f"{key}:{sentence[idx]}", word_index=int(position[idx])))
    for start, stop in speech_spans(kind, onset, duration, run_seconds):
        rows.append(dict(kind="sound", onset=start, duration=stop - start, offset=start,
                         filepath=f"{key}_audio (not distributed with LibriBrain)"))
    rows.append(dict(kind="block", onset=0.0, duration=run_seconds, uid=key))
    return pd.DataFrame(rows)


def speech_spans(kind: pd.Series, onset: pd.Series, duration: pd.Series,
                 run_seconds: float) -> list[tuple[float, float]]:
    """Speech spans ``(start, stop)`` in seconds by pnpl's rule: speech everywhere from the first annotation on,
    except inside ``silence`` rows; a run without silence rows: the word spans."""
    annotated = kind.isin(["word", "phoneme", "silence"]).to_numpy()
    if not annotated.any():
        return []
    on = onset.to_numpy(dtype=float)
    off = on + duration.to_numpy(dtype=float)
    silence = (kind == "silence").to_numpy()
    if not silence.any():
        words = (kind == "word").to_numpy()
        spans = sorted(zip(on[words], off[words]))
    else:
        spans, t = [], float(on[annotated].min())
        for s, e in sorted(zip(on[silence], off[silence])):
            if s > t:
                spans.append((t, float(s)))
            t = max(t, float(e))
        if t < run_seconds:
            spans.append((t, run_seconds))
    merged: list[tuple[float, float]] = []
    for s, e in spans:  # merge overlapping / touching spans, clip to the run
        s, e = max(float(s), 0.0), min(float(e), run_seconds)
        if e <= s:
            continue
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


class LibriBrain2025(Study):
    """LibriBrain 2025, serialised release (see the module docstring).

    Parameters
    ----------
    root : the dataset root holding ``Sherlock1`` ... ``Sherlock7``.
    split : name of a pinned run list (``"2025"``) or None (every run found on disk).
    on_missing : ``warn`` (log every listed run absent on disk, then read the others) or ``error``.
    books : keep only these books (e.g. ``[Sherlock1]``); None = all.
    preproc : the ``proc-`` part of the h5 names.
    """

    name = "libribrain2025"
    modality = "meg"
    device = "MEGIN Neuromag (Vectorview / Triux) 306 sensors: 102 magnetometers + 204 planar gradiometers, 250 Hz"
    language = "en"
    paradigm = "passive listening to the Sherlock Holmes audiobooks (one deep-sampled listener)"
    licence = "CC BY-NC 4.0"  # the dataset card of pnpl/LibriBrain on the Hugging Face hub
    url = "https://huggingface.co/datasets/pnpl/LibriBrain"
    doi = "10.48550/arXiv.2506.02098"
    description = ("LibriBrain: ~52 h of within-subject MEG while listening to Sherlock Holmes audiobooks, with word "
                   "and phoneme alignments; the 2025 competition's phoneme classification and speech detection.")
    downloadable = True  # python -m scripts.download libribrain2025 (bm2/download/hub.py)

    def __init__(self, root: str | Path, split: str | None = "2025", on_missing: str = "warn",
                 books: tp.Sequence[str] | None = None, preproc: str = PREPROC) -> None:
        super().__init__(Path(root).expanduser().resolve())
        if split is not None and str(split) not in SPLITS:
            raise ValueError(f"studies.libribrain2025.split={split!r}: known splits are {sorted(SPLITS)} (or null)")
        if on_missing not in ("warn", "error"):
            raise ValueError(f"studies.libribrain2025.on_missing must be warn or error, got {on_missing!r}")
        self.split = None if split is None else str(split)
        self.on_missing = on_missing
        self.books = None if books is None else {str(b) for b in books}
        self.preproc = preproc

    def prepare(self) -> None:
        """Check that the root exists (nothing is fetched here: downloads are explicit); the error says how to fetch
        the release and what to place where."""
        if not self.root.exists():
            raise StudyError(
                f"study {self.name!r}: data root {self.root} does not exist. Fetch the runs of the split from the "
                f"hub repository pnpl/LibriBrain with `python -m scripts.download libribrain2025 --root {self.root}` "
                "(or `dora run download_only=true 'dset.selections=[libribrain2025]'`; a token, if the hub asks for "
                "one, comes from HF_TOKEN). Without a network, place the release yourself, e.g. "
                "`hf download pnpl/LibriBrain --repo-type dataset --local-dir ROOT` elsewhere, so that "
                f"ROOT/Sherlock1/derivatives/serialised/sub-0_ses-1_task-Sherlock1_run-1_proc-{self.preproc}_meg.h5 "
                "and ROOT/Sherlock1/derivatives/events/sub-0_ses-1_task-Sherlock1_run-1_events.tsv exist (and so on "
                "for every run of SPLIT_2025), then point `paths.studies.libribrain2025` (or BM2_DATA, the parent of "
                "every study folder) to ROOT.")

    def on_disk(self) -> list[tuple[str, str, str, str]]:
        """Run keys ``(subject, session, book, run)`` of every h5 found under the root, sorted."""
        found = []
        for path in self.root.glob(f"*/derivatives/serialised/*_proc-{self.preproc}_meg.h5"):
            match = RUN_PATTERN.match(path.name)
            if match and match["proc"] == self.preproc and match["task"] == path.parts[-4]:
                found.append((match["sub"], match["ses"], match["task"], match["run"]))
        return sorted(found, key=_sort_key)

    def missing_runs(self) -> list[tuple[str, str, str, str]]:
        """Runs of the pinned split (books filter applied) whose h5 is absent."""
        if self.split is None:
            return []
        listed = [k for k in SPLITS[self.split]["runs"] if self.books is None or k[2] in self.books]
        return [k for k in listed if not h5_path(self.root, k[0], k[1], k[2], k[3], self.preproc).is_file()]

    def iter_recordings(self) -> tp.Iterator[LibriBrainRecording]:
        """The runs of the split present on disk (absent ones reported), or every run found (split None)."""
        self.prepare()
        if self.split is None:
            keys = [k for k in self.on_disk() if self.books is None or k[2] in self.books]
        else:
            listed = [tuple(k) for k in SPLITS[self.split]["runs"] if self.books is None or k[2] in self.books]
            missing = set(self.missing_runs())
            if missing:
                names = [run_key(*k) for k in listed if k in missing]
                message = (f"libribrain2025: {len(missing)} of the {len(listed)} runs of split {self.split!r} are "
                           f"absent under {self.root}: {names}")
                if self.on_missing == "error":
                    sub, ses, book, run = sorted(missing)[0]
                    raise StudyError(message + " (expected e.g. "
                                     f"{h5_path(self.root, sub, ses, book, run, self.preproc)})")
                logger.warning("%s; reading the %d others", message, len(listed) - len(missing))
            extra = sorted(set(self.on_disk()) - set(listed))
            if extra:
                logger.info("libribrain2025: %d run(s) on disk are not in split %r and are not read: %s", len(extra),
                            self.split, [run_key(*k) for k in extra][:10])
            keys = [k for k in listed if k not in missing]
        if not keys:
            raise StudyError(f"study {self.name!r}: no run under {self.root} (expected "
                             f"{h5_path(self.root, '0', '1', 'Sherlock1', '1', self.preproc)} and the like); fetch "
                             f"them with `python -m scripts.download libribrain2025 --root {self.root}`")
        for key in keys:
            yield LibriBrainRecording(self, *key)


def _sort_key(key: tuple[str, str, str, str]) -> tuple:
    def num(v: str) -> tuple[float, str]:
        try:
            return float(v), v
        except ValueError:
            return float("inf"), v

    return key[2], num(key[0]), num(key[1]), num(key[3])
