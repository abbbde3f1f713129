"""MEG-MASC (Gwilliams et al. 2022): 27 English speakers listening to four stories, KIT 208-channel MEG.

On disk (BIDS): ``sub-XX/ses-Y/meg/sub-XX_ses-Y_task-Z_meg.con`` with sidecars, and ``stimuli/audio/*.wav``.
Each row of ``*_events.tsv`` has ``onset``, ``duration`` and a ``trial_type`` holding a Python dict literal,
e.g. ``{'kind': 'word', 'word': 'Tara', 'sequence_id': 0.0, 'sound': 'stimuli/audio/lw1_0.wav', ...}``
(the ``sound`` value is resolved tolerantly: case, float ids such as ``lw1_0.0.wav``, see :func:`resolve_sound`).
It is parsed with :func:`ast.literal_eval` only (see :func:`~bm2.studies._common.parse_dict_literal`).

Blocks are sentences: the words sharing a ``sequence_id`` within one sound file (``sound_id`` / ``sound``),
uid = the sentence text. Phonemes (``ah_B``, ``hh_I`` ...) map to the 39 ARPABET classes.
"""

from __future__ import annotations

import math
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from .base import Recording, Study, StudyError
from ._common import (bids_inputs, is_missing, parse_dict_literal, read_raw_bids, read_tsv, require_file,
                      sentence_blocks, sentence_id, to_arpabet)

if tp.TYPE_CHECKING:
    import mne

RAW_EXTENSIONS = (".con", ".sqd", ".fif")  # .con is the published format; .fif for converted copies
#: Loader version: enters the recording uid (with the content of the raw file, its sidecars, the events
#: derived from events.tsv and the audio files they name).
FORMAT = 2


class Gwilliams2022Recording(Recording):
    """One story (task) of one session of one subject."""

    events_in_uid = True

    def __init__(self, study: Gwilliams2022, path: Path, subject: str, session: str, task: str) -> None:
        super().__init__(Gwilliams2022.name, subject, session, task,
                         identity={"file": path.relative_to(study.root).as_posix(), "format": FORMAT,
                                   "options": {"block_pad": study.block_pad}})
        self.path = path
        self.root = study.root
        self.pad = study.block_pad

    def input_files(self) -> dict[str, Path]:
        """The raw file and its BIDS sidecars (channels.tsv, *_meg.json, *_markers ...), events.tsv aside."""
        return bids_inputs(self.root, self.path)

    def _bids_path(self, **update: tp.Any) -> tp.Any:
        import mne_bids

        return mne_bids.BIDSPath(root=self.root, subject=self.subject, session=self.session, task=self.task,
                                 datatype="meg", suffix="meg", extension=self.path.suffix).update(**update)

    def _load_raw(self) -> mne.io.BaseRaw:
        path = self._bids_path()
        # mne-bids already passes preload=False to read_raw_kit for KIT files (.con / .sqd): giving it again
        # is a TypeError ("multiple values for keyword argument 'preload'").
        extra = {} if self.path.suffix in (".con", ".sqd") else {"preload": False}
        return read_raw_bids(path, extra_params=extra)

    def _sound_path(self, sound: str) -> str:
        return str(resolve_sound(self.root, sound))

    def _load_events(self) -> pd.DataFrame:
        tsv = require_file(self._bids_path(suffix="events", extension=".tsv").fpath, Gwilliams2022.name,
                           "every recording needs its BIDS _events.tsv next to the MEG file")
        table = read_tsv(tsv)  # strings indexed by line number; UTF-8, else Latin-1 with a warning
        missing = [c for c in ("onset", "duration", "trial_type") if c not in table.columns]
        if missing:
            raise StudyError(f"{tsv}: no column(s) {missing} (expected onset, duration and a dict literal per row "
                             f"in trial_type; columns are {list(table.columns)})")
        rows: list[dict[str, tp.Any]] = []
        words = []
        for line, onset_text, duration_text, literal in zip(table.index, table["onset"], table["duration"],
                                                             table["trial_type"]):
            info = parse_dict_literal(literal, f"{tsv} line {line}")
            kind = info.get("kind")
            if kind not in ("word", "phoneme", "sound"):
                continue  # rows bm2 does not use may have anything, even no onset
            onset, duration = _number(onset_text, tsv, line, "onset"), _number(duration_text, tsv, line, "duration")
            if onset is None:
                raise StudyError(f"{tsv} line {line}: a {kind} row has no onset (found {onset_text!r})")
            duration = duration or 0.0
            if kind == "word":
                seq = info.get("sequence_id")
                unit = info.get("sound_id", info.get("sound"))
                words.append(dict(onset=onset, duration=duration, text=str(info.get("word", "")).strip(),
                                  group=(info.get("story"), unit, seq)))
            elif kind == "phoneme":
                label = to_arpabet(info.get("phoneme"))
                if label is not None:  # silences / unknown labels are no phoneme class
                    rows.append(dict(kind="phoneme", onset=onset, duration=duration, text=label))
            elif kind == "sound":
                rows.append(dict(kind="sound", onset=onset, duration=duration,
                                 filepath=self._sound_path(str(info.get("sound", ""))),
                                 offset=float(info.get("start", 0.0) or 0.0)))
        for row in rows:
            if row["kind"] == "sound" and row["duration"] <= 0:
                row["duration"] = _sound_duration(row, words)
        if not words:
            raise StudyError(f"{tsv}: no word events; is this a MEG-MASC events file?")
        wdf = pd.DataFrame(words)
        wdf["group"] = wdf["group"].map(repr)  # hashable, order-preserving key
        texts = wdf.groupby("group", sort=False)["text"].apply(lambda s: " ".join(s))
        wdf["sentence_text"] = wdf["group"].map(texts)
        wdf["sentence_id"] = wdf["sentence_text"].map(sentence_id)
        wdf["word_index"] = wdf.groupby("group", sort=False).cumcount()
        blocks = sentence_blocks(wdf[["onset", "duration", "sentence_id", "text"]], pad=self.pad)
        wdf = wdf.assign(kind="word").drop(columns=["group", "sentence_text"])
        return pd.concat([pd.DataFrame(rows), wdf, blocks], ignore_index=True)


def _number(text: str, tsv: Path, line: int, column: str) -> float | None:
    """A finite number from a tsv cell, None when the cell is empty / n/a; a StudyError naming the line else."""
    if is_missing(text):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value):
        raise StudyError(f"{tsv} line {line}: {column} {text!r} is not a number")
    return value


def resolve_sound(root: Path, sound: str) -> Path:
    """The wav file of an annotation's ``sound`` value.

    Tried in order: the path as written (relative to the root), the same lower-cased, then its file name under
    ``stimuli/audio`` compared case-insensitively, also with a float sound id collapsed (``lw1_0.0.wav`` ->
    ``lw1_0.wav``). When nothing exists the path as written is returned (audio features then name it)."""
    written = root / str(sound).lstrip("/")
    candidates = [written, root / str(sound).lower().lstrip("/")]
    name = Path(str(sound)).name
    names = {name.lower(), re.sub(r"_(\d+)\.0+\.wav$", r"_\1.wav", name.lower())}
    folder = root / "stimuli" / "audio"
    for path in candidates:
        if path.is_file():
            return path
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.name.lower() in names:
                return path
    return written


def _sound_duration(row: dict[str, tp.Any], words: list[dict[str, tp.Any]]) -> float:
    """Duration of a sound event whose tsv says 0: the file's length, else up to the last word after it."""
    path = Path(row["filepath"])
    if path.exists():
        import soundfile

        info = soundfile.info(str(path))
        return max(info.frames / info.samplerate - row["offset"], 1e-3)
    ends = [w["onset"] + w["duration"] for w in words if w["onset"] >= row["onset"]]
    return max(max(ends, default=row["onset"] + 1e-3) - row["onset"], 1e-3)


class Gwilliams2022(Study):
    """MEG-MASC: 27 subjects, two sessions, four stories each (some subjects miss a session).

    Parameters
    ----------
    root : the BIDS root (``participants.tsv``, ``sub-*``, ``stimuli/audio``).
    subjects, sessions, tasks : keep only these ids (None = all).
    block_pad : seconds of signal kept before the first and after the last sentence of a recording.
    """

    name = "gwilliams2022"
    modality = "meg"
    device = "KIT/Yokogawa 208 axial gradiometers, 1000 Hz"
    language = "en"
    paradigm = "passive listening to four short stories (MASC corpus), two sessions"
    licence = "CC BY 4.0"
    url = "https://osf.io/ag3kj/"
    doi = "10.1038/s41597-023-02752-5"
    description = ("MEG-MASC: 27 English speakers listened to ~1 h of naturalistic stories in two sessions; "
                   "BIDS with word and phoneme timings (56.2 h, 196 recordings).")

    def __init__(self, root: str | Path, subjects: tp.Sequence[str] | None = None,
                 sessions: tp.Sequence[str] | None = None, tasks: tp.Sequence[str] | None = None,
                 block_pad: float = 1.0) -> None:
        super().__init__(Path(root).expanduser().resolve())
        self.subjects = None if subjects is None else {str(s) for s in subjects}
        self.sessions = None if sessions is None else {str(s) for s in sessions}
        self.tasks = None if tasks is None else {str(s) for s in tasks}
        self.block_pad = float(block_pad)

    def iter_recordings(self) -> tp.Iterator[Gwilliams2022Recording]:
        """Recordings sorted by subject, session, task; missing sessions / tasks are simply absent."""
        self.prepare()
        found = []
        for path in self.root.glob("sub-*/ses-*/meg/sub-*_ses-*_task-*_meg.*"):
            if path.suffix not in RAW_EXTENSIONS:
                continue
            ent = dict(part.split("-", 1) for part in path.name.split("_")[:-1] if "-" in part)
            if not {"sub", "ses", "task"} <= set(ent):
                continue
            sub, ses, task = ent["sub"], ent["ses"], ent["task"]
            if (self.subjects and sub not in self.subjects) or (self.sessions and ses not in self.sessions) \
                    or (self.tasks and task not in self.tasks):
                continue
            found.append(((sub, _num(ses), _num(task), RAW_EXTENSIONS.index(path.suffix)), path, sub, ses, task))
        if not found:
            raise StudyError(f"study {self.name!r}: no 'sub-*/ses-*/meg/*_meg.con' file under {self.root}; "
                             "point paths.studies.gwilliams2022 to the MEG-MASC BIDS root")
        seen = set()
        for _, path, sub, ses, task in sorted(found):
            if (sub, ses, task) not in seen:  # one file per recording (prefer .con)
                seen.add((sub, ses, task))
                yield Gwilliams2022Recording(self, path, sub, ses, task)


def _num(value: str) -> tuple[float, str]:
    try:
        return float(value), value
    except ValueError:
        return math.inf, value
