"""Fixture writer for schoffelen2019 (MOUS): a tiny Donders-like tree with real CTF ``.ds`` folders.

mne reads CTF but cannot write it, so :func:`write_ctf_ds` writes the binary files itself, following the
structures that ``mne.io.read_raw_ctf`` parses: ``<name>.res4`` (big-endian header of 1844 bytes, filter list,
32-byte channel names, packed per-channel records with 8 coils each, compensation count) and ``<name>.meg4``
(``MEG41CP`` header, then trials of ``nsamp`` samples stored channel by channel as big-endian int32; the
value in physical units is ``int / (proper_gain * qgain)``), plus a ``.hc`` head-coil file.

The tree (layout of the Donders MOUS release, see bm2/studies/schoffelen2019.py):

* ``sub-A2xxx/meg/sub-A2xxx_task-auditory_meg.ds`` (1200 Hz, CTF-275 gradiometer names with a system suffix,
  reference magnetometers / gradiometers, the ``UPPT001`` trigger channel with 10 at block starts and 20 at
  fixations, an ``UADC`` misc channel);
* ``sourcedata/meg_task/A2xxx-MEG-MOUS-Aud.log``: a Presentation log in the release's format (``Scenario -``
  line, two tab-separated tables, times in units of 1e-4 s, codes ``ZINNEN`` / ``WOORDEN`` / ``FIX <n>`` /
  ``<p> Start File <NNN>.wav`` / ``1 Audio onset`` / ``15 End of file`` / ``QUESTION`` ..., one row broken after
  a period) whose clock is offset from the MEG clock and drifts (:data:`LOG_CLOCKS`); one subject's log holds
  an aborted first ``Scenario`` section;
* ``stimuli/stimuli.txt`` (``<number> <text>``, numbered independently of the audio files),
  ``stimuli/audio_files/EQ_Ramp_Int2_Int1LPF{NNN}.wav`` and ``derivatives/phonemes/EQ_Ramp_Int2_Int1LPF{NNN}
  .TextGrid`` (MAUS tiers ``ORT-MAU``, ``KAN-MAU``, ``MAU``; SAMPA phones; pauses ``<p:>``).
"""

from __future__ import annotations

import struct
import typing as tp
from pathlib import Path

import numpy as np

from .fixtures import write_wav

SFREQ = 1200.0
WORDS_NL = ("de kat zat op een mat terwijl vogels zongen over heuvels en rivieren liepen naar blauwe zeeën waar oude "
            "schepen langzaam voorbij hoge witte torens bij groene velden vol goud dreven").split()
# SAMPA labels: mappable to ARPABET (p t k s m n l f @ i u E I) and Dutch-only ones that must be dropped (y 2: Ei x)
PHONES_NL = ["p", "t", "@", "s", "k", "y", "m", "2:", "n", "Ei", "l", "x", "i", "E"]
SENTENCE_STIMULI = (3, 17, 42, 88, 121, 160)        # stimulus numbers of the sentences
WORDLIST_STIMULI = (183, 197, 222, 268, 301, 340)   # word lists (scrambled sentences)
MOUS_SUBJECTS = ("A2002", "A2003", "A2011")         # A2011 is in the excluded list of the study
# meg_time = slope * log_time + offset (s): the stimulus PC's clock starts elsewhere and drifts
LOG_CLOCKS = {"A2002": (1.00002, -3.2175), "A2003": (0.99998, 1.5), "A2011": (1.0, 0.0)}
WORD_DUR, WORD_GAP, GAP = 0.3, 0.05, 1.6


def stimulus_texts() -> dict[int, str]:
    """Text of each fixture stimulus: 6 sentences of 7 words and 6 word lists (their words reversed)."""
    out = {}
    for i, num in enumerate(SENTENCE_STIMULI):
        words = [WORDS_NL[(5 * i + 3 * k + i * k) % len(WORDS_NL)] for k in range(7)]
        out[num] = " ".join(words).capitalize() + "."
        out[WORDLIST_STIMULI[i]] = " ".join(words[::-1])
    return out


def words_of(text: str) -> list[str]:
    return [w.strip(".,;:!?").lower() for w in text.split()]


def block_uids() -> list[str]:
    return sorted(stimulus_texts().values())


# -- CTF writer ------------------------------------------------------------------------------------------

def _coil_record(pos_cm: np.ndarray | None = None, norm: np.ndarray | None = None, turns: int = 1,
                 area_cm2: float = 1.0) -> tuple:
    pos = np.zeros(3) if pos_cm is None else pos_cm
    nrm = np.zeros(3) if norm is None else norm
    return (pos, 0.0, nrm, 0.0, turns, 0, 0, area_cm2)


_COIL_DT = np.dtype([("pos", ">f8", 3), ("d0", ">f8"), ("norm", ">f8", 3), ("d1", ">f8"), ("turns", ">i2"),
                     ("d2", ">i4"), ("d3", ">i2"), ("area", ">f8")])
_CH_DT = np.dtype([("sensor_type_index", ">i2"), ("original_run_no", ">i2"), ("coil_type", ">i4"),
                   ("proper_gain", ">f8"), ("qgain", ">f8"), ("io_gain", ">f8"), ("io_offset", ">f8"),
                   ("num_coils", ">i2"), ("grad_order_no", ">i2"), ("d0", ">i4"), ("coil", _COIL_DT, 8),
                   ("head_coil", _COIL_DT, 8)])
SENSOR_TYPES = {"ref_mag": 0, "ref_grad": 1, "meg": 5, "eeg": 9, "stim": 11, "misc": 18}


def write_ctf_ds(ds: Path, channels: list[dict], data: np.ndarray, sfreq: float, trial_len: int = 1200,
                 date: str = "01/01/2020", time: str = "10:00:00", grade: int = 3) -> Path:
    """Write a CTF dataset folder ``ds`` (name ending in ``.ds``).

    ``channels``: dicts with ``name``, ``kind`` (a key of :data:`SENSOR_TYPES`), optional ``pos`` / ``norm``
    (device coordinates in cm, for MEG / reference coils; gradiometers get a second coil 5 cm outwards) and
    ``gain`` (counts per physical unit). ``data``: physical values (T or trigger codes), channels x samples;
    it is zero-padded to whole trials of ``trial_len`` samples. ``grade``: the gradient compensation order
    recorded for the gradiometers (the G3BR coefficients are written whenever references exist).
    """
    ds.mkdir(parents=True, exist_ok=True)
    stem = ds.name[:-3]
    n_chan, n = data.shape
    n_trials = -(-n // trial_len)
    head = bytearray(1844)

    def put(offset: int, fmt: str, *values: tp.Any) -> None:
        struct.pack_into(fmt, head, offset, *values)

    def put_str(offset: int, text: str, size: int) -> None:
        raw = text.encode()[: size - 1]
        head[offset: offset + len(raw)] = raw

    put_str(0, "MEG41RS", 8)
    put_str(8, "bm2-fixture", 256)
    put_str(264, "bm2", 256)
    put_str(520, "MOUS-like fixture", 256)
    put(776, ">h", 1)                       # nave
    put_str(778, time, 255)
    put_str(1033, date, 255)
    put(1288, ">i", trial_len)              # nsamp (samples per trial)
    put(1292, ">h", n_chan)
    put(1296, ">d", sfreq)
    put(1304, ">d", trial_len / sfreq)      # epoch time
    put(1312, ">h", n_trials)
    put(1316, ">i", 0)                      # pre-trigger points
    put(1320, ">hh", n_trials, 0)
    put(1324, ">i", 0)
    put_str(1360, "MOUS", 32)
    put_str(1648, "CTF-275", 32)
    put_str(1712, stem.split("_")[0], 32)   # subject id
    put(1836, ">i", 0)                      # no run description
    out = bytearray(head)
    out += struct.pack(">h", 0)             # no filters
    for ch in channels:
        raw = ch["name"].encode()[:31]
        out += raw + b"\x00" * (32 - len(raw))
    recs = np.zeros(n_chan, dtype=_CH_DT)
    for i, ch in enumerate(channels):
        kind = ch["kind"]
        rec = recs[i]
        rec["sensor_type_index"] = SENSOR_TYPES[kind]
        rec["coil_type"] = 0
        rec["grad_order_no"] = grade if kind == "meg" else 0
        rec["proper_gain"] = 1.0
        rec["qgain"] = float(ch.get("gain", 1.0))
        rec["io_gain"] = 1.0
        if kind in ("meg", "ref_mag", "ref_grad"):
            pos, norm = np.asarray(ch["pos"], float), np.asarray(ch["norm"], float)
            norm = norm / np.linalg.norm(norm)
            coils = [_coil_record(pos, norm, 1, 2.0)]
            if kind != "ref_mag":
                coils.append(_coil_record(pos + 5.0 * norm, -norm, 1, 2.0))
            rec["num_coils"] = len(coils)
            for j, c in enumerate(coils):
                rec["coil"][j] = c
                rec["head_coil"][j] = c
        else:
            rec["num_coils"] = 0
    out += recs.tobytes()
    # third-order gradient compensation (G3BR) of every gradiometer from the reference channels
    refs = [ch["name"] for ch in channels if ch["kind"] in ("ref_mag", "ref_grad")]
    megs = [ch["name"] for ch in channels if ch["kind"] == "meg"]
    comp_dt = np.dtype([("sensor_name", "S32"), ("coeff_type", ">i4"), ("d0", ">i4"), ("ncoeff", ">i2"),
                        ("sensors", "S31", 50), ("coeffs", ">f8", 50)])
    comps = np.zeros(len(megs) if refs else 0, dtype=comp_dt)
    for i, name in enumerate(megs if refs else []):
        comps[i]["sensor_name"] = name.encode()
        comps[i]["coeff_type"] = 0x47334252
        comps[i]["ncoeff"] = len(refs)
        for j, ref in enumerate(refs):
            comps[i]["sensors"][j] = ref.encode()
            comps[i]["coeffs"][j] = 0.01 * (j + 1)
    out += struct.pack(">h", len(comps))
    out += comps.tobytes()
    (ds / f"{stem}.res4").write_bytes(bytes(out))

    gains = np.array([float(ch.get("gain", 1.0)) for ch in channels])
    counts = np.zeros((n_chan, n_trials * trial_len), dtype=">i4")
    counts[:, :n] = np.round(data * gains[:, None]).astype(np.int64)
    trials = counts.reshape(n_chan, n_trials, trial_len).transpose(1, 0, 2)  # trial, channel, sample
    with open(ds / f"{stem}.meg4", "wb") as fh:
        fh.write(b"MEG41CP\x00")
        fh.write(np.ascontiguousarray(trials).tobytes())
    hc = []
    for frame in ("dewar", "head"):
        for label, r in (("nasion", (10.0, 0.0, -25.0)), ("left ear", (0.0, 7.0, -25.0)),
                         ("right ear", (0.0, -7.0, -25.0))):
            hc.append(f"measured {label} coil position relative to {frame} (cm):\n"
                      f"\tx = {r[0]:.5f}\n\ty = {r[1]:.5f}\n\tz = {r[2]:.5f}\n".replace("\t", ""))
    (ds / f"{stem}.hc").write_text("".join(hc))
    return ds


def ctf275_names(n: int) -> list[str]:
    """``n`` gradiometer names spread over the CTF-275 layout shipped with mne (``MLC11`` ...)."""
    import mne

    names = [nm.split("-")[0] for nm in mne.channels.read_layout("CTF-275").names]
    idx = np.linspace(0, len(names) - 1, n).round().astype(int)
    return [names[i] for i in idx]


def _helmet_cm(n: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.arange(n) + 0.5
    z = 1 - i / n
    r = np.sqrt(1 - z ** 2)
    phi = np.pi * (3 - np.sqrt(5)) * i
    unit = np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)
    return 12.0 * unit + np.array([0.0, 0.0, -5.0]), unit


def mous_channels(n_grad: int) -> list[dict]:
    """Gradiometers (``MLC11-4304`` ...), references (one named like a gradiometer), trigger, audio ADC."""
    pos, norm = _helmet_cm(n_grad)
    chans = [dict(name=f"{nm}-4304", kind="meg", pos=p, norm=u, gain=1e15)
             for nm, p, u in zip(ctf275_names(n_grad), pos, norm)]
    chans += [dict(name="BG1-4304", kind="ref_mag", pos=(0, 0, 20.0), norm=(0.2, 0.1, 0.97), gain=1e15),
              dict(name="G11-4304", kind="ref_grad", pos=(2.0, 0, 20.0), norm=(0.9, 0.3, 0.3), gain=1e15),
              dict(name="MLT99-4304", kind="ref_grad", pos=(0, 2.0, 21.0), norm=(0.1, 0.3, 0.95), gain=1e15),
              dict(name="UPPT001", kind="stim", gain=1.0),
              dict(name="UADC004-4304", kind="misc", gain=1e6)]
    return chans


# -- the MOUS tree ---------------------------------------------------------------------------------------

def _textgrid(path: Path, words: list[str], seed: int) -> float:
    """A long-format MAUS TextGrid (tiers ORT-MAU, KAN-MAU, MAU) for ``words``; returns the audio duration."""
    t = 0.25
    w_iv, k_iv, p_iv = [(0.0, t, "")], [(0.0, t, "")], [(0.0, t, "<p:>")]
    for k, w in enumerate(words):
        phones = [PHONES_NL[(seed + 3 * k + j) % len(PHONES_NL)] for j in range(3)]
        w_iv.append((t, t + WORD_DUR, w))
        k_iv.append((t, t + WORD_DUR, " ".join(phones)))
        for j, ph in enumerate(phones):
            p_iv.append((t + 0.1 * j, t + 0.1 * (j + 1), ph))
        t += WORD_DUR
        w_iv.append((t, t + WORD_GAP, ""))
        k_iv.append((t, t + WORD_GAP, ""))
        p_iv.append((t, t + WORD_GAP, "<p:>"))
        t += WORD_GAP
    end = t + 0.2
    w_iv.append((t, end, ""))
    k_iv.append((t, end, ""))
    p_iv.append((t, end, "<p:>"))

    def tier(name: str, ivs: list[tuple[float, float, str]]) -> str:
        body = "".join(f"        intervals [{i + 1}]:\n            xmin = {a:.6f}\n            xmax = {b:.6f}\n"
                       f"            text = \"{s}\"\n" for i, (a, b, s) in enumerate(ivs))
        return (f"        class = \"IntervalTier\"\n        name = \"{name}\"\n        xmin = 0\n"
                f"        xmax = {end:.6f}\n        intervals: size = {len(ivs)}\n{body}")

    text = (f"File type = \"ooTextFile\"\nObject class = \"TextGrid\"\n\nxmin = 0 \nxmax = {end:.6f}\n"
            f"tiers? <exists> \nsize = 3\nitem []:\n    item [1]:\n{tier('ORT-MAU', w_iv)}    item [2]:\n"
            f"{tier('KAN-MAU', k_iv)}    item [3]:\n{tier('MAU', p_iv)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return end


def stimulus_stem(num: int) -> str:
    return f"EQ_Ramp_Int2_Int1LPF{num:03d}"


def stimuli_numbers() -> dict[int, int]:
    """Audio file number -> line number in stimuli.txt (numbered independently, as the loader must not assume
    they agree)."""
    nums = sorted(stimulus_texts())
    return {num: 1 + (5 * i) % len(nums) for i, num in enumerate(nums)}


TRUNCATED_STIMULUS = SENTENCE_STIMULI[2]  # its alignment misses the last word (seen in MOUS)
AUDIO_DELAY = 0.046                       # s from the 'Start File' row to the 'Audio onset' row
HEADER = ("Subject\tTrial\tEvent Type\tCode\tTime\tTTime\tUncertainty\tDuration\tUncertainty\tReqTime\t"
          "ReqDur\tStim Type\tPair Index")
HEADER2 = ("Event Type\tCode\tType\tResponse\tRT\tRT Uncertainty\tTime\tUncertainty\tDuration\tUncertainty\t"
           "ReqTime\tReqDur")


def _log_text(sub: str, rows: list[tuple[int, str, str, float]], slope: float, offset: float) -> str:
    """One ``Scenario`` section: both tables, times on the log clock in units of 1e-4 s."""
    def ticks(meg_time: float) -> int:
        return int(round((meg_time - offset) / slope * 1e4))
    first, second = [], []
    for trial, kind, code, when in rows:
        if kind == "Quit":
            first.append(f"{sub}\t{trial}\tQuit\t\t{ticks(when)}\t130009")
            continue
        extra = "\t2\t16998\t4\t3000\tnext\tother\t0" if kind == "Picture" else "\t1\t\t\t0\t\tother\t0"
        first.append(f"{sub}\t{trial}\t{kind}\t{code}\t{ticks(when)}\t0{extra}")
        second.append(f"{kind}\t{code}\tother\t\t\t\t{ticks(when)}\t1\t\t\t0")
    return f"\n{HEADER}\n\n" + "\n".join(first) + f"\n\n\n{HEADER2}\n\n" + "\n".join(second) + "\n"


def write_mous(root: Path, n_grad: int = 32, subjects: tp.Sequence[str] = MOUS_SUBJECTS,
               missing_textgrid: int | None = None, full_channels: bool = False) -> dict:
    """The MOUS-like tree under ``root``; returns ``uids`` (block uids = stimuli.txt texts), ``n_recordings``
    (non-excluded subjects), ``sounds`` (per subject: [(audio number, MEG onset s, condition)]), ``clocks``
    (log -> MEG clock per subject) and ``n_grad``."""
    root.mkdir(parents=True, exist_ok=True)
    texts = stimulus_texts()
    lines = {stimuli_numbers()[num]: texts[num] for num in texts}
    (root / "stimuli").mkdir(exist_ok=True)
    (root / "stimuli" / "stimuli.txt").write_text("".join(f"{k} {lines[k]}\n" for k in sorted(lines)),
                                                  encoding="utf-8")
    durations = {}
    for num, text in texts.items():
        words = [w.strip(".") for w in text.split()]
        if num == TRUNCATED_STIMULUS:
            words = words[:-1]
        tg = root / "derivatives" / "phonemes" / f"{stimulus_stem(num)}.TextGrid"
        dur = _textgrid(tg, words, seed=num)
        if num == missing_textgrid:
            tg.unlink()
        durations[num] = dur
        write_wav(root / "stimuli" / "audio_files" / f"{stimulus_stem(num)}.wav", dur, seed=num)
    channels = full_ctf275_channels() if full_channels else mous_channels(n_grad)
    n_grad = sum(c["kind"] == "meg" for c in channels)
    stim_row = [c["name"] for c in channels].index("UPPT001")
    meta: dict[str, tp.Any] = {"uids": block_uids(), "sounds": {}, "clocks": dict(LOG_CLOCKS), "n_grad": n_grad}
    for s, sub in enumerate(subjects):
        rng = np.random.default_rng(s)
        # condition blocks: sentences then word lists for even subjects, the reverse for odd ones
        sent = list(rng.permutation(SENTENCE_STIMULI))
        wl = list(rng.permutation(WORDLIST_STIMULI))
        blocks = [("ZINNEN", sent[:3]), ("WOORDEN", wl[:3]), ("ZINNEN", sent[3:]), ("WOORDEN", wl[3:])]
        if s % 2:
            blocks = [blocks[1], blocks[0], blocks[3], blocks[2]]
        slope, offset = LOG_CLOCKS.get(sub, (1.0, 0.0))
        t = 3.0  # MEG time of the first event
        rows: list[tuple[int, str, str, float]] = []
        triggers: list[tuple[float, int]] = []
        sounds = []
        trial = 1
        for label, nums in blocks:
            rows.append((trial, "Picture", label, t))
            triggers.append((t, 10))
            trial += 1
            rows.append((trial, "Picture", "blank", t + 0.5))
            t += 1.0
            for num in nums:
                rows.append((trial, "Picture", f"FIX {3000 + trial}", t - 0.5))
                triggers.append((t - 0.5, 20))
                rows.append((trial, "Sound", f"14 Start File {int(num):03d}.wav", t))
                rows.append((trial, "Nothing", "1 Audio onset", t + AUDIO_DELAY))
                cond = "sentence" if label == "ZINNEN" else "word_list"
                sounds.append((int(num), round(t + AUDIO_DELAY, 4), cond))
                t += AUDIO_DELAY + durations[int(num)]
                rows.append((trial, "Nothing", "15 End of file", t))
                if trial % 4 == 0:  # a comprehension question with a button press
                    rows.append((trial, "Picture", "QUESTION Zat de kat op de mat.", t + 0.3))
                    rows.append((trial, "Response", "1", t + 0.9))
                t += GAP
                trial += 1
        rows.append((trial, "Quit", "", t + 0.5))
        total = t + 2.0
        n = int(total * SFREQ)
        data = rng.standard_normal((len(channels), n)) * 2e-13
        data[stim_row] = 0
        if sub == "A2002":  # a lost fixation trigger, and two spurious ones
            triggers = triggers[:4] + triggers[5:] + [(1.234, 20), (total - 1.0, 20)]
        for when, value in triggers:
            i0 = int(round(when * SFREQ))
            data[stim_row, i0: i0 + 24] = value
        data[-1] = rng.standard_normal(n) * 0.1  # audio ADC (V)
        ds = root / f"sub-{sub}" / "meg" / f"sub-{sub}_task-auditory_meg.ds"
        write_ctf_ds(ds, channels, data, SFREQ)
        text = "Scenario - MOUS_aud\nLogfile written - 01/01/2020 10:00:00\n" + _log_text(sub, rows, slope, offset)
        # a row broken after a period, as in some MOUS logs
        text = text.replace("QUESTION Zat de kat op de mat.\t", "QUESTION Zat de kat op de mat.\n\t", 1)
        if sub == "A2003":  # an aborted first run of the scenario, on another clock, before the real one
            aborted = [(1, "Picture", "ZINNEN", 3.0), (2, "Picture", "FIX 3002", 4.0),
                       (2, "Sound", f"14 Start File {int(sent[0]):03d}.wav", 4.5), (3, "Quit", "", 5.0)]
            text = "Scenario - MOUS_aud\nLogfile written - 01/01/2020 09:50:00\n" + \
                _log_text(sub, aborted, 1.0, -500.0) + "\n" + text
        log = root / "sourcedata" / "meg_task" / f"{sub}-MEG-MOUS-Aud.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(text, encoding="utf-8")
        meta["sounds"][sub] = sounds
    meta["n_recordings"] = len([s for s in subjects if s != "A2011"])
    return meta


def full_ctf275_channels() -> list[dict]:
    """A CTF-275-style channel set as in MOUS: 273 of the 275 gradiometers (two dead sensors left out, as in
    the release), 26 references (magnetometers ``B*``, gradiometers ``G*`` / ``P*`` / ``Q*`` / ``R*``), the
    trigger channels ``UPPT001`` / ``UPPT002``, four ``UADC`` channels, the system clock ``SCLK01`` and nine
    head-localisation channels ``HLC00nn``."""
    names = ctf275_names(275)
    names = [n for n in names if n not in ("MLO42", "MRF25")][:273]
    pos, norm = _helmet_cm(len(names))
    chans = [dict(name=f"{nm}-4304", kind="meg", pos=p, norm=u, gain=1e15) for nm, p, u in zip(names, pos, norm)]
    refs = ["BG1", "BG2", "BG3", "BP1", "BP2", "BP3", "BR1", "BR2", "BR3", "G11", "G12", "G13", "G22", "G23",
            "P11", "P13", "Q11", "Q13", "Q21", "Q22", "Q23", "R11", "R12", "R13", "R22", "R23"]
    for i, r in enumerate(refs):
        kind = "ref_mag" if r.startswith("B") else "ref_grad"
        chans.append(dict(name=f"{r}-4304", kind=kind, pos=(0.3 * i, 0.0, 20.0 + 0.1 * i),
                          norm=(0.1, 0.2 + 0.01 * i, 0.97), gain=1e15))
    chans += [dict(name="UPPT001", kind="stim", gain=1.0), dict(name="UPPT002", kind="stim", gain=1.0)]
    chans += [dict(name=f"UADC00{i}-4304", kind="misc", gain=1e6) for i in range(1, 5)]
    chans += [dict(name="SCLK01-177", kind="misc", gain=1.0)]
    chans += [dict(name=f"HLC00{c}{k}-4304", kind="misc", gain=1e6) for c in (1, 2, 3) for k in (1, 2, 3)]
    # the audio ADC must stay last (write_mous fills it)
    return [c for c in chans if c["name"] != "UADC004-4304"] + [dict(name="UADC004-4304", kind="misc", gain=1e6)]
