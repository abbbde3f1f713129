"""The Presentation log of a MOUS recording and the fit of its clock to the MEG triggers (used by
:mod:`bm2.studies.schoffelen2019`, whose docstring describes the log and the timing).

:func:`read_presentation_log` reads the event table(s) of a log, :func:`log_roles` classifies its rows (block
starts, fixations, sounds ...), :func:`sound_table` lists the sounds played and :func:`fit_log_clock` maps the log
clock to the MEG clock from the anchors both share (offset and drift; missing or spurious triggers tolerated)."""

from __future__ import annotations

import dataclasses
import re
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd

from ..utils.text import read_text
from .base import StudyError

LOG_TIME_UNIT = 1e-4            # Presentation log times are in units of 0.1 ms
COARSE_TOLERANCE = 0.1          # s, first matching of anchors (covers the drift between the two clocks)
ALIGN_TOLERANCE = 0.02          # s, a trigger and a logged anchor within this distance (after the fit) match


def read_presentation_log(path: Path) -> list[pd.DataFrame]:
    """The first table of each ``Scenario -`` section of a Presentation ``.log`` (usually one section).

    Columns as in the table's header (a repeated name gets a ``.1`` suffix), plus ``time`` (s, from ``Time`` in
    units of 1e-4 s), ``event`` and ``code`` (stripped ``Event Type`` and ``Code``). A row broken over two lines
    (seen after a period in a code) is joined back. The second table of a section (its per-stimulus summary) is
    not used."""
    text = read_text(path)  # UTF-8, else Latin-1 with a warning; newlines normalised
    parts = re.split(r"^Scenario -.*$", text, flags=re.MULTILINE)
    sections = parts[1:] if len(parts) > 1 else parts
    tables = [t for t in (_first_table(section.split("\n"), path) for section in sections) if t is not None]
    if not tables:
        raise StudyError(f"{path}: not a Presentation log (no 'Subject<TAB>Trial<TAB>Event Type ...' table header)")
    return tables


def _first_table(lines: list[str], path: Path) -> pd.DataFrame | None:
    start = next((i for i, line in enumerate(lines) if line.startswith("Subject\t") and "Event Type" in line), None)
    if start is None:
        return None
    header = lines[start].rstrip("\n").split("\t")
    records: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            if records:
                break  # end of the first table
            continue
        cells = line.split("\t")
        if records and (len(cells) < 5 or not cells[0].strip()):
            records[-1] += line  # continuation of a row broken after a period
        else:
            records.append(line)
    rows = [cells[: len(header)] + [""] * (len(header) - len(cells)) for cells in (r.split("\t") for r in records)]
    table = pd.DataFrame(rows, columns=_unique(header))
    for col in ("Event Type", "Code", "Time"):
        if col not in table.columns:
            raise StudyError(f"{path}: the log table has no {col!r} column (columns: {list(table.columns)})")
    table["time"] = pd.to_numeric(table["Time"], errors="coerce") * LOG_TIME_UNIT
    table["event"] = table["Event Type"].str.strip()
    table["code"] = table["Code"].str.strip()
    return table


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}.{seen[n] - 1}")
    return out


def log_roles(table: pd.DataFrame) -> pd.DataFrame:
    """The log table with ``role`` (context / fix / sound / audio_onset / end / other), ``condition`` (the
    block each row belongs to: ``sentence``, ``word_list`` or None before the first block) and ``file`` (the
    wav file name of ``sound`` rows)."""
    code = table["code"].fillna("").astype(str)
    upper = code.str.upper()
    role = pd.Series("other", index=table.index, dtype=object)
    condition = pd.Series(None, index=table.index, dtype=object)
    for word, cond in (("ZINNEN", "sentence"), ("WOORDEN", "word_list")):
        hit = upper.str.match(rf"^(\d+\s+)?{word}\b")
        role[hit], condition[hit] = "context", cond
    role[upper.str.match(r"^(\d+\s+)?FIX\b")] = "fix"
    files = code.str.extract(r"Start File\s+(\S+\.wav)\b", flags=re.IGNORECASE)[0]
    sound = (table["event"].str.lower() == "sound") & files.notna()
    role[sound] = "sound"
    role[upper.str.contains("AUDIO ONSET")] = "audio_onset"
    role[upper.str.contains("END OF FILE")] = "end"
    return table.assign(role=role, condition=condition.ffill(), file=files.where(sound))


def sound_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per played sound: ``file`` (wav name as logged), ``stimulus`` (its number), ``time`` (log s of
    its ``Audio onset`` row, or of the ``Sound`` row when that is missing) and ``condition``. ``table``: a log
    table, classified by :func:`log_roles` here unless it already was."""
    table = (table if "role" in table.columns else log_roles(table)).reset_index(drop=True)
    rows = []
    idx = list(table.index[table["role"] == "sound"])
    for k, i in enumerate(idx):
        stop = idx[k + 1] if k + 1 < len(idx) else len(table)
        after = table.iloc[i + 1: stop]
        onset = after[after["role"] == "audio_onset"]
        when = onset["time"].iloc[0] if len(onset) else table.at[i, "time"]
        num = re.search(r"(\d+)\.wav$", str(table.at[i, "file"]))
        rows.append(dict(file=table.at[i, "file"], stimulus=int(num.group(1)) if num else -1, time=float(when),
                         condition=table.at[i, "condition"] or "sentence"))
    return pd.DataFrame(rows, columns=["file", "stimulus", "time", "condition"])


@dataclasses.dataclass(frozen=True)
class ClockFit:
    """``meg_time = slope * log_time + intercept``, fitted on ``matched`` of ``anchors`` log anchors."""

    slope: float
    intercept: float
    matched: int
    anchors: int

    def __call__(self, log_time: tp.Any) -> tp.Any:
        return self.slope * np.asarray(log_time, dtype=float) + self.intercept


def _nearest(sorted_times: np.ndarray, target: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(sorted_times, target), 1, max(len(sorted_times) - 1, 1))
    left = np.clip(pos - 1, 0, len(sorted_times) - 1)
    pos = np.clip(pos, 0, len(sorted_times) - 1)
    return np.where(np.abs(sorted_times[left] - target) <= np.abs(sorted_times[pos] - target), left, pos)


ArrayLike = tp.Union[tp.Sequence[tp.Any], np.ndarray]


def fit_log_clock(log_times: ArrayLike, trigger_times: ArrayLike,
                  log_kinds: ArrayLike | None = None, trigger_kinds: ArrayLike | None = None,
                  tolerance: float = ALIGN_TOLERANCE) -> tuple[ClockFit, np.ndarray]:
    """Map the log clock onto the MEG clock from anchors seen by both (log rows and triggers of the same kind).

    Returns the fit and, for each log anchor, the index (in ``trigger_times``) of its trigger or -1. Steps: the
    offset most voted by pairs of same-kind anchors (bins of :data:`COARSE_TOLERANCE`), a first matching at
    that coarse tolerance, a least-squares line (offset + drift), then matching at ``tolerance`` around the line
    and refitting until the matches stop changing. Missing and spurious triggers are tolerated."""
    log_t = np.asarray(log_times, dtype=float)
    trig_t = np.asarray(trigger_times, dtype=float)
    log_k = np.zeros(len(log_t), int) if log_kinds is None else np.asarray(log_kinds)
    trig_k = np.zeros(len(trig_t), int) if trigger_kinds is None else np.asarray(trigger_kinds)
    if not len(log_t) or not len(trig_t):
        raise StudyError("cannot align the log to the MEG: no logged anchors or no triggers")
    kinds = [k for k in np.unique(log_k) if (trig_k == k).any()]
    if not kinds:
        raise StudyError("cannot align the log to the MEG: no trigger of the kinds found in the log")
    diffs = np.concatenate([(trig_t[trig_k == k][:, None] - log_t[log_k == k][None, :]).ravel() for k in kinds])
    bins, counts = np.unique(np.round(diffs / COARSE_TOLERANCE).astype(np.int64), return_counts=True)
    by_kind = {}  # kind -> (trigger indices in time order, their times)
    for k in kinds:
        order = np.flatnonzero(trig_k == k)
        order = order[np.argsort(trig_t[order], kind="stable")]
        by_kind[k] = (order, trig_t[order])

    def match(line: ClockFit, tol: float) -> np.ndarray:
        out = np.full(len(log_t), -1)
        for k in kinds:
            rows = np.flatnonzero(log_k == k)
            order, times = by_kind[k]
            target = line(log_t[rows])
            near = _nearest(times, target)
            ok = np.abs(times[near] - target) <= tol
            out[rows[ok]] = order[near[ok]]
        return out

    def refit(idx: np.ndarray) -> ClockFit:
        ok = idx >= 0
        x, y = log_t[ok], trig_t[idx[ok]]
        if ok.sum() >= 3 and np.ptp(x) > 1.0:
            slope, intercept = np.polyfit(x, y, 1)
        else:
            slope, intercept = 1.0, float(np.median(y - x))
        return ClockFit(float(slope), float(intercept), int(ok.sum()), len(log_t))

    best: tuple[int, np.ndarray] | None = None
    for b in bins[np.argsort(-counts, kind="stable")][:5]:  # the most voted offsets
        idx = match(ClockFit(1.0, float(b) * COARSE_TOLERANCE, 0, len(log_t)), COARSE_TOLERANCE)
        if best is None or (idx >= 0).sum() > (best[1] >= 0).sum():
            best = (int(b), idx)
    assert best is not None
    idx = best[1]
    if not (idx >= 0).any():
        raise StudyError("cannot align the log to the MEG: no logged anchor has a trigger nearby")
    for _ in range(10):
        fit = refit(idx)
        new = match(fit, tolerance)
        if np.array_equal(new, idx):
            break
        idx = new
        if not (idx >= 0).any():
            raise StudyError("cannot align the log to the MEG: the clock fit lost every anchor")
    return refit(idx), idx


# -- stimuli ---------------------------------------------------------------------------------------------
