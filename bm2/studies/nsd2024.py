"""Neural Speech Decoding (Chen et al., Nat. Mach. Intell. 2024): ECoG while participants speak words, as released.

On disk (one HDF5 file per participant, ``{root}/{SUBJ}.h5``, e.g. ``HB02.h5`` of Mendeley Data
doi:10.17632/fp4bv9gtwk.2; the keys as the release's ``dataset.py`` reads them, ANCHORS_WAVE2 §3)::

    ecog_alldataset                  (T, E)   high-gamma ECoG features at 125 Hz (E = 64 on an 8 x 8 grid)
    wave_re_alldataset               (S,)     the participant's speech at 16 kHz, S = T x 128 (one frame per 8 ms)
    start_ind_re_valid_alldataset    (n,)     first frame of each trial's spoken word
    end_ind_re_valid_alldataset      (n,)     frame after its last (exclusive)
    label_alldataset                 (n,)     the word of each trial, bytes in UTF-8
    optional:
    wave_re_spec_alldataset          (T, 256) the release spectrogram in [-1, 1] (:mod:`bm2.features.nsd_spec`)
    wave_re_spec_amp_alldataset      (T, 256) the same before the dB mapping
    noisesample_re_alldataset        (N, 256) spectrogram frames of pre-trial baselines (background-noise profile)
    formant_re_alldataset            (T, 6)   Praat formants (Hz); pitch_re_alldataset, intensity_re_alldataset (T,)
    task_alldataset                  (n,)     bm2's addition, not in the release: the task of each trial (bytes)

Nothing is read when recordings are listed except the trial table and the datasets' shapes (h5py, read-only); the
ECoG is read when the raw signal is first asked for, the audio by slices (:class:`H5AudioTrack`).

Mapping onto bm2: one recording per file (subject = file stem), the ECoG an MNE Raw of ``ecog`` channels at
125 Hz (``E001`` ...; multiplied by ``unit_scale``), and per trial one ``sound`` event over the spoken frames
``[start, end)`` with the word (``text``) and the task when known (``task``; the audio is the file itself,
``offset`` = seconds into ``wave_re_alldataset``), a ``word`` event over the same span (so that word anchors and
labels work as elsewhere), and one ``block`` around it. Blocks reach ``block_before``
frames before the onset and ``block_after`` frames after the offset (at least ``block_min_after_onset`` after the
onset), clipped to the recording, neighbours meeting halfway: the defaults (80, 63, 96) let the original's
training crops (a 128-frame speech window starting in ``[onset - 64, end - 64)`` with the ECoG from 16 frames
earlier) and its test windows (starting 32 frames before onset, ECoG 16 earlier) fit each trial's block.

Electrode positions (the release has none; ANCHORS_WAVE2 §3 names 8 x 8 low-density and hybrid-density grids):
electrodes are laid on the grid row-major (electrode ``i`` at row ``i // cols``, column ``i % cols``), ``spacing_mm``
apart (10 mm assumed, the usual clinical low-density grid). ``layout: hybrid`` assumes 2 x rows x cols electrodes:
the macro lattice first, then as many contacts at the centres of the macro squares (offset by half a spacing in
both directions); a hybrid file with rows x cols electrodes is read as its macro lattice. 2-D positions in [0, 1]
feed bm2's spatial models; the Raw carries the 3-D positions (z = 0, metres).

Errors name the file: a missing required key, trial indices outside ``[0, T]``, ``start >= end``, trials that
overlap or are out of time order, a label that is not UTF-8, trial arrays of different lengths, and ECoG and audio
lengths that disagree (more than ``length_tolerance`` frames of 128 samples apart).
"""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from .base import Recording, Study, StudyError

if tp.TYPE_CHECKING:
    import h5py
    import mne

logger = logging.getLogger(__name__)

FRAME_RATE = 125.0
SAMPLE_RATE = 16000
HOP = 128  # audio samples per ECoG frame
N_BINS = 256
#: loader version: enters the recording uid with the file fingerprint and the options
FORMAT = 1

ECOG = "ecog_alldataset"
WAVE = "wave_re_alldataset"
SPEC = "wave_re_spec_alldataset"
SPEC_AMP = "wave_re_spec_amp_alldataset"
START = "start_ind_re_valid_alldataset"
END = "end_ind_re_valid_alldataset"
LABEL = "label_alldataset"
NOISE = "noisesample_re_alldataset"
FORMANT = "formant_re_alldataset"
PITCH = "pitch_re_alldataset"
INTENSITY = "intensity_re_alldataset"
TASK = "task_alldataset"
REQUIRED = (ECOG, WAVE, START, END, LABEL)
OPTIONAL = (SPEC, SPEC_AMP, NOISE, FORMANT, PITCH, INTENSITY, TASK)
#: the tasks of the production paradigm in the order of the original's configuration (``TestNum`` 10 each)
TASKS = ("VisRead", "SenComp", "PicN", "AudN", "AudRep")
LAYOUTS = ("low_density", "hybrid")
SEXES = ("female", "male")


def _open(path: Path) -> h5py.File:
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StudyError(f"study 'nsd2024': cannot read {path} as HDF5 (truncated or not an HDF5 file: {exc})"
                         ) from exc


def _read(f: h5py.File, key: str, path: Path, rows: tp.Any = ()) -> np.ndarray:
    try:
        return np.asarray(f[key][rows])
    except (OSError, RuntimeError, KeyError) as exc:
        raise StudyError(f"study 'nsd2024': {path}: cannot read {key} ({exc}); the file is truncated or damaged"
                         ) from exc


def _vector(f: h5py.File, key: str, path: Path) -> np.ndarray:
    """A per-trial vector stored as (n,), (n, 1) or (1, n)."""
    value = _read(f, key, path)
    if value.ndim == 2 and 1 in value.shape:
        value = value.reshape(-1)
    if value.ndim != 1:
        raise StudyError(f"study 'nsd2024': {path}: {key} must hold one value per trial, got shape {value.shape}")
    return value


def _indices(f: h5py.File, key: str, path: Path) -> np.ndarray:
    value = _vector(f, key, path)
    if value.dtype.kind not in "iuf" or (value.dtype.kind == "f" and not np.all(value == np.round(value))):
        raise StudyError(f"study 'nsd2024': {path}: {key} must hold integer frame indices, got {value.dtype}")
    return value.astype(np.int64)


def decode_labels(values: np.ndarray, path: Path, key: str = LABEL) -> list[str]:
    """Trial labels from bytes (UTF-8) or str values; :class:`StudyError` naming the file and the trial when one is
    not valid UTF-8."""
    out = []
    for i, value in enumerate(values.reshape(-1).tolist()):
        if isinstance(value, (bytes, np.bytes_)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise StudyError(f"study 'nsd2024': {path}: {key}[{i}] = {bytes(value)!r} is not UTF-8 ({exc})"
                                 ) from None
        out.append(str(value).strip())
    return out


def grid_positions(n_electrodes: int, layout: str = "low_density", grid: tp.Sequence[int] = (8, 8),
                   spacing_mm: float = 10.0, source: str = "") -> np.ndarray:
    """Electrode positions on an ECoG grid (mm, float64 ``[n_electrodes, 2]``: x to the right, y up).

    Electrode ``i`` of the macro lattice sits at row ``i // cols``, column ``i % cols`` (row 0 on top),
    ``spacing_mm`` apart. ``hybrid`` adds, for electrodes ``rows * cols`` onwards, the contacts at the centres of the
    macro squares (offset by half a spacing right and down), row-major. Raises :class:`StudyError` (naming
    ``source``) when the electrode count does not fit the layout.
    """
    rows, cols = (int(g) for g in grid)
    if layout not in LAYOUTS:
        raise StudyError(f"study 'nsd2024': layout must be one of {list(LAYOUTS)}, got {layout!r}")
    macro = rows * cols
    allowed = (macro,) if layout == "low_density" else (macro, 2 * macro)
    if n_electrodes not in allowed:
        raise StudyError(f"study 'nsd2024': {source}: {n_electrodes} electrodes do not fit a {layout} {rows} x "
                         f"{cols} grid (expected {' or '.join(map(str, allowed))}); set studies.nsd2024.grid / "
                         "layout to the participant's grid")
    idx = np.arange(n_electrodes)
    row, col = (idx % macro) // cols, (idx % macro) % cols
    offset = np.where(idx >= macro, 0.5, 0.0)
    return np.stack([(col + offset) * spacing_mm, -(row + offset) * spacing_mm], axis=1).astype(np.float64)


class H5AudioTrack:
    """A 16-kHz waveform stored in an HDF5 dataset, read by slices (:class:`~bm2.studies.base.AudioTrack`)."""

    def __init__(self, path: Path, key: str, n_samples: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.path, self.key, self.n_samples, self.sample_rate = Path(path), key, int(n_samples), int(sample_rate)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 samples ``[start, stop)`` (clipped to the track)."""
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        start = max(0, int(start))
        with _open(self.path) as f:
            shape = f[self.key].shape
            rows: tp.Any = slice(start, stop)
            if len(shape) == 2:  # (S, 1) or (1, S)
                rows = (rows, 0) if shape[1] == 1 else (0, rows)
            return _read(f, self.key, self.path, rows).astype(np.float32).reshape(-1)

    def __repr__(self) -> str:
        return f"H5AudioTrack({self.path.name}:{self.key}, {self.n_samples} samples at {self.sample_rate} Hz)"


def trial_blocks(starts: np.ndarray, ends: np.ndarray, n_frames: int, before: int, after: int,
                 min_after_onset: int) -> np.ndarray:
    """``[n, 2]`` block bounds (frames, ``[first, stop)``) around trials ``[start, end)`` (sorted, disjoint).

    A block reaches ``before`` frames before the onset and ``max(end + after, start + min_after_onset)`` after,
    clipped to ``[0, n_frames]``; where two blocks would overlap they meet halfway between the trials (the
    midpoint of the gap, rounded down), so no frame belongs to two blocks (two trials may fall in different
    splits)."""
    first = np.maximum(starts - before, 0)
    stop = np.minimum(np.maximum(ends + after, starts + min_after_onset), n_frames)
    for i in range(len(starts) - 1):
        if stop[i] > first[i + 1]:
            middle = (ends[i] + starts[i + 1]) // 2
            stop[i] = min(stop[i], max(middle, ends[i]))
            first[i + 1] = max(first[i + 1], stop[i])
    return np.stack([first, stop], axis=1)


class NSDRecording(Recording):
    """The trials of one participant's file (see the module docstring)."""

    events_in_uid = True

    def __init__(self, study: NSD2024, path: Path, subject: str, n_frames: int, n_electrodes: int,
                 n_samples: int, starts: np.ndarray, ends: np.ndarray, labels: list[str],
                 tasks: list[str] | None, present: tp.Sequence[str], sex: str | None) -> None:
        options = {"layout": study.layout, "grid": list(study.grid), "spacing_mm": study.spacing_mm,
                   "unit_scale": study.unit_scale, "blocks": [study.block_before, study.block_after,
                                                              study.block_min_after_onset]}
        super().__init__(study.name, subject, identity={"format": FORMAT, "file": path.name,
                                                        "shape": [n_frames, n_electrodes], **options})
        self.path, self.n_frames, self.n_electrodes, self.n_samples = path, n_frames, n_electrodes, n_samples
        self.starts, self.ends, self.labels, self.tasks = starts, ends, labels, tasks
        self.present = tuple(present)
        #: the participant's sex when known (``studies.<name>.sex``): the synthesizer's f0 and formant ranges
        self.sex = sex
        self.positions_mm = grid_positions(n_electrodes, study.layout, study.grid, study.spacing_mm, str(path))
        self.blocks = trial_blocks(starts, ends, n_frames, study.block_before, study.block_after,
                                   study.block_min_after_onset)
        self._unit_scale = study.unit_scale

    @property
    def ch_names(self) -> list[str]:
        """``E001`` ... in the file's column order (row-major on the grid)."""
        return [f"E{i + 1:03d}" for i in range(self.n_electrodes)]

    def input_files(self) -> dict[str, Path]:
        return {self.path.name: self.path}

    def _load_raw(self) -> mne.io.BaseRaw:
        import mne

        with _open(self.path) as f:
            ecog = _read(f, ECOG, self.path).astype(np.float64)
        names = self.ch_names
        info = mne.create_info(names, FRAME_RATE, "ecog")
        xyz = np.concatenate([self.positions_mm / 1000.0, np.zeros((len(names), 1))], axis=1)
        info.set_montage(mne.channels.make_dig_montage(ch_pos=dict(zip(names, xyz)), coord_frame="head"))
        return mne.io.RawArray(ecog.T * self._unit_scale, info, verbose="error")

    def _load_events(self) -> pd.DataFrame:
        rows = []
        for i, (start, end, label) in enumerate(zip(self.starts, self.ends, self.labels)):
            task = self.tasks[i] if self.tasks is not None else None
            first, stop = self.blocks[i]
            rows.append(dict(kind="block", onset=first / FRAME_RATE, duration=(stop - first) / FRAME_RATE,
                             uid=f"{self.subject}/trial {i}", task=task, trial=i))
            onset, duration = start / FRAME_RATE, (end - start) / FRAME_RATE
            rows.append(dict(kind="sound", onset=onset, duration=duration, filepath=str(self.path), offset=onset,
                             text=label, task=task, trial=i))
            # the same span as a word, so that word anchors and word labels work as for other studies
            rows.append(dict(kind="word", onset=onset, duration=duration, text=label,
                             sentence_id=f"{self.subject}/trial {i}", word_index=0, task=task, trial=i))
        return pd.DataFrame(rows)

    def sensor_positions(self, ch_names: tp.Sequence[str]) -> np.ndarray:
        """Grid positions scaled to [0, 1] (the grid's aspect ratio kept)."""
        index = {n: i for i, n in enumerate(self.ch_names)}
        pos = self.positions_mm[[index[c] for c in ch_names]]
        pos = pos - self.positions_mm.min(axis=0)
        return (pos / max(float(np.ptp(self.positions_mm, axis=0).max()), 1e-12)).astype(np.float32)

    def audio_track(self) -> H5AudioTrack:
        """``wave_re_alldataset`` at 16 kHz, sample ``128 t`` at ECoG frame ``t``."""
        return H5AudioTrack(self.path, WAVE, self.n_samples)

    def optional(self, key: str) -> np.ndarray | None:
        """An optional dataset of the file (``noisesample_re_alldataset``, ``formant_re_alldataset`` ...) as float32,
        or None when the file does not hold it."""
        if key not in self.present:
            return None
        with _open(self.path) as f:
            return _read(f, key, self.path).astype(np.float32)

    def stored_spectrogram(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """The release's spectrogram ``wave_re_spec_alldataset`` frames ``[start, stop)`` as float32 ``[256, T']``
        (bins first, as bm2's features), or None when the file does not hold it."""
        if SPEC not in self.present:
            return None
        with _open(self.path) as f:
            shape = f[SPEC].shape
            if len(shape) != 2 or N_BINS not in shape:
                raise StudyError(f"study 'nsd2024': {self.path}: {SPEC} must be (T, {N_BINS}), got {shape}")
            if shape[1] == N_BINS:
                return _read(f, SPEC, self.path, slice(start, stop)).astype(np.float32).T
            return _read(f, SPEC, self.path, (slice(None), slice(start, stop))).astype(np.float32)


class NSD2024(Study):
    """The Neural Speech Decoding release (see the module docstring).

    Parameters
    ----------
    root : folder of the participants' ``*.h5`` files.
    pattern : glob of the files under ``root`` (sorted).
    subjects : file stems to keep (e.g. ``["HB02"]``); null = every file.
    layout : ``low_density`` (8 x 8 at ``spacing_mm``) or ``hybrid`` (module docstring).
    grid : ``[rows, cols]`` of the macro lattice.
    spacing_mm : distance between neighbouring macro contacts (mm; 10 assumed).
    sex : the participants' sex when known: ``female`` / ``male`` for all, or ``{subject: sex}``; null = unknown.
    task_key : the dataset holding each trial's task (bm2's own key; the release has none); absent = unknown.
    block_before, block_after, block_min_after_onset : block extent around each trial (frames; module docstring).
    unit_scale : multiplier of ``ecog_alldataset`` (the release's high-gamma features have no physical unit).
    length_tolerance : frames by which ``wave_re_alldataset`` may differ from ``T x 128`` samples.
    """

    name = "nsd2024"
    modality = "ecog"
    device = "ECoG grids (8 x 8 low density, or hybrid density), high-gamma features at 125 Hz"
    language = "en"
    paradigm = ("speech production of single words (auditory naming, auditory repetition, picture naming, sentence "
                "completion, visual reading), the spoken audio recorded at 16 kHz")
    licence = "code GPL-3.0 (flinkerlab/neural_speech_decoding); data: see the Mendeley Data release"
    url = "https://github.com/flinkerlab/neural_speech_decoding"
    doi = "10.1038/s42256-024-00824-8 (paper); data 10.17632/fp4bv9gtwk.2"
    description = ("Chen et al. 2024: ECoG during word production, one HDF5 per participant: high-gamma ECoG at 125 "
                   "Hz, the spoken audio at 16 kHz, its spectrogram, per-trial onset / offset frames and words.")
    downloadable = False

    def __init__(self, root: str | Path, pattern: str = "*.h5", subjects: tp.Sequence[str] | None = None,
                 layout: str = "low_density", grid: tp.Sequence[int] = (8, 8), spacing_mm: float = 10.0,
                 sex: str | dict[str, str] | None = None, task_key: str = TASK, block_before: int = 80,
                 block_after: int = 63, block_min_after_onset: int = 96, unit_scale: float = 1.0,
                 length_tolerance: int = 1) -> None:
        super().__init__(root)
        if layout not in LAYOUTS:
            raise ValueError(f"studies.{self.name}.layout must be one of {list(LAYOUTS)}, got {layout!r}")
        if len(grid) != 2 or min(int(g) for g in grid) < 1:
            raise ValueError(f"studies.{self.name}.grid must be [rows, cols], got {list(grid)}")
        sexes = list(sex.values()) if isinstance(sex, dict) else [sex]
        if any(s is not None and s not in SEXES for s in sexes):
            raise ValueError(f"studies.{self.name}.sex must be one of {list(SEXES)}, a {{subject: sex}} mapping or "
                             f"null, got {sex!r}")
        self.pattern = str(pattern)
        self.subjects = None if subjects is None else [str(s) for s in subjects]
        self.layout, self.grid, self.spacing_mm = layout, tuple(int(g) for g in grid), float(spacing_mm)
        self.sex = dict(sex) if isinstance(sex, dict) else sex
        self.task_key = str(task_key)
        self.block_before, self.block_after = int(block_before), int(block_after)
        self.block_min_after_onset = int(block_min_after_onset)
        self.unit_scale, self.length_tolerance = float(unit_scale), int(length_tolerance)

    @property
    def data_root(self) -> Path:
        """The folder of the participants' files."""
        return self.root

    def files(self) -> list[Path]:
        """The files matching ``pattern``, sorted by name."""
        return sorted(p for p in self.data_root.glob(self.pattern) if p.is_file())

    def sex_of(self, subject: str) -> str | None:
        """The configured sex of ``subject`` (None when unknown)."""
        if isinstance(self.sex, dict):
            return self.sex.get(subject)
        return self.sex

    def iter_recordings(self) -> tp.Iterator[NSDRecording]:
        """One recording per file, in file-name order; the trial table is checked here (module docstring)."""
        files = self.files()
        if not files:
            raise StudyError(f"study '{self.name}': no file matching {self.pattern!r} in {self.data_root}")
        for path in files:
            subject = path.stem
            if self.subjects is not None and subject not in self.subjects:
                continue
            yield self.read_recording(path, subject)

    def read_recording(self, path: Path, subject: str) -> NSDRecording:
        """The recording of one file, its shapes and trial table checked (:class:`StudyError` naming the file)."""
        with _open(path) as f:
            missing = [k for k in REQUIRED if k not in f]
            if missing:
                raise StudyError(f"study '{self.name}': {path} has no {missing} (found {sorted(f)}); expected the "
                                 f"release's keys {list(REQUIRED)}")
            shape = tuple(int(s) for s in f[ECOG].shape)
            if len(shape) != 2:
                raise StudyError(f"study '{self.name}': {path}: {ECOG} must be (frames, electrodes), got {shape}")
            n_frames, n_electrodes = shape
            wave_shape = tuple(int(s) for s in f[WAVE].shape)
            if len(wave_shape) == 2 and 1 in wave_shape:
                n_samples = max(wave_shape)
            elif len(wave_shape) == 1:
                n_samples = wave_shape[0]
            else:
                raise StudyError(f"study '{self.name}': {path}: {WAVE} must be a mono waveform, got {wave_shape}")
            if abs(n_samples - n_frames * HOP) > self.length_tolerance * HOP:
                raise StudyError(
                    f"study '{self.name}': {path}: ECoG and audio lengths disagree: {ECOG} has {n_frames} frames at "
                    f"125 Hz, i.e. {n_frames * HOP} samples at 16 kHz, but {WAVE} has {n_samples} "
                    f"({(n_samples - n_frames * HOP) / HOP:+.1f} frames); the file is truncated or not aligned "
                    f"(tolerance: studies.{self.name}.length_tolerance={self.length_tolerance} frames)")
            starts, ends = _indices(f, START, path), _indices(f, END, path)
            labels = decode_labels(_vector(f, LABEL, path), path)
            tasks = decode_labels(_vector(f, self.task_key, path), path, self.task_key) \
                if self.task_key in f else None
            present = [k for k in (*OPTIONAL, self.task_key) if k in f]
        counts = {START: len(starts), END: len(ends), LABEL: len(labels)}
        if tasks is not None:
            counts[self.task_key] = len(tasks)
        if len(set(counts.values())) != 1:
            raise StudyError(f"study '{self.name}': {path}: the trial arrays have different lengths: {counts}")
        self._check_trials(path, starts, ends, n_frames)
        rec = NSDRecording(self, path, subject, n_frames, n_electrodes, n_samples, starts, ends, labels, tasks,
                           present, self.sex_of(subject))
        # the recipes' evaluation window: 128 frames from 32 before onset, the ECoG from 16 frames earlier
        short = np.flatnonzero((rec.blocks[:, 0] > starts - 48) | (rec.blocks[:, 1] < starts + 96))
        if len(short):
            logger.warning("nsd2024: %s: the blocks of %d trial(s) (e.g. %s) cannot hold a window from 48 frames "
                           "before onset to 96 after (neighbouring trials or the recording's ends too close): "
                           "windows anchored at their onsets are left out", path.name, len(short),
                           [int(i) for i in short[:5]])
        return rec

    def _check_trials(self, path: Path, starts: np.ndarray, ends: np.ndarray, n_frames: int) -> None:
        def rows(mask: np.ndarray) -> str:
            bad = np.flatnonzero(mask)
            return ", ".join(f"trial {i} [{starts[i]}, {ends[i]})" for i in bad[:5]) + (
                f" and {len(bad) - 5} more" if len(bad) > 5 else "")

        if len(starts) == 0:
            raise StudyError(f"study '{self.name}': {path} holds no trial ({START} is empty)")
        outside = (starts < 0) | (ends > n_frames)
        if outside.any():
            raise StudyError(f"study '{self.name}': {path}: trial indices beyond the recording's {n_frames} ECoG "
                             f"frames ({ECOG} has T = {n_frames}): {rows(outside)}; {START} / {END} must lie in "
                             f"[0, {n_frames}]")
        empty = starts >= ends
        if empty.any():
            raise StudyError(f"study '{self.name}': {path}: start >= end (in {START} / {END}) for {rows(empty)}")
        overlap = np.zeros(len(starts), dtype=bool)
        overlap[1:] = starts[1:] < ends[:-1]
        if overlap.any():
            raise StudyError(f"study '{self.name}': {path}: trials overlap or are out of time order: {rows(overlap)} "
                             "starts before the previous trial ends; the test set (the last trials in file order) "
                             "needs trials in time order")


__all__ = ["FRAME_RATE", "H5AudioTrack", "NSD2024", "NSDRecording", "OPTIONAL", "REQUIRED", "TASKS",
           "decode_labels", "grid_positions", "trial_blocks"]
