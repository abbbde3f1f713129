"""Fixture writer for gwilliams2022 (MEG-MASC) with real KIT/Yokogawa ``.con`` files.

mne reads KIT but cannot write it, so :func:`write_kit_con` writes the binary file itself, following what
``mne.io.kit.kit.get_kit_info`` parses (all little-endian):

* a directory table at offset 0: ``DIR_COUNT`` entries of ``(offset uint32, size int32, max_count int32,
  count int32)``; entry 0 describes the table itself (its ``count`` is the number of entries);
* system (dir 1): version / revision (V2R004, so the ADC range is a float64), system id, 128-byte system and
  model names, channel count, 256-byte comment, creation time, dewar / FLL / trigger / A/D board types with
  their reserved gaps, then ADC range [V], polarity, allocated and stored bits (16 / 16: int16 samples);
* channels (dir 4): one fixed-size record per channel: ``int32 type``; MEG types then hold ``x, y, z`` [m] in
  the KIT device frame (x anterior, y left, z up) and ``theta, phi`` [deg] of the coil normal (5 float64),
  16 bytes of misc fields and, for axial gradiometers, a 6-byte name; trigger channels hold ``int32 no``,
  4 spare bytes and a 32-byte name;
* calibration (dir 5): ``(offset [V] = 0, gain [T/V])`` float64 pairs for every channel;
* amplifier (dir 7): one int32 bit field (Kapper type, FLL 100: gains, high-pass, low-pass, notch);
* acquisition (dir 8): ``int32 acq_type = 1`` (continuous), ``float64 sfreq``, ``int32`` sample count (twice);
* raw data (dir 9): int16 samples, channel-interleaved (sample-major): value = int * ADC range / 2**bits /
  amplifier gain * channel gain for MEG channels, int * ADC range / 2**bits [V] for trigger channels.

Digitisation / coregistration (dirs 12, 26) are empty (count 0), as in a recording without marker coils.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import typing as tp
from pathlib import Path

import numpy as np

from .fixtures import GWILLIAMS_RECORDINGS, _quiet, write_gwilliams

N_GRAD = 208
N_REF = 3
N_TRIG = 2
SYSTEM_ID = 442  # KIT.SYSTEM_NYUAD_2014: mne picks the "KIT-AD" 208-channel layout for it
DIR_COUNT = 32
CHAN_SIZE = 128
ADC_RANGE, ADC_BITS = 10.0, 16  # +/- 5 V over int16
FLL_TYPE = 100  # Low Band Kapper
AMP_DATA = (3 << 12) | (4 << 16)  # gain1 = GAINS[3] = 10, gain2 = gain3 = 1; hpf 0 (DC), lpf index 4 (200 Hz)
AMP_GAIN = 10.0
LOWPASS = 200.0
GRAD_GAIN = 1.31072e-10  # [T/V]: one int16 step = 2e-15 T
TRIG_HIGH = 3.0  # [V], the idle level of a trigger line; pulses go to 0 V (mne's default slope '-')

KIT_GRAD, KIT_REF_MAG, KIT_TRIGGER = 2, 0x101, -1


def helmet_geometry() -> tuple[np.ndarray, np.ndarray]:
    """(208, 3) positions [m] in the KIT device frame and (208, 2) coil normals (theta, phi) [deg].

    The points lie on a 12 cm sphere, laid out like mne's ``KIT-AD`` 2-D layout (inverse azimuthal projection
    of the box centres), with outward-pointing normals, so 3-D and 2-D geometry agree.
    """
    import mne

    layout = mne.channels.read_layout("KIT-AD")
    xy = layout.pos[:N_GRAD, :2] + layout.pos[:N_GRAD, 2:4] / 2
    xy = xy - (xy.min(axis=0) + xy.max(axis=0)) / 2
    right, front = xy[:, 0], xy[:, 1]
    rad = np.hypot(right, front)
    theta = rad / rad.max() * np.radians(100)  # polar angle from the vertex; the lowest sensors below the equator
    phi = np.arctan2(-right, front)  # KIT frame: x anterior, y left
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    return 0.12 * unit + np.array([0.0, 0.0, 0.04]), np.degrees(np.stack([theta, phi], axis=1))


def _pad(text: str, n: int) -> bytes:
    raw = text.encode()[: n - 1]
    return raw + b"\x00" * (n - len(raw))


def write_kit_con(path: Path, grad: np.ndarray, ref: np.ndarray | None = None, trig: np.ndarray | None = None,
                  sfreq: float = 1000.0, create_time: int = 1577836800) -> dict[str, np.ndarray]:
    """Write ``grad`` (208, n) [T], ``ref`` (3, n) [T] and ``trig`` (2, n) [V] as a KIT ``.con`` file.

    Returns the int16 samples written (``counts``, (n_channels, n)) and the per-channel factor from counts to
    physical units (``scale``), so that the file's exact content is ``counts * scale``.
    """
    n = grad.shape[1]
    ref = np.zeros((N_REF, n)) if ref is None else ref
    trig = np.full((N_TRIG, n), TRIG_HIGH) if trig is None else trig
    assert grad.shape == (N_GRAD, n) and ref.shape == (N_REF, n) and trig.shape == (N_TRIG, n)
    nchan = N_GRAD + N_REF + N_TRIG
    ad_to_volt = ADC_RANGE / 2 ** ADC_BITS
    gains = np.r_[np.full(N_GRAD, GRAD_GAIN) * (1 + 0.01 * np.arange(N_GRAD) / N_GRAD),
                  np.full(N_REF, GRAD_GAIN), np.ones(N_TRIG)]
    scale = np.r_[ad_to_volt / AMP_GAIN * gains[: N_GRAD + N_REF], np.full(N_TRIG, ad_to_volt)]
    counts = np.round(np.vstack([grad, ref, trig]) / scale[:, None])
    if np.abs(counts).max() > 32767:
        raise ValueError("signal exceeds the int16 range of the KIT file")
    counts = counts.astype("<i2")

    # -- sections, in file order after the directory table
    system = struct.pack("<3i", 2, 4, SYSTEM_ID) + _pad("NYU Abu Dhabi (fixture)", 128) + _pad("KIT-208", 128)
    system += struct.pack("<i", nchan) + _pad("bm2 test fixture", 256) + struct.pack("<2i", create_time, create_time)
    system += struct.pack("<3i i 3i i 3i i 3i i 29i", *[0] * 3, 2, *[0] * 3, FLL_TYPE, *[0] * 3, 1, *[0] * 3, 1,
                          *[0] * 29)
    system += struct.pack("<d3i", ADC_RANGE, 0, ADC_BITS, ADC_BITS)

    pos, ang = helmet_geometry()
    records = []
    for i in range(N_GRAD):
        rec = struct.pack("<i5d", KIT_GRAD, *pos[i], *ang[i]) + b"\x00" * 16 + _pad("", 6)
        records.append(rec)
    for i in range(N_REF):  # reference magnetometers above the helmet, facing x / y / z
        loc = (0.02 * (i - 1), 0.0, 0.22)
        theta_phi = [(90.0, 0.0), (90.0, 90.0), (0.0, 0.0)][i % 3]
        records.append(struct.pack("<i5d", KIT_REF_MAG, *loc, *theta_phi) + b"\x00" * 16)
    for i in range(N_TRIG):
        records.append(struct.pack("<2i", KIT_TRIGGER, N_GRAD + N_REF + i) + b"\x00" * 4 + _pad("", 32))
    channels = b"".join(r.ljust(CHAN_SIZE, b"\x00") for r in records)
    calibration = np.stack([np.zeros(nchan), gains], axis=1).astype("<f8").tobytes()
    amplifier = struct.pack("<i", AMP_DATA)
    acquisition = struct.pack("<idii", 1, float(sfreq), n, n)
    data = np.ascontiguousarray(counts.T).tobytes()  # sample-major, channels interleaved

    sections = {1: (system, len(system), 1), 4: (channels, CHAN_SIZE, nchan), 5: (calibration, 16, nchan),
                7: (amplifier, 4, 1), 8: (acquisition, len(acquisition), 1), 9: (data, 2 * nchan, n)}
    table = [(0, 16, DIR_COUNT, DIR_COUNT)] + [(0, 0, 0, 0)] * (DIR_COUNT - 1)
    body, offset = [], 16 * DIR_COUNT
    for index, (blob, size, count) in sections.items():
        table[index] = (offset, size, count, count)
        body.append(blob)
        offset += len(blob)
    with open(path, "wb") as fid:
        fid.write(b"".join(struct.pack("<I3i", *row) for row in table))
        fid.write(b"".join(body))
    return {"counts": counts, "scale": scale}


def trigger_lines(n: int, sfreq: float, onsets: tp.Sequence[float], width: float = 0.01) -> np.ndarray:
    """(2, n) trigger voltages: idle high, line 0 drops to 0 V for ``width`` s at each onset."""
    trig = np.full((N_TRIG, n), TRIG_HIGH)
    for onset in onsets:
        start = int(round(onset * sfreq))
        trig[0, start:start + max(1, int(width * sfreq))] = 0.0
    return trig


def write_gwilliams_kit(root: Path, seconds_pad: float = 2.0, sfreq: float = 1000.0) -> dict:
    """:func:`~tests.studies.fixtures.write_gwilliams`, with every recording's FIF replaced by a KIT ``.con``.

    Each ``.con`` holds the FIF's 208 signals (same length, int16-quantised), 3 reference magnetometers and
    2 trigger lines (line 0 pulses at each word onset); mne-bids then rewrites the sidecars (``_meg.json``,
    ``_channels.tsv``, ``_scans.tsv``) for the KIT file while the dict-literal ``_events.tsv`` is kept.
    Returns ``write_gwilliams``'s dict plus ``written``: {(sub, ses, task): write_kit_con's dict, with the first
    2000 samples of the FIF signals (``source_head``) and the number of trigger pulses (``n_words``)}.
    """
    import mne
    import mne_bids
    import pandas as pd

    out = write_gwilliams(root, seconds_pad=seconds_pad, sfreq=sfreq)
    written = {}
    tmp = Path(tempfile.mkdtemp(prefix="kit_con_"))
    try:
        for r, (sub, ses, task) in enumerate(GWILLIAMS_RECORDINGS):
            path = mne_bids.BIDSPath(root=root, subject=sub, session=ses, task=task, datatype="meg",
                                     suffix="meg", extension=".fif")
            fif = mne.io.read_raw_fif(path.fpath, preload=True, verbose="error")
            grad = fif.get_data()
            events_tsv = path.copy().update(suffix="events", extension=".tsv").fpath
            events_text = events_tsv.read_text()
            table = pd.read_csv(events_tsv, sep="\t")
            onsets = table.loc[table["trial_type"].str.contains("'kind': 'word'"), "onset"]
            n = grad.shape[1]
            ref = np.random.default_rng(100 + r).standard_normal((N_REF, n)) * 2e-13
            con = tmp / f"sub-{sub}_ses-{ses}_task-{task}_meg.con"
            create = int(fif.info["meas_date"].timestamp())
            written[(sub, ses, task)] = write_kit_con(con, grad, ref, trigger_lines(n, sfreq, onsets), sfreq,
                                                      create_time=create)
            written[(sub, ses, task)].update(source_head=grad[:, :2000], n_words=len(onsets))
            # drop the FIF recording and its sidecars, then let mne-bids write the KIT one
            for sidecar in path.fpath.parent.glob(f"sub-{sub}_ses-{ses}_task-{task}_*"):
                if sidecar.name != events_tsv.name:
                    sidecar.unlink()
            scans = root / f"sub-{sub}" / f"ses-{ses}" / f"sub-{sub}_ses-{ses}_scans.tsv"
            if scans.exists():
                rows = pd.read_csv(scans, sep="\t", dtype=str)
                rows = rows[~rows["filename"].str.contains(f"task-{task}_meg")]
                if len(rows):
                    rows.to_csv(scans, sep="\t", index=False)
                else:
                    scans.unlink()
            kit = mne.io.read_raw_kit(con, verbose="error")
            ctx = _quiet()
            try:
                mne_bids.write_raw_bids(kit, path.copy().update(suffix=None, extension=None), overwrite=True,
                                        verbose="error")
            finally:
                ctx.__exit__(None, None, None)
            events_tsv.write_text(events_text)  # the dict-literal events, not mne-bids' trigger events
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**out, "written": written}
