"""MOUS (Schoffelen et al. 2019), auditory subjects: Dutch sentences and word lists, CTF 275 MEG at 1200 Hz.

On disk (Donders repository, BIDS-like; best known layout, see ``/work/shared/ANCHORS.md``):

* ``sub-A2xxx/meg/sub-A2xxx_task-auditory_meg.ds``: CTF datasets (273 axial gradiometers, reference
  magnetometers / gradiometers, the ``UPPT001`` trigger channel, ``UADC`` analogue channels). Reference channels
  are dropped **by channel type** (mne's ``ref_meg``), never by name or position.
* ``sourcedata/meg_task/*A2xxx*.log``: the Presentation log. Two tab-separated tables; the first one (header
  ``Subject  Trial  Event Type  Code  Time ...``) lists every stimulus with its ``Time`` in units of 1e-4 s on
  the stimulus computer's clock. ``Sound`` events carry the stimulus number in ``Code``.
* ``stimuli/stimuli.txt``: ``number <tab or space> text`` per stimulus; ``stimuli/audio_files/
  EQ_Ramp_Int2_Int1LPF{NNN}.wav``; forced-alignment TextGrids named after the audio file (searched under
  ``stimuli/`` or the ``textgrids`` folder), with a word tier and a phone tier.

Timing: the log clock and the MEG clock differ by an unknown offset. The trigger onsets found on the stim
channel are matched to the log's sound times (:func:`align_log_to_triggers`: the offset that pairs the most
sounds with a trigger within 10 ms, refined by the median of the matched pairs); each sound is then placed at
its trigger (or at log time + offset when its trigger is missing).

Conditions: stimulus numbers up to :data:`LAST_SENTENCE` are sentences, the others word lists (scrambled
versions of the sentences); verify against the dataset's documentation. Every stimulus is one ``block``
(uid = its text from ``stimuli.txt``), so a sentence lands in the same split for every subject even though
subjects hear them in different orders. Words carry ``sentence_id`` = content hash of the stimulus text and
``word_index`` = position in the TextGrid word tier.

Phonemes: MOUS is Dutch; alignment labels (SAMPA / ARPABET-like) are mapped to the 39 ARPABET classes only
when the sound has a clear English counterpart (:data:`SAMPA_TO_ARPABET`); other labels (``y``, ``2:``, ``Ei``,
``x``, ``G`` ...) produce **no** phoneme event rather than an invented class.
"""

from __future__ import annotations

import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import quiet, read_textgrid, require_file, sentence_id, to_arpabet
from .base import Recording, Study, StudyError, layout_positions

if tp.TYPE_CHECKING:
    import mne

# Subjects left out for missing or broken data. PLACEHOLDER list: the ids below were not verified; check them
# against the dataset's documentation (README / participants notes of the MOUS release) before reporting results.
EXCLUDED_SUBJECTS: tuple[str, ...] = ("A2011", "A2036", "A2062", "A2063", "A2076", "A2084")
LAST_SENTENCE = 180             # stimuli 1..180 are sentences, 181..360 word lists (assumption, see docstring)
LOG_TIME_UNIT = 1e-4            # Presentation log times are in units of 0.1 ms
TRIGGER_CHANNEL = "UPPT001"
ALIGN_TOLERANCE = 0.010         # s, a trigger and a logged sound within this distance are the same event
AUDIO_PATTERN = "EQ_Ramp_Int2_Int1LPF{num:03d}.wav"
WORD_TIERS = ("words", "word", "ort", "ort-mau", "orthography", "woorden")
PHONE_TIERS = ("phones", "phonemes", "phone", "mau", "segments", "fonemen")
SILENCES = {"", "sil", "sp", "spn", "<p:>", "<p>", "#", "_", "<usb>"}
# Dutch SAMPA labels with a clear ARPABET counterpart; everything else is dropped (no invented classes).
SAMPA_TO_ARPABET = {
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V", "s": "S", "z": "Z",
    "S": "SH", "Z": "ZH", "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R", "j": "Y", "w": "W", "h": "HH",
    "i": "IY", "u": "UW", "E": "EH", "I": "IH", "@": "AH", "tS": "CH", "dZ": "JH",
}


# Dutch SAMPA sounds without an English counterpart (some look like ARPABET labels: SAMPA wins, MOUS is Dutch)
DUTCH_ONLY = {"G", "x", "y", "Y", "2:", "9", "9y", "Ei", "Au", "a:", "e:", "o:", "O", "A", "y:", "E:", "9:", "O:"}


def phoneme_class(label: str) -> str | None:
    """The ARPABET class of an alignment label, or None when it has no faithful counterpart.

    Labels are read as Dutch SAMPA first; ARPABET-looking labels (``AH0``, ``HH``) that are not SAMPA are
    accepted as they are."""
    label = label.strip()
    if label in SAMPA_TO_ARPABET:
        return SAMPA_TO_ARPABET[label]
    if label in DUTCH_ONLY:
        return None
    if label.isupper() or re.fullmatch(r"[A-Z]+\d", label):  # already ARPABET (AH0, HH ...)
        return to_arpabet(label)
    return None


# -- Presentation log ------------------------------------------------------------------------------------

def read_presentation_log(path: Path) -> pd.DataFrame:
    """The first table of a Presentation ``.log`` (columns as in its header; ``Time`` converted to seconds
    in a ``time`` column). The second table (after the next blank line + header) is ignored."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Subject\t") and "Event Type" in line), None)
    if start is None:
        raise StudyError(f"{path}: not a Presentation log (no 'Subject<TAB>Trial<TAB>Event Type ...' header)")
    header = lines[start].split("\t")
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if not line.strip():
            if rows:
                break  # end of the first table
            continue
        cells = line.split("\t")
        rows.append(cells[: len(header)] + [""] * (len(header) - len(cells)))
    table = pd.DataFrame(rows, columns=_unique(header))
    for col in ("Event Type", "Code", "Time"):
        if col not in table.columns:
            raise StudyError(f"{path}: the log table has no {col!r} column (columns: {list(table.columns)})")
    table["time"] = pd.to_numeric(table["Time"], errors="coerce") * LOG_TIME_UNIT
    return table


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}.{seen[n] - 1}")
    return out


def sound_events(log: pd.DataFrame) -> pd.DataFrame:
    """Rows ``stimulus`` (int), ``time`` (s, log clock) of the log's ``Sound`` events."""
    sounds = log[log["Event Type"].str.strip().str.lower() == "sound"]
    nums = sounds["Code"].astype(str).str.extract(r"(\d+)\s*$")[0]
    out = pd.DataFrame({"stimulus": pd.to_numeric(nums, errors="coerce"), "time": sounds["time"]})
    return out.dropna().astype({"stimulus": int}).reset_index(drop=True)


def align_log_to_triggers(log_times: np.ndarray, trigger_times: np.ndarray,
                          tolerance: float = ALIGN_TOLERANCE) -> tuple[float, np.ndarray]:
    """Offset ``d`` (s) such that ``meg_time = log_time + d``, and for each log time the index of its trigger
    (-1 if none within ``tolerance``). The offset maximises the number of matched events (every trigger /
    log pair is a candidate), then is refined as the median difference of the matched pairs."""
    log_times = np.asarray(log_times, float)
    trigger_times = np.sort(np.asarray(trigger_times, float))
    if not len(log_times) or not len(trigger_times):
        raise StudyError("cannot align the log to the MEG: no logged sounds or no triggers")

    def match(d: float) -> np.ndarray:
        target = log_times + d
        pos = np.clip(np.searchsorted(trigger_times, target), 1, len(trigger_times) - 1) \
            if len(trigger_times) > 1 else np.zeros(len(target), int)
        left = np.clip(pos - 1, 0, len(trigger_times) - 1)
        best = np.where(np.abs(trigger_times[left] - target) <= np.abs(trigger_times[pos] - target), left, pos)
        return np.where(np.abs(trigger_times[best] - target) <= tolerance, best, -1)

    candidates = np.unique(np.round((trigger_times[:, None] - log_times[None, :]).ravel(), 4))
    scores = [(int((match(d) >= 0).sum()), -abs(d), d) for d in candidates]
    _, _, d = max(scores)
    idx = match(d)
    if idx.max() >= 0:
        d = float(np.median(trigger_times[idx[idx >= 0]] - log_times[idx >= 0]))
        idx = match(d)
    return float(d), idx


# -- stimuli ---------------------------------------------------------------------------------------------

def read_stimuli(path: Path) -> dict[int, str]:
    """``{stimulus number: text}`` from ``stimuli.txt`` (``number`` then a tab or spaces, then the text)."""
    out = {}
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        m = re.match(r"\s*(\d+)[\s\t]+(.*\S)", line)
        if m:
            out[int(m.group(1))] = m.group(2).strip()
        elif line.strip():
            raise StudyError(f"{path} line {i + 1}: expected '<stimulus number> <text>', got {line[:60]!r}")
    if not out:
        raise StudyError(f"{path}: no stimulus found")
    return out


def _pick_tier(tiers: dict[str, list], names: tuple[str, ...], path: Path, what: str) -> list | None:
    for key, items in tiers.items():
        if key.strip().lower() in names:
            return items
    if what == "word" and tiers:
        return next(iter(tiers.values()))
    return None


class Schoffelen2019Recording(Recording):
    """The auditory session of one MOUS subject."""

    def __init__(self, study: Schoffelen2019, ds: Path, subject: str) -> None:
        meg4 = ds / f"{ds.name[:-3]}.meg4"
        size = meg4.stat().st_size if meg4.exists() else 0
        super().__init__(Schoffelen2019.name, subject, "0", "auditory",
                         identity={"file": str(ds.relative_to(study.root)), "size": size})
        self.ds = ds
        self._study = study
        self._full: mne.io.BaseRaw | None = None

    def full_raw(self) -> mne.io.BaseRaw:
        """Every channel of the CTF dataset (references and trigger included), loaded lazily."""
        if self._full is None:
            import mne

            if not self.ds.is_dir():
                raise StudyError(f"study 'schoffelen2019': missing CTF dataset folder {self.ds}")
            with quiet():
                self._full = mne.io.read_raw_ctf(self.ds, preload=False, clean_names=False, verbose="error")
        return self._full

    def _load_raw(self) -> mne.io.BaseRaw:
        """The 273 axial gradiometers only: reference channels are excluded by type (``ref_meg``)."""
        import mne

        full = self.full_raw()
        picks = mne.pick_types(full.info, meg=True, ref_meg=False, exclude=[])
        if not len(picks):
            raise StudyError(f"{self.ds}: no MEG gradiometer channel")
        with quiet():
            return full.copy().pick([full.ch_names[i] for i in picks], verbose="error")

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """Positions on mne's CTF-275 layout, matched on the name before the system suffix (``MLC11-4304`` ->
        ``MLC11``); falls back to a projection of the 3-D sensor locations."""
        import mne

        layout = mne.channels.read_layout("CTF-275")
        index = {n.split("-")[0]: i for i, n in enumerate(layout.names)}
        keys = [c.split("-")[0] for c in ch_names]
        if not all(k in index for k in keys):
            return layout_positions(self.raw().info, ch_names)
        rows = [index[k] for k in keys]
        pos = layout.pos[rows, :2] + layout.pos[rows, 2:4] / 2
        pos = pos - pos.min(axis=0)
        return (pos / np.maximum(pos.max(axis=0), 1e-12)).astype(np.float32)

    def trigger_times(self) -> np.ndarray:
        """Onsets (s, MEG clock) of every rising edge of the trigger channel."""
        import mne

        raw = self.full_raw()
        stim = [TRIGGER_CHANNEL] if TRIGGER_CHANNEL in raw.ch_names else \
            [raw.ch_names[i] for i in mne.pick_types(raw.info, meg=False, stim=True)]
        if not stim:
            raise StudyError(f"{self.ds}: no trigger channel ({TRIGGER_CHANNEL} or any stim channel)")
        with quiet():
            events = mne.find_events(raw, stim_channel=stim[0], shortest_event=1, initial_event=True,
                                     consecutive=True, verbose="error")
        return (events[:, 0] - raw.first_samp) / raw.info["sfreq"]

    def log_path(self) -> Path:
        folder = self._study.root / "sourcedata" / "meg_task"
        found = sorted(folder.glob(f"*{self.subject}*.log")) if folder.is_dir() else []
        if not found:
            raise StudyError(f"study 'schoffelen2019': no Presentation log '{folder}/*{self.subject}*.log' for "
                             f"subject {self.subject}; the sourcedata/meg_task folder of MOUS is needed")
        auditory = [p for p in found if "aud" in p.name.lower()]
        return (auditory or found)[0]

    def alignment(self) -> tuple[pd.DataFrame, float]:
        """Logged sounds with their MEG onset (``onset`` column), and the log -> MEG clock offset."""
        log = read_presentation_log(self.log_path())
        sounds = sound_events(log)
        if sounds.empty:
            raise StudyError(f"{self.log_path()}: no 'Sound' event with a stimulus number")
        triggers = self.trigger_times()
        offset, idx = align_log_to_triggers(sounds["time"].to_numpy(), triggers)
        if (idx >= 0).sum() < max(1, len(sounds) // 2):
            raise StudyError(f"{self.ds}: only {(idx >= 0).sum()} of {len(sounds)} logged sounds match a trigger "
                             f"of {TRIGGER_CHANNEL}; cannot align the log with the MEG")
        onsets = np.where(idx >= 0, np.sort(triggers)[np.maximum(idx, 0)], sounds["time"].to_numpy() + offset)
        return sounds.assign(onset=onsets), offset

    def _load_events(self) -> pd.DataFrame:
        import soundfile

        study = self._study
        sounds, _ = self.alignment()
        texts = study.stimuli()
        end = self.raw().times[-1] + 1.0 / self.raw().info["sfreq"]
        rows: list[dict[str, tp.Any]] = []
        spans = []
        for sound in sounds.itertuples():
            num = int(sound.stimulus)
            if num not in texts:
                raise StudyError(f"stimulus {num} of {self.log_path()} is not in {study.root / 'stimuli'}/stimuli.txt")
            wav = require_file(study.root / "stimuli" / "audio_files" / AUDIO_PATTERN.format(num=num), study.name,
                               "the audio files of MOUS go to stimuli/audio_files/")
            info = soundfile.info(str(wav))
            duration = min(info.frames / info.samplerate, end - sound.onset)
            if duration <= 0 or sound.onset < 0:
                continue  # sound outside the recording
            text = texts[num]
            rows.append(dict(kind="sound", onset=sound.onset, duration=duration, filepath=str(wav), offset=0.0,
                             condition=_condition(num), stimulus=num))
            sid = sentence_id(text)
            tiers = read_textgrid(study.textgrid(num))
            words = _pick_tier(tiers, WORD_TIERS, wav, "word") or []
            k = 0
            for a, b, label in words:
                if label.strip().lower() in SILENCES or a >= duration:
                    continue
                rows.append(dict(kind="word", onset=sound.onset + a, duration=b - a, text=label.strip(),
                                 sentence_id=sid, word_index=k, condition=_condition(num), stimulus=num))
                k += 1
            for a, b, label in _pick_tier(tiers, PHONE_TIERS, wav, "phone") or []:
                cls = phoneme_class(label)
                if cls is not None and a < duration:
                    rows.append(dict(kind="phoneme", onset=sound.onset + a, duration=b - a, text=cls))
            spans.append((sound.onset, sound.onset + duration, text, num))
        if not spans:
            raise StudyError(f"{self.ds}: no logged sound falls inside the recording")
        spans.sort()
        pad = study.block_pad
        for i, (start, stop, text, num) in enumerate(spans):
            lo = max(0.0, start - pad) if i == 0 else max((spans[i - 1][1] + start) / 2, spans[i - 1][1])
            hi = min(end, stop + pad) if i == len(spans) - 1 else min((stop + spans[i + 1][0]) / 2, spans[i + 1][0])
            lo = max(lo, 0.0)
            if hi > lo:
                rows.append(dict(kind="block", onset=lo, duration=hi - lo, uid=text, condition=_condition(num),
                                 stimulus=num))
        return pd.DataFrame(rows)


def _condition(num: int) -> str:
    return "sentence" if num <= LAST_SENTENCE else "word_list"


class Schoffelen2019(Study):
    """MOUS, auditory subjects (``sub-A2002`` ... ``sub-A2125``), excluded subjects skipped.

    Parameters
    ----------
    root : the MOUS root (``sub-A2*``, ``sourcedata/meg_task``, ``stimuli``).
    subjects : keep only these ids (``A2002`` or ``sub-A2002``); None = every auditory subject not excluded.
    block_pad : seconds kept before the first / after the last sound of a recording (neighbouring blocks meet
        halfway between sounds).
    textgrids : folder of the forced-alignment TextGrids, relative to the root or absolute; None = search
        ``stimuli/`` recursively.
    """

    name = "schoffelen2019"
    modality = "meg"
    device = "CTF 275 (273 axial gradiometers used)"
    language = "nl"
    paradigm = "listening to Dutch sentences and scrambled word lists (MOUS, auditory half), 1200 Hz"
    licence = "Donders Repository data-use agreement (registration required; restricted, not redistributable)"
    url = "https://data.donders.ru.nl/collections/di/dccn/DSC_3011020.09_236"
    doi = "10.1038/s41597-019-0020-y"
    description = ("MOUS (Mother Of Unification Studies): 204 native Dutch speakers, half of them listened to "
                   "sentences and word lists during CTF MEG; the audio subjects give 96 recordings / 80.9 h.")

    def __init__(self, root: str | Path, subjects: tp.Sequence[str] | None = None, block_pad: float = 1.0,
                 textgrids: str | None = None) -> None:
        super().__init__(Path(root).expanduser().resolve())
        self.subjects = None if subjects is None else {str(s).removeprefix("sub-") for s in subjects}
        self.block_pad = float(block_pad)
        self.textgrids = textgrids
        self._stimuli: dict[int, str] | None = None
        self._tg_index: dict[int, Path] | None = None

    def stimuli(self) -> dict[int, str]:
        if self._stimuli is None:
            path = require_file(self.root / "stimuli" / "stimuli.txt", self.name,
                                "stimuli/stimuli.txt maps stimulus numbers to sentences")
            self._stimuli = read_stimuli(path)
        return self._stimuli

    def textgrid(self, num: int) -> Path:
        """The TextGrid of stimulus ``num`` (file name ending in its 3-digit number)."""
        if self._tg_index is None:
            folder = Path(self.textgrids) if self.textgrids else self.root / "stimuli"
            folder = folder if folder.is_absolute() else self.root / folder
            index: dict[int, Path] = {}
            for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                m = re.search(r"(\d+)$", path.stem)
                if path.suffix.lower() == ".textgrid" and m:
                    index.setdefault(int(m.group(1)), path)
            self._tg_index = index
        if num not in self._tg_index:
            where = self.textgrids or self.root / "stimuli"
            raise StudyError(f"study {self.name!r}: missing TextGrid for stimulus {num} "
                             f"({AUDIO_PATTERN.format(num=num)[:-4]}.TextGrid) under {where}; word / phoneme "
                             "timings come from the forced alignments (option studies.schoffelen2019.textgrids)")
        return self._tg_index[num]

    def iter_recordings(self) -> tp.Iterator[Schoffelen2019Recording]:
        self.prepare()
        found = []
        for ds in sorted(self.root.glob("sub-A2*/meg/sub-A2*_task-auditory*_meg.ds")):
            sub = ds.parts[-3].removeprefix("sub-")
            if sub in EXCLUDED_SUBJECTS or (self.subjects is not None and sub not in self.subjects):
                continue
            found.append((sub, ds))
        if not found:
            raise StudyError(f"study {self.name!r}: no 'sub-A2*/meg/sub-A2*_task-auditory_meg.ds' under {self.root} "
                             f"(excluded: {list(EXCLUDED_SUBJECTS)}); point paths.studies.schoffelen2019 to MOUS")
        for sub, ds in found:
            yield Schoffelen2019Recording(self, ds, sub)
