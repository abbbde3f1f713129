"""A generic BIDS study: any MEG / EEG / iEEG dataset whose ``*_events.tsv`` carries the stimulus annotations.

Configured entirely by options (``studies.bids.*``, see :class:`BidsStudy`):

* which recordings: ``subject`` / ``session`` / ``task`` filters and ``datatype``;
* ``name``: the dataset's name (default: the root folder's name); it enters every recording's uid;
* ``columns``: which tsv column holds the event kind, the word, the sound file, the phoneme, the sentence id,
  the word index and the offset into the sound file;
* ``kinds``: for each bm2 kind (``word``, ``phoneme``, ``sound``), the value(s) of the kind column that mean it:
  one value, a list of values, ``'*'`` (every row with a value in that kind's own column, e.g. every row
  naming a sound file) or null (no such events). Trigger codes compare as numbers (``1`` == ``"1.0"``). A row
  matching several kinds yields one event of each (a row naming a sound file and a word is a sound event and
  a word event);
* ``blocks`` (the units that go to one split): ``sentence`` (one block per run of words sharing the sentence
  column, uid = the words joined by spaces), ``sound`` (one block per sound event, uid = the file name) or
  ``column:NAME`` (one block per run of rows sharing the value of column NAME, uid = that value); every mode
  pads the first block by ``block_pad`` s before and the last one after, and neighbouring blocks meet halfway
  between their spans;
* ``montage``: a montage for electrodes without positions (a name of ``mne.channels.get_builtin_montages()``
  or a montage file).

Reading ``events.tsv``. The file is read as UTF-8 (with or without BOM), else Latin-1 with a warning. Rows
whose kind is not configured are ignored, whatever they hold (e.g. EEGLAB ``boundary`` rows with an ``n/a``
onset). A used row with an empty / ``n/a`` / non-numeric onset, a non-numeric or negative duration, no word, no
sound file ... is an error naming the file, the line (the header is line 1), the value found and the key to
set. Missing durations are 0 for words and phonemes; a sound whose duration is 0 or missing (what mne-bids
writes) lasts as long as its audio file (after ``sound_offset``), and a word of duration 0 on the same row as
a sound spans that sound. Events outside the data (onset < 0 or after the recording's end) are left out with a
warning saying how many and where the data end; a file with no event inside the data is an error.

Sound paths are taken relative to the BIDS root (then to ``root/stimuli``). Raw files are read with mne-bids.

iEEG (``datatype: ieeg``). The modality is what the channels say: ``seeg`` when most iEEG channels of
``channels.tsv`` are of type SEEG (or DBS), ``ecog`` when they are ECOG (:func:`~bm2.studies._seeg.ieeg_modality`;
each recording's :attr:`BidsRecording.modality`, and the study's when it reads iEEG). Contacts take their
positions from ``electrodes.tsv`` when the dataset has one; sEEG contacts without any position get a layout from
their names instead (one column per shaft, one row per contact, as ``duin2024``), logged. ``bipolar: true``
re-references the good sEEG contacts to bipolar channels of direct neighbours on a shaft (``A1-A2``, ``A2-A3``
...: :func:`~bm2.studies._seeg.bipolar_pairs` gives the pairing rule and what happens to contacts without a
neighbour) with :func:`mne.set_bipolar_reference`, located at the midpoint of their two contacts; ECoG and other
channels are left as they are. The option enters the recordings' identity, hence every cache key.
"""

from __future__ import annotations

import collections
import logging
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._bids_events import ANY, EventsTsv, kind_values
from ._seeg import ieeg_modality, set_bipolar
from .base import MissingPositionsError, Recording, Study, StudyError
from ._common import bids_inputs, quiet, read_raw_bids, read_tsv

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

# BIDS datatype -> bm2 modality; for ieeg the channel types of channels.tsv decide (seeg / ecog), ecog without them
DATATYPES = {"meg": "meg", "eeg": "eeg", "ieeg": "ecog"}
DEFAULT_COLUMNS = {"kind": "trial_type", "word": "word", "sound": "sound", "phoneme": "phoneme",
                   "sentence_id": "sentence_id", "word_index": "word_index", "sound_offset": None}
DEFAULT_KINDS = {"word": "word", "phoneme": "phoneme", "sound": "sound"}
EVENTS_VERSION = 2  # bump when the events derived from the same files change (enters the recording uid)


def _as_list(value: tp.Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


class BidsRecording(Recording):
    """One raw file of the BIDS dataset and its events.tsv."""

    events_in_uid = True

    def __init__(self, study: BidsStudy, bids_path: tp.Any) -> None:
        ent = bids_path.entities
        super().__init__(study.name, ent["subject"], ent.get("session") or "0", ent.get("task") or "0",
                         identity={"dataset": study.dataset_name,
                                   "file": bids_path.fpath.relative_to(study.root).as_posix(),
                                   "run": ent.get("run"), "acq": ent.get("acquisition"),
                                   "options": study.options(), "events_version": EVENTS_VERSION})
        self.bids_path = bids_path
        self.study_ = study

    @property
    def dataset_name(self) -> str:
        return self.study_.dataset_name

    def input_files(self) -> dict[str, Path]:
        """The raw file(s), the sidecars they inherit (channels.tsv, *_meg.json, electrodes.tsv ...) and the
        montage file, if any (the events enter the uid through their content)."""
        files = bids_inputs(self.study_.root, self.bids_path.fpath)
        montage = self.study_.montage_file()
        if montage is not None:
            files["montage:" + montage.name] = montage
        return files

    @property
    def events_path(self) -> Path:
        """The recording's ``*_events.tsv``."""
        return Path(self.bids_path.copy().update(suffix="events", extension=".tsv").fpath)

    @property
    def channels_path(self) -> Path:
        """The recording's ``*_channels.tsv``."""
        return Path(self.bids_path.copy().update(suffix="channels", extension=".tsv").fpath)

    @property
    def modality(self) -> str:
        """``meg``, ``eeg``, or for iEEG ``seeg`` / ``ecog`` as the channel types of ``channels.tsv`` say (ECoG
        when the file is missing or names neither)."""
        datatype = self.bids_path.datatype
        if datatype != "ieeg":
            return DATATYPES.get(datatype, "eeg")
        path = self.channels_path
        types = read_tsv(path).get("type", pd.Series(dtype=str)) if path.is_file() else []
        return ieeg_modality(types) or DATATYPES["ieeg"]

    def _load_raw(self) -> mne.io.BaseRaw:
        raw = read_raw_bids(self.bids_path, extra_params={"preload": False})
        montage = self.study_.make_montage()
        if montage is not None:
            with quiet():
                raw.set_montage(montage, match_case=False, on_missing="ignore", verbose="error")
        if self.study_.bipolar:
            try:
                raw = set_bipolar(raw, source=str(self.bids_path.fpath))
            except ValueError as exc:
                raise StudyError(str(exc)) from exc
        return raw

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """The dataset's positions (electrodes.tsv, montage); sEEG contacts without any get the layout of
        their names (shaft, contact number) instead, logged."""
        try:
            return super().sensor_positions(ch_names)
        except MissingPositionsError:
            import mne

            raw = self.raw()
            types = {mne.channel_type(raw.info, raw.ch_names.index(c)) for c in ch_names}
            if not types <= {"seeg", "dbs"}:
                raise
            from .duin2024 import channel_layout

            logger.info("%s: sEEG contacts without positions (no electrodes.tsv): laid out by name, one column "
                        "per shaft and one row per contact", self.bids_path.fpath.name)
            return channel_layout(ch_names)

    def data_end(self) -> float:
        """Seconds of data in the raw file (onsets are seconds from its first sample)."""
        raw = self.raw()
        return raw.n_times / float(raw.info["sfreq"])

    def _load_events(self) -> pd.DataFrame:
        tsv = self.events_path
        if not tsv.exists():
            raise StudyError(f"study 'bids': missing {tsv}; every recording needs an events.tsv with the "
                             "stimulus annotations (see studies.bids.columns and studies.bids.kinds)")
        return EventsTsv(self.study_, tsv, read_tsv(tsv)).events(self.data_end(), self.bids_path.fpath.name)


class BidsStudy(Study):
    """Any BIDS MEG / EEG / iEEG dataset, usable by configuration alone (see the module docstring).

    Parameters
    ----------
    root : the BIDS root.
    subject, session, task : an id or a list of ids to keep (None = all).
    datatype : ``meg``, ``eeg`` or ``ieeg`` (None = whichever is found).
    columns : tsv column names, by role: kind, word, sound, phoneme, sentence_id, word_index, sound_offset.
    kinds : for each bm2 kind (word, phoneme, sound), the value(s) of the kind column meaning it, ``'*'`` or
        None (see the module docstring).
    blocks : ``sentence``, ``sound`` or ``column:NAME`` (see the module docstring).
    block_pad : s before the first / after the last block of a recording.
    montage : electrode positions for channels without any: a name of
        ``mne.channels.get_builtin_montages()`` or a montage file (absolute, or relative to the root or to the
        working directory); None = the positions of the dataset.
    name : the dataset's name (None = the root folder's name); enters every recording's uid.
    bipolar : re-reference sEEG contacts to bipolar channels of neighbours on a shaft (module docstring).
    """

    name = "bids"
    modality = "eeg"  # the class default; an instance takes the modality of its ``datatype``
    device = "any (read from the BIDS sidecars)"
    language = "any"
    paradigm = "listening (any paradigm whose events.tsv annotates sounds / words)"
    licence = "that of the dataset"
    url = "https://bids.neuroimaging.io"
    doi = "10.1038/sdata.2016.44"
    description = "Generic reader of BIDS MEG / EEG / iEEG datasets with stimulus annotations in events.tsv."
    downloadable = False

    def __init__(self, root: str | Path, subject: tp.Any = None, session: tp.Any = None, task: tp.Any = None,
                 datatype: str | None = None, columns: dict[str, str | None] | None = None,
                 kinds: dict[str, tp.Any] | None = None, blocks: str = "sentence", block_pad: float = 1.0,
                 montage: str | None = None, name: str | None = None, bipolar: bool = False) -> None:
        super().__init__(Path(root).expanduser().resolve())
        if datatype is not None and datatype not in DATATYPES:
            raise ValueError(f"studies.bids.datatype must be one of {list(DATATYPES)} or null, got {datatype!r}")
        if blocks not in ("sentence", "sound") and not (str(blocks).startswith("column:") and len(blocks) > 7):
            raise ValueError(f"studies.bids.blocks must be 'sentence', 'sound' or 'column:NAME', got {blocks!r}")
        self.subjects, self.sessions, self.tasks = _as_list(subject), _as_list(session), _as_list(task)
        self.datatype = datatype
        if datatype:
            self.modality = DATATYPES[datatype]  # type: ignore[misc]  # per-instance: the data decides
        unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
        if unknown:
            raise ValueError(f"studies.bids.columns: unknown roles {sorted(unknown)}; roles are "
                             f"{list(DEFAULT_COLUMNS)}")
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        unknown = set(kinds or {}) - set(DEFAULT_KINDS)
        if unknown:
            raise ValueError(f"studies.bids.kinds: unknown bm2 kinds {sorted(unknown)}; kinds are "
                             f"{list(DEFAULT_KINDS)}")
        merged = {**DEFAULT_KINDS, **(kinds or {})}
        self.kinds = {k: kind_values(k, v) for k, v in merged.items()}
        self.blocks = str(blocks)
        self.block_pad = float(block_pad)
        self.montage = None if montage is None else str(montage)
        if name is not None and not str(name).strip():
            raise ValueError("studies.bids.name must be a non-empty name or null (the root folder's name)")
        self.dataset_name = str(name).strip() if name is not None else self.root.name
        self.bipolar = bool(bipolar)

    def options(self) -> dict[str, tp.Any]:
        """The options that shape a recording's signal or events (they enter its identity)."""
        kinds = {k: v if v is None or v == ANY else list(v) for k, v in self.kinds.items()}
        options = {"columns": self.columns, "kinds": kinds, "blocks": self.blocks, "block_pad": self.block_pad,
                   "montage": self.montage}
        if self.bipolar:  # only when set: the uids (and caches) of monopolar recordings stay as they were
            options["bipolar"] = True
        return options

    def prepare(self) -> None:
        if not self.root.exists():
            raise StudyError(f"study 'bids': data root {self.root} does not exist. Point `paths.studies.bids` to "
                             "your BIDS dataset (the folder holding dataset_description.json and the sub-* "
                             "folders); nothing is downloaded for this study")

    def sound_path(self, sound: tp.Any) -> str:
        """The audio file of an events.tsv value: as written if absolute, else under the root, else under
        ``root/stimuli`` (the path under the root when none exists)."""
        path = Path(str(sound).strip())
        for candidate in (path, self.root / path, self.root / "stimuli" / path):
            if candidate.is_absolute() and candidate.exists():
                return str(candidate)
        return str(self.root / path)

    def montage_file(self) -> Path | None:
        """The montage file of the ``montage`` option, None when it is unset or a built-in montage name."""
        if self.montage is None:
            return None
        path = Path(self.montage).expanduser()
        for candidate in ((path,) if path.is_absolute() else (self.root / path, Path.cwd() / path)):
            if candidate.is_file():
                return candidate.resolve()
        return None

    def make_montage(self) -> tp.Any:
        """The :class:`mne.channels.DigMontage` of the ``montage`` option (None when unset)."""
        if self.montage is None:
            return None
        import mne

        path = self.montage_file()
        if path is not None:
            with quiet():
                if path.suffix.lower() == ".fif":
                    return mne.channels.read_dig_fif(path)
                return mne.channels.read_custom_montage(path)
        try:
            with quiet():
                return mne.channels.make_standard_montage(self.montage)
        except ValueError:
            raise StudyError(f"studies.bids.montage={self.montage!r} is neither a montage file (looked under "
                             f"{self.root} and {Path.cwd()}) nor a built-in montage; built-in montages are "
                             f"{mne.channels.get_builtin_montages()}") from None

    def iter_recordings(self) -> tp.Iterator[BidsRecording]:
        """Raw files matching the filters, sorted by path."""
        import mne_bids
        from mne_bids.config import ALLOWED_DATATYPE_EXTENSIONS

        self.prepare()
        datatypes = [self.datatype] if self.datatype else list(DATATYPES)
        found = []
        for dt in datatypes:
            paths = mne_bids.find_matching_paths(self.root, subjects=self.subjects, sessions=self.sessions,
                                                 tasks=self.tasks, datatypes=dt, suffixes=dt,
                                                 extensions=ALLOWED_DATATYPE_EXTENSIONS[dt])
            found += [p for p in paths if p.entities.get("split") in (None, "01")]
        if not found:
            raise StudyError(f"study 'bids': no {'/'.join(datatypes)} recording under {self.root} matching "
                             f"subject={self.subjects} session={self.sessions} task={self.tasks}; check "
                             "paths.studies.bids and the studies.bids filters")
        recordings = [BidsRecording(self, path) for path in sorted(found, key=lambda p: str(p.fpath))]
        ieeg = [r.modality for r in recordings if r.bids_path.datatype == "ieeg"]
        if ieeg and len(ieeg) == len(recordings):  # the channel types decide between sEEG and ECoG
            self.modality = max(sorted(set(ieeg)), key=ieeg.count)  # type: ignore[misc]  # per-instance
            if len(set(ieeg)) > 1:
                logger.info("study 'bids': iEEG recordings of both kinds (%s); modality %s",
                            dict(collections.Counter(ieeg)), self.modality)
        yield from recordings
