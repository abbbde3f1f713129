"""MOUS (Schoffelen et al. 2019), auditory subjects: Dutch sentences and word lists, CTF 275 MEG at 1200 Hz.

On disk (Donders Repository collection DSC_3011020.09_236, BIDS-like):

* ``sub-A2xxx/meg/sub-A2xxx_task-auditory_meg.ds``: CTF datasets (273 working axial gradiometers, the
  reference magnetometers / gradiometers, the ``UPPT001`` trigger channel, ``UADC`` analogue channels, head
  localisation channels). Reference channels are dropped **by channel type** (mne's ``ref_meg``), never by
  position or name.
* ``sourcedata/meg_task/*A2xxx*-MEG-MOUS-Aud*.log``: the Presentation log. A ``Scenario - ...`` line, then two
  tab-separated tables separated by two blank lines. The first one (header ``Subject  Trial  Event Type  Code
  Time  TTime  Uncertainty  Duration  Uncertainty ...``) lists every event with its ``Time`` in units of 1e-4 s
  on the stimulus computer's clock. Codes: ``ZINNEN`` / ``WOORDEN`` (start of a sentence / word-list block),
  ``FIX <n>`` (fixation), ``<port> Start File <NNN>.wav`` (``Sound`` event), ``<port> Audio onset``,
  ``<port> End of file``, ``QUESTION``, ``blank`` ... Some logs hold the experiment twice (two ``Scenario -``
  sections, e.g. after a restart); some rows are broken over two lines after a period.
* ``stimuli/stimuli.txt``: ``<number> <text>`` per stimulus (sentences and word lists);
  ``stimuli/audio_files/EQ_Ramp_Int2_Int1LPF<NNN>.wav``;
* forced alignments (MAUS): ``derivatives/phonemes/EQ_Ramp_Int2_Int1LPF<NNN>.TextGrid`` with the tiers
  ``ORT-MAU`` (words), ``KAN-MAU`` (canonical pronunciation, unused) and ``MAU`` (phones, Dutch SAMPA; pauses
  ``<p:>``). They are searched under ``derivatives/phonemes`` then ``stimuli/``, or the ``textgrids`` option.

Timing (:func:`fit_log_clock`, in :mod:`bm2.studies._presentation_log` with the log reader): the MEG trigger
channel carries 10 at each block start (``ZINNEN`` / ``WOORDEN``)
and 20 at each fixation (``FIX``). These anchors are matched to the log rows of the same kind, which gives a
linear map from the log clock to the MEG clock (offset, and slope for the drift between the two clocks; missing
or spurious triggers are tolerated). Every log event is then placed with that map; a sound starts at its
``Audio onset`` row, and its words / phonemes follow the TextGrid of its file.

Conditions come from the log (the block a sound was played in: ``sentence`` or ``word_list``). Blocks: one per
sound, uid = its text in ``stimuli.txt`` (found by the TextGrid's words, compared on their first 45 characters,
case and punctuation ignored: some recordings miss the last word), so a sentence lands in the same split for
every subject even though subjects hear them in different orders. Words carry ``sentence_id`` = content hash of
that uid and ``word_index`` = their position in the ``ORT-MAU`` tier.

Phonemes: MOUS is Dutch; SAMPA labels are mapped to the 39 ARPABET classes only when the sound has a clear
English counterpart (:data:`SAMPA_TO_ARPABET`); other labels (``y``, ``2:``, ``Ei``, ``x``, ``G`` ...) give **no**
phoneme event rather than an invented class.

Excluded subjects (:data:`EXCLUDED_SUBJECTS`), as in the brainmagick study: A2011, A2036, A2062, A2063, A2076 and
A2084 (recorded in two separate MEG runs or incomplete), and the auditory numbers absent from the release
(:data:`ABSENT_SUBJECTS`); 96 auditory subjects remain.
"""

from __future__ import annotations

import logging
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.text import read_text
from ._common import quiet, read_textgrid, require_file, sentence_id, span_blocks, to_arpabet
from ._presentation_log import ClockFit, fit_log_clock, log_roles, read_presentation_log, sound_table
from .base import Recording, Study, StudyError, layout_positions

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

# Left out as in the brainmagick study: two separate MEG runs (would need joining) or incomplete data.
EXCLUDED_SUBJECTS: tuple[str, ...] = ("A2011", "A2036", "A2062", "A2063", "A2076", "A2084")
# Auditory numbers without a subject in the release (skipped whether or not a folder exists).
ABSENT_SUBJECTS: tuple[str, ...] = tuple(f"A{n}" for n in (
    2012, 2018, 2022, 2023, 2026, 2043, 2044, 2045, 2048, 2054, 2060, 2074, 2081, 2082, 2087, 2093, 2100, 2107,
    2112, 2115, 2118, 2123))
AUDITORY_SUBJECTS = tuple(f"A{n}" for n in range(2002, 2126))    # 124 numbers, 96 kept
EVENTS_VERSION = 3              # bump when the events of a recording change (enters the recording uid)
TRIGGER_CHANNEL = "UPPT001"
TRIGGER_CODES = {"context": 10, "fix": 20}   # MEG trigger value of each log anchor kind
SEQUENCE_PREFIX = 45            # characters of a word sequence compared with stimuli.txt
AUDIO_PATTERN = "EQ_Ramp_Int2_Int1LPF{num:03d}.wav"
AUDIO_PREFIX = "EQ_Ramp_Int2_Int1LPF"
TEXTGRID_FOLDERS = ("derivatives/phonemes", "stimuli")
WORD_TIERS = ("ort-mau", "words", "word", "ort", "orthography", "woorden")
PHONE_TIERS = ("mau", "phones", "phonemes", "phone", "segments", "fonemen")
SILENCES = {"", "sil", "sp", "spn", "<p:>", "<p>", "#", "_", "<usb>", "<nib>"}
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

def read_stimuli(path: Path) -> dict[int, str]:
    """``{stimulus number: text}`` from ``stimuli.txt`` (``number`` then a tab or spaces, then the text)."""
    out = {}
    for i, line in enumerate(read_text(path).splitlines()):
        m = re.match(r"\s*(\d+)[\s\t]+(.*\S)", line)
        if m:
            out[int(m.group(1))] = m.group(2).strip()
        elif line.strip():
            raise StudyError(f"{path} line {i + 1}: expected '<stimulus number> <text>', got {line[:60]!r}")
    if not out:
        raise StudyError(f"{path}: no stimulus found")
    return out


def normalize_text(text: str) -> str:
    """Lower case, punctuation dropped (apostrophes kept), single spaces."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


class StimulusIndex:
    """Finds the ``stimuli.txt`` entry of a heard word sequence (first :data:`SEQUENCE_PREFIX` characters of
    the normalised texts; a sequence missing its last words still matches its stimulus when unambiguous)."""

    def __init__(self, stimuli: dict[int, str]) -> None:
        self.stimuli = stimuli
        self._norm = {num: normalize_text(text) for num, text in stimuli.items()}
        self._prefix: dict[str, list[int]] = {}
        for num, norm in self._norm.items():
            self._prefix.setdefault(norm[:SEQUENCE_PREFIX], []).append(num)

    def find(self, words: tp.Sequence[str]) -> int | None:
        seq = normalize_text(" ".join(words))
        if not seq:
            return None
        found = self._prefix.get(seq[:SEQUENCE_PREFIX], [])
        if not found and len(seq) < SEQUENCE_PREFIX:
            found = [n for n, norm in self._norm.items() if norm.startswith(seq)]
        exact = [n for n in found if self._norm[n] == seq]
        if exact or len(found) == 1:
            return (exact or found)[0]
        return None


def _pick_tier(tiers: dict[str, list], names: tuple[str, ...]) -> list | None:
    by_name = {key.strip().lower(): items for key, items in tiers.items()}
    for name in names:
        if name in by_name:
            return by_name[name]
    return None


class Schoffelen2019Recording(Recording):
    """The auditory session of one MOUS subject."""

    events_in_uid = True

    def __init__(self, study: Schoffelen2019, ds: Path, subject: str) -> None:
        super().__init__(Schoffelen2019.name, subject, "0", "auditory",
                         identity={"file": ds.relative_to(study.root).as_posix(), "events": EVENTS_VERSION,
                                   "options": {"block_pad": study.block_pad, "textgrids": study.textgrids}})
        self.ds = ds
        self._study = study
        self._full: mne.io.BaseRaw | None = None

    def input_files(self) -> dict[str, Path]:
        """The CTF dataset folder (every file in it; the log, TextGrids, stimuli.txt and audio files shape the
        events, which enter the uid through their content)."""
        return {self.ds.relative_to(self._study.root).as_posix(): self.ds}

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
        """The axial gradiometers only: reference channels are excluded by type (``ref_meg``)."""
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

    def triggers(self) -> tuple[np.ndarray, np.ndarray]:
        """Onsets (s, MEG clock) and values of every change to a non-zero value of the trigger channel."""
        import mne

        raw = self.full_raw()
        stim = [TRIGGER_CHANNEL] if TRIGGER_CHANNEL in raw.ch_names else \
            [raw.ch_names[i] for i in mne.pick_types(raw.info, meg=False, stim=True)]
        if not stim:
            raise StudyError(f"{self.ds}: no trigger channel ({TRIGGER_CHANNEL} or any stim channel)")
        with quiet():
            events = mne.find_events(raw, stim_channel=stim[0], shortest_event=1, initial_event=True,
                                     consecutive=True, verbose="error")
        return (events[:, 0] - raw.first_samp) / raw.info["sfreq"], events[:, 2]

    def log_path(self) -> Path:
        folder = self._study.root / "sourcedata" / "meg_task"
        found = sorted(folder.glob(f"*{self.subject}*.log")) if folder.is_dir() else []
        if not found:
            raise StudyError(f"study 'schoffelen2019': no Presentation log '{folder}/*{self.subject}*.log' for "
                             f"subject {self.subject}; the sourcedata/meg_task folder of MOUS is needed")
        auditory = [p for p in found if "aud" in p.name.lower()]
        return (auditory or found)[0]

    def alignment(self) -> tuple[pd.DataFrame, ClockFit]:
        """The played sounds (:func:`sound_table`) with their MEG ``onset``, and the log -> MEG clock fit.

        Anchors are the block starts and fixations (trigger values :data:`TRIGGER_CODES`); a recording whose
        trigger channel has none of these values is aligned on its ``Audio onset`` rows (else its ``Sound`` rows)
        against every trigger instead.
        With several ``Scenario`` sections in the log, the one whose anchors match the most triggers is used."""
        path = self.log_path()
        trig_t, trig_v = self.triggers()
        code_of = {code: kind for kind, code in TRIGGER_CODES.items()}
        coded = np.isin(trig_v, list(code_of))
        best: tuple[int, pd.DataFrame, ClockFit] | None = None  # (matched anchors, classified log, fit)
        errors = []
        for table in read_presentation_log(path):
            roles = log_roles(table)
            if coded.any():
                anchors = roles[roles["role"].isin(list(TRIGGER_CODES)) & roles["time"].notna()]
                kinds, t_times, t_kinds = anchors["role"].to_numpy(), trig_t[coded], \
                    np.array([code_of[v] for v in trig_v[coded]])
            else:  # no block / fixation codes: audio onsets (else sound starts) against every trigger
                role = "audio_onset" if (roles["role"] == "audio_onset").any() else "sound"
                anchors = roles[(roles["role"] == role) & roles["time"].notna()]
                kinds, t_times, t_kinds = None, trig_t, None
            if anchors.empty:
                errors.append("no anchor row (ZINNEN / WOORDEN / FIX or sounds)")
                continue
            try:
                fit, _ = fit_log_clock(anchors["time"].to_numpy(), t_times, kinds, t_kinds)
            except StudyError as exc:
                errors.append(str(exc))
                continue
            if best is None or fit.matched > best[0]:
                best = (fit.matched, roles, fit)
        if best is None:
            raise StudyError(f"{self.ds}: cannot align {path.name} with the triggers of {TRIGGER_CHANNEL}: "
                             + "; ".join(errors))
        _, roles, fit = best
        if fit.matched < max(2, fit.anchors // 2):
            raise StudyError(f"{self.ds}: only {fit.matched} of {fit.anchors} anchors of {path.name} match a "
                             f"trigger of {TRIGGER_CHANNEL}; cannot align the log with the MEG")
        sounds = sound_table(roles)
        if sounds.empty:
            raise StudyError(f"{path}: no 'Sound' event with a 'Start File <NNN>.wav' code")
        return sounds.assign(onset=fit(sounds["time"].to_numpy())), fit

    def _load_events(self) -> pd.DataFrame:
        import soundfile

        study = self._study
        sounds, _ = self.alignment()
        index = study.stimulus_index()
        end = self.raw().times[-1] + 1.0 / self.raw().info["sfreq"]
        rows: list[dict[str, tp.Any]] = []
        spans = []
        for sound in sounds.itertuples():
            num = int(sound.stimulus)
            wav = study.audio_file(str(sound.file), num)
            info = soundfile.info(str(wav))
            duration = min(info.frames / info.samplerate, end - sound.onset)
            if duration <= 0 or sound.onset < 0:
                logger.warning("%s: sound %s at %.2f s is outside the recording; skipped", self.ds.name,
                               sound.file, sound.onset)
                continue
            tiers = read_textgrid(study.textgrid(num))
            words = [(a, b, label.strip()) for a, b, label in _pick_tier(tiers, WORD_TIERS) or []
                     if label.strip().lower() not in SILENCES]
            if not words:
                raise StudyError(f"{study.textgrid(num)}: no word tier ({'/'.join(WORD_TIERS)}) with words; "
                                 f"tiers found: {list(tiers)}")
            uid_num = index.find([w for _, _, w in words])
            if uid_num is None:
                text = " ".join(w for _, _, w in words)
                logger.warning("%s: the words of %s (%r) match no line of stimuli.txt; its block is named "
                               "after its words", self.ds.name, wav.name, text[:60])
                uid, seq = normalize_text(text), -1
            else:
                uid, seq = index.stimuli[uid_num], uid_num
            cond = str(sound.condition)
            rows.append(dict(kind="sound", onset=sound.onset, duration=duration, filepath=str(wav), offset=0.0,
                             condition=cond, stimulus=num, sequence_uid=seq))
            sid = sentence_id(uid)
            for k, (a, b, label) in enumerate(words):
                if a < duration:
                    rows.append(dict(kind="word", onset=sound.onset + a, duration=b - a, text=label,
                                     sentence_id=sid, word_index=k, condition=cond, stimulus=num))
            for a, b, label in _pick_tier(tiers, PHONE_TIERS) or []:
                cls = phoneme_class(label)
                if cls is not None and a < duration:
                    rows.append(dict(kind="phoneme", onset=sound.onset + a, duration=b - a, text=cls))
            spans.append((sound.onset, sound.onset + duration,
                          dict(uid=uid, condition=cond, stimulus=num, sequence_uid=seq)))
        if not spans:
            raise StudyError(f"{self.ds}: no logged sound falls inside the recording")
        blocks = span_blocks(spans, pad=study.block_pad, end=end)
        return pd.concat([pd.DataFrame(rows), blocks], ignore_index=True)


class Schoffelen2019(Study):
    """MOUS, auditory subjects (``sub-A2002`` ... ``sub-A2125``), excluded and absent subjects skipped.

    Parameters
    ----------
    root : the MOUS root (``sub-A2*``, ``sourcedata/meg_task``, ``stimuli``, ``derivatives/phonemes``).
    subjects : keep only these ids (``A2002`` or ``sub-A2002``); None = every auditory subject kept by the paper.
    block_pad : seconds kept before the first / after the last sound of a recording (neighbouring blocks meet
        halfway between sounds).
    textgrids : folder of the forced-alignment TextGrids, relative to the root or absolute; None = search
        :data:`TEXTGRID_FOLDERS` (recursively).
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
        self._index: StimulusIndex | None = None
        self._tg_index: dict[int, Path] | None = None

    def stimulus_index(self) -> StimulusIndex:
        if self._index is None:
            path = require_file(self.root / "stimuli" / "stimuli.txt", self.name,
                                "stimuli/stimuli.txt maps stimulus numbers to sentences")
            self._index = StimulusIndex(read_stimuli(path))
        return self._index

    def audio_file(self, logged: str, num: int) -> Path:
        """The wav of a logged ``Start File`` name (``186.wav`` -> ``stimuli/audio_files/EQ_Ramp_..LPF186.wav``)."""
        folder = self.root / "stimuli" / "audio_files"
        names = [f"{AUDIO_PREFIX}{logged}", AUDIO_PATTERN.format(num=num), logged]
        for name in names:
            if (folder / name).exists():
                return folder / name
        raise StudyError(f"study {self.name!r}: missing audio file {folder / names[0]} (logged as {logged!r}); "
                         "the audio files of MOUS go to stimuli/audio_files/")

    def _textgrid_folders(self) -> list[Path]:
        if self.textgrids:
            folder = Path(self.textgrids).expanduser()
            return [folder if folder.is_absolute() else self.root / folder]
        return [self.root / f for f in TEXTGRID_FOLDERS]

    def textgrid(self, num: int) -> Path:
        """The TextGrid of stimulus ``num`` (file name ending in its number)."""
        if self._tg_index is None:
            index: dict[int, Path] = {}
            for folder in self._textgrid_folders():
                for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                    m = re.search(r"(\d+)$", path.stem)
                    if path.suffix.lower() == ".textgrid" and m:
                        index.setdefault(int(m.group(1)), path)
            self._tg_index = index
        if num not in self._tg_index:
            where = " or ".join(str(f) for f in self._textgrid_folders())
            raise StudyError(f"study {self.name!r}: missing TextGrid for stimulus {num} "
                             f"({AUDIO_PATTERN.format(num=num)[:-4]}.TextGrid) under {where}; word / phoneme "
                             "timings come from the forced alignments (option studies.schoffelen2019.textgrids)")
        return self._tg_index[num]

    def iter_recordings(self) -> tp.Iterator[Schoffelen2019Recording]:
        self.prepare()
        skipped = set(EXCLUDED_SUBJECTS) | set(ABSENT_SUBJECTS)
        found: dict[str, list[Path]] = {}
        for ds in sorted(self.root.glob("sub-A2*/meg/sub-A2*_task-auditory*_meg.ds")):
            sub = ds.parts[-3].removeprefix("sub-")
            if sub in skipped or (self.subjects is not None and sub not in self.subjects):
                continue
            found.setdefault(sub, []).append(ds)
        if not found:
            raise StudyError(f"study {self.name!r}: no 'sub-A2*/meg/sub-A2*_task-auditory_meg.ds' under {self.root} "
                             f"(excluded: {list(EXCLUDED_SUBJECTS)}); point paths.studies.schoffelen2019 to MOUS")
        for sub, paths in found.items():
            if len(paths) > 1:
                raise StudyError(f"study {self.name!r}: subject {sub} has {len(paths)} auditory MEG datasets "
                                 f"({[p.name for p in paths]}); runs split in two are not supported (the paper "
                                 "excluded such subjects); keep one or leave the subject out with `subjects`")
            yield Schoffelen2019Recording(self, paths[0], sub)
