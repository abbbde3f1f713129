"""A synthetic imagined-speech EEG study in the lee2024 release's layout, generated locally (no download).

:meth:`Lee2024Synthetic.prepare` writes ``root/<GEN_VERSION>-<hash of the options>/{raw,spectra}/
sub_<n>_ImaginedSpeech.h5`` (``x_data`` raw ``(trials, 127, times)`` in uV, or its superlet power ``(trials, 127,
freqs, times)``; ``y_data`` 0-based int64 class ids) and ``ch_information.mat`` in MATLAB v7.3 layout
(:func:`write_channel_info`), and reads them back with the ``lee2024`` loader (:class:`~bm2.studies.lee2024.Lee2024`).
``variant`` picks the folder read: ``spectra`` (default, as released) or ``raw`` (for ``preprocess.tf=superlet``).

The model (everything seeded by ``seed``):

- 127 EEG channels of MNE's ``brainproducts-RNP-BA-128`` montage (actiCAP 128 without ``Fpz``), positions
  written in EEGLAB's frame in mm; 2-s trials at ``sfreq`` (64 Hz by default, 12 frequencies from 4 to 28 Hz: the
  release's 256 Hz x 64 frequencies would cost 20x more disk and compute);
- each of the 88 classes (:data:`~bm2.studies.lee2024.CLASSES`) has three time-frequency bursts: a Gaussian
  envelope (120 ms SD) at a latency in [0.3, 1.7] s on a carrier of a frequency in [fmin + 2, fmax - 2] Hz, with a
  smooth topography (a Gaussian blob on the scalp). Within a triplet (word, synonym, phonological neighbour) the
  word shares one burst with its synonym (semantic) and one with its neighbour (phonological), so triplets share
  structure; phrase words have three bursts of their own;
- each trial scales the bursts by a gain around 1, jitters their latency by up to 60 ms and draws their phase;
- background: 1/f-like AR(1) noise mixed from 16 spatially smooth sources plus independent white noise;
  artefacts: eye blinks (a 400-ms bump of 150 uV on frontal channels) in 10% of trials, muscle bursts (broadband
  noise on temporal channels) in 5%;
- ``snr`` scales the bursts (9 uV x snr at the peak of a topography against about 10 uV of background per
  channel). Checked by its builder with a nearest-centroid classifier of the log spectra (8 time bins), one
  held-out trial per class: top-1 45 % / top-10 75 % at 9 uV, 2 % / 16 % at the 3 uV of version v1.

The spectra are bm2's superlet power (:mod:`bm2.superlet`, ``foi`` evenly spaced from ``fmin`` to ``fmax``,
``c1`` 3, orders ``order``, multiplicative) of each raw trial, written in uV^2 as the release presumably is; the
loader reads both variants in V (raw) and V^2 (spectra, times ``unit_scale ** 2``), so that the spectra variant and
``preprocess.tf=superlet`` on the raw variant with the same settings give the same values (tested).
"""

from __future__ import annotations

import datetime
import logging
import os
import typing as tp
from pathlib import Path

import numpy as np

from ..utils.hashing import content_hash
from ._common import GeneratedStudy
from .lee2024 import CLASSES, N_CHANNELS, TRIPLETS, Lee2024

logger = logging.getLogger(__name__)

GEN_VERSION = "v2"  # bump whenever generation changes (v2: 9-uV bursts instead of 3)
MARKER = "bm2_complete.json"
MONTAGE = "brainproducts-RNP-BA-128"
CHANNEL_FILE = "ch_information.mat"
VARIANTS = ("spectra", "raw")


# --------------------------------------------------------------------------- writers of the release formats

def write_release(path: str | Path, x_data: np.ndarray, y_data: np.ndarray) -> None:
    """Write a data file as released: ``x_data`` float32 and ``y_data`` int64 (0-based) at the file's root."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x_data", data=np.asarray(x_data, dtype=np.float32))
        f.create_dataset("y_data", data=np.asarray(y_data, dtype=np.int64))


MAT_HEADER_BYTES = 512


def _mat_header() -> bytes:
    """The 128-byte text header MATLAB puts in the 512-byte user block of a v7.3 file (version 0x0200, 'IM')."""
    stamp = datetime.datetime(2024, 1, 1).strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".encode()
    return text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


class _MatWriter:
    """Writes MATLAB v7.3 variables with h5py as MATLAB lays them out: arrays transposed (column-major), char
    arrays as uint16 code units (``MATLAB_class='char'``, ``MATLAB_int_decode=2``), cells and struct-array fields
    as object references into ``/#refs#``, structs as groups with ``MATLAB_fields``."""

    def __init__(self, f: tp.Any) -> None:
        self.f = f
        self.refs = f.create_group("#refs#")
        self.n = 0

    def _ref_target(self, value: tp.Any) -> tp.Any:
        name = f"r{self.n}"
        self.n += 1
        return self.value(self.refs, name, value)

    def value(self, group: tp.Any, name: str, value: tp.Any) -> tp.Any:
        import h5py

        if isinstance(value, str):  # a 1 x N char row: stored as (N, 1)
            ds = group.create_dataset(name, data=np.array([[ord(c)] for c in value], dtype=np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            ds.attrs["MATLAB_int_decode"] = np.int32(2)
            return ds
        if isinstance(value, list):  # a 1 x N cell: (N, 1) object references
            refs = [self._ref_target(v).ref for v in value]
            ds = group.create_dataset(name, data=np.array(refs, dtype=h5py.ref_dtype).reshape(-1, 1))
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            return ds
        arr = np.atleast_2d(np.asarray(value, dtype=np.float64))
        ds = group.create_dataset(name, data=arr.T)
        ds.attrs["MATLAB_class"] = np.bytes_("double")
        return ds

    def struct_array(self, name: str, fields: dict[str, list[tp.Any]]) -> None:
        """A 1 x N struct array: each field a (N, 1) dataset of references to the per-element values."""
        import h5py

        group = self.f.create_group(name)
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        vlen = h5py.vlen_dtype(np.dtype("S1"))
        names = np.empty(len(fields), dtype=object)
        names[:] = [np.array(list(k), dtype="S1") for k in fields]
        group.attrs.create("MATLAB_fields", names, dtype=vlen)
        for key, values in fields.items():
            refs = [self._ref_target(v).ref for v in values]
            group.create_dataset(key, data=np.array(refs, dtype=h5py.ref_dtype).reshape(-1, 1))


def write_channel_info(path: str | Path, ch_names: tp.Sequence[str], srate: float, xyz: np.ndarray) -> None:
    """Write the release's channel file as MATLAB ``save -v7.3`` would: ``ch_names`` (1 x N cell of char),
    ``srate`` (double), ``ch_locs`` (1 x N struct array with ``labels``, ``X``, ``Y``, ``Z``, EEGLAB's frame), in an
    HDF5 file behind MATLAB's 512-byte header."""
    import h5py

    path = Path(path)
    with h5py.File(path, "w", userblock_size=MAT_HEADER_BYTES) as f:
        writer = _MatWriter(f)
        writer.value(f, "ch_names", list(ch_names))
        writer.value(f, "srate", float(srate))
        xyz = np.asarray(xyz, dtype=float)
        writer.struct_array("ch_locs", {"labels": list(ch_names), "X": list(xyz[:, 0]), "Y": list(xyz[:, 1]),
                                        "Z": list(xyz[:, 2])})
    with open(path, "r+b") as raw:
        raw.write(_mat_header())


def montage_channels() -> tuple[list[str], np.ndarray]:
    """127 channel names and their EEGLAB positions (mm: X nose, Y left, Z up) from :data:`MONTAGE`."""
    import mne

    montage = mne.channels.make_standard_montage(MONTAGE)
    pos = montage.get_positions()["ch_pos"]
    names = [n for n in montage.ch_names if n != "Fpz"][:N_CHANNELS]
    head = np.array([pos[n] for n in names]) * 1000.0  # m -> mm, MNE head frame (x right, y nose, z up)
    return names, np.stack([head[:, 1], -head[:, 0], head[:, 2]], axis=1)


# --------------------------------------------------------------------------- the study

class Lee2024Synthetic(GeneratedStudy, Lee2024):
    """Simulated imagined-speech EEG of 88 classes in the lee2024 release's layout (module docstring).

    Parameters
    ----------
    root : folder of generated datasets; each set of options lives in ``root/<GEN_VERSION>-<hash>``.
    n_subjects : files (``sub_1_ImaginedSpeech.h5`` ...).
    repeats : trials of each of the 88 classes per subject.
    sfreq : sampling rate (Hz); trials last 2 s.
    fmin, fmax, n_freqs : centre frequencies of the spectra (Hz, evenly spaced).
    order : superlet orders ``[min, max]`` (multiplicative, c1 = 3).
    snr : scale of the class bursts against the background.
    seed : seed of everything random; identical options give identical files.
    variant : ``spectra`` (read the 4-D files, as released) or ``raw`` (3-D, for ``preprocess.tf=superlet``).
    subjects : as for ``lee2024``.
    """

    gen_version = GEN_VERSION
    marker = MARKER
    name = "lee2024_synthetic"
    modality = "eeg"
    device = "simulated 127-channel EEG (actiCAP 128 montage)"
    language = "en"
    paradigm = "imagined speech of 88 words (simulated), one 2-s trial per word"
    licence = "MIT"
    url = "generated"
    doi = "n/a (generated locally by bm2)"
    description = ("Simulated imagined-speech EEG: class-specific time-frequency bursts shared within word "
                   "triplets, 1/f background, blinks and muscle artefacts; written in lee2024's HDF5 layout, raw "
                   "and as superlet spectra, with a MATLAB v7.3 channel file, and read by the lee2024 loader.")
    downloadable = False

    def __init__(self, root: str | Path, n_subjects: int = 1, repeats: int = 10, sfreq: float = 64.0,
                 fmin: float = 4.0, fmax: float = 28.0, n_freqs: int = 12, order: tp.Sequence[float] = (1, 5),
                 snr: float = 1.0, seed: int = 0, variant: str = "spectra",
                 subjects: tp.Sequence[str | int] | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"studies.lee2024_synthetic.variant must be one of {list(VARIANTS)}, got {variant!r}")
        if min(n_subjects, repeats, n_freqs) < 1 or not 0 < fmin < fmax < sfreq / 2:
            raise ValueError("n_subjects, repeats, n_freqs must be >= 1 and 0 < fmin < fmax < sfreq / 2")
        self.options: dict[str, tp.Any] = {
            "n_subjects": int(n_subjects), "repeats": int(repeats), "sfreq": float(sfreq), "fmin": float(fmin),
            "fmax": float(fmax), "n_freqs": int(n_freqs), "order": [float(o) for o in order], "snr": float(snr),
            "seed": int(seed)}
        root = Path(root).expanduser().resolve()
        self.variant = variant
        super().__init__(root, pattern="sub_*.h5", channel_file=f"../{CHANNEL_FILE}", subjects=subjects,
                         foi=self.foi_hz.tolist() if variant == "spectra" else None, unit_scale=1e-6)

    @property
    def foi_hz(self) -> np.ndarray:
        """Centre frequencies of the spectra (Hz)."""
        opt = self.options
        return np.linspace(opt["fmin"], opt["fmax"], opt["n_freqs"])

    @property
    def n_times(self) -> int:
        """Samples per 2-s trial."""
        return int(round(2.0 * self.options["sfreq"]))

    @property
    def dataset(self) -> Path:
        """Folder of the dataset generated with these options."""
        return self.root / f"{GEN_VERSION}-{content_hash(self.options)}"

    @property
    def data_root(self) -> Path:
        return self.dataset / self.variant

    @property
    def channel_path(self) -> Path:
        return self.dataset / CHANNEL_FILE


    # -- generation ---------------------------------------------------------------------------------------

    def class_bursts(self, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        """``(params[n_bursts, 3], topographies[n_bursts, C], bursts of each class)``: each burst's latency (s),
        frequency (Hz) and width (s) and its scalp pattern; triplets share bursts (module docstring)."""
        rng = np.random.default_rng([self.options["seed"], 1])
        index = {name: i for i, name in enumerate(CLASSES)}
        bursts: list[list[int]] = [[] for _ in CLASSES]
        n = 0

        def new() -> int:
            nonlocal n
            n += 1
            return n - 1

        for word, synonym, neighbour in TRIPLETS:
            semantic, phonological = new(), new()
            bursts[index[word]] += [semantic, phonological, new()]
            bursts[index[synonym]] += [semantic, new(), new()]
            bursts[index[neighbour]] += [phonological, new(), new()]
        for own in bursts:
            while len(own) < 3:
                own.append(new())
        low, high = self.options["fmin"] + 2, self.options["fmax"] - 2
        params = np.stack([rng.uniform(0.3, 1.7, n), rng.uniform(low, high, n), np.full(n, 0.12)], axis=1)
        unit = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
        centres = unit[rng.integers(0, len(unit), n)]
        topo = np.exp(-np.sum((unit[None] - centres[:, None]) ** 2, axis=-1) / (2 * 0.35 ** 2))
        return params, topo, bursts

    def simulate(self, subject: int, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(labels[n], data[n, C, T])`` in uV of one subject (the trial order is shuffled, seeded)."""
        from scipy.signal import lfilter

        opt = self.options
        fs, n_t = opt["sfreq"], self.n_times
        params, topo, bursts = self.class_bursts(xyz)
        rng = np.random.default_rng([opt["seed"], 2, subject])
        labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), opt["repeats"]))
        n, c = len(labels), len(xyz)
        t = np.arange(n_t) / fs
        unit = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
        src_centres = unit[rng.integers(0, c, 16)]
        mixing = np.exp(-np.sum((unit[None] - src_centres[:, None]) ** 2, axis=-1) / (2 * 0.5 ** 2))  # [16, C]
        sources = lfilter([1.0], [1.0, -0.9], rng.standard_normal((n, 16, n_t + 200)), axis=-1)[..., 200:]
        data = np.einsum("nst,sc->nct", sources, mixing)
        data *= 8.0 / data.std()
        data += 5.0 * rng.standard_normal((n, c, n_t))
        gains = rng.normal(1.0, 0.2, (n, 3))
        jitter = rng.uniform(-0.06, 0.06, (n, 3))
        phases = rng.uniform(0, 2 * np.pi, (n, 3))
        amp = 9.0 * opt["snr"]
        for i, k in enumerate(labels):
            for j, b in enumerate(bursts[k]):
                latency, freq, width = params[b]
                wave = np.exp(-0.5 * ((t - latency - jitter[i, j]) / width) ** 2) * np.sin(
                    2 * np.pi * freq * t + phases[i, j])
                data[i] += amp * gains[i, j] * topo[b][:, None] * wave[None]
        frontal = np.flatnonzero(xyz[:, 0] > 0.6 * xyz[:, 0].max())
        temporal = np.flatnonzero(np.abs(xyz[:, 1]) > 0.6 * np.abs(xyz[:, 1]).max())
        for trial in np.flatnonzero(rng.uniform(size=n) < 0.10).tolist():  # eye blinks
            at = rng.uniform(0.1, 1.6)
            data[trial, frontal] += 150.0 * np.exp(-0.5 * ((t - at - 0.2) / 0.08) ** 2)
        for trial in np.flatnonzero(rng.uniform(size=n) < 0.05).tolist():  # muscle bursts
            start = int(rng.integers(0, n_t // 2))
            data[trial, temporal, start:start + n_t // 4] += 20.0 * rng.standard_normal((len(temporal), n_t // 4))
        return labels.astype(np.int64), data.astype(np.float32)

    def spectra_of(self, data: np.ndarray) -> np.ndarray:
        """Superlet power ``[n, C, F, T]`` (uV^2) of raw trials ``[n, C, T]``, computed per trial."""
        from ..superlet import superlet

        opt = self.options
        from tqdm import tqdm

        out = np.empty((*data.shape[:2], opt["n_freqs"], data.shape[-1]), dtype=np.float32)
        quiet = True if os.environ.get("BM2_NO_PROGRESS") == "1" else None  # None: only on a terminal
        for start in tqdm(range(0, len(data), 16), desc="superlet spectra", unit="16 trials", disable=quiet):
            out[start:start + 16] = superlet(data[start:start + 16], opt["sfreq"], self.foi_hz, 3.0, opt["order"])
        return out

    def _generate(self, out: Path) -> None:
        logger.info("generating lee2024_synthetic in %s: %d subject(s) x %d trials, raw and superlet spectra (about "
                    "20-40 s on 2 cores)", self.dataset, self.options["n_subjects"], len(CLASSES) *
                    self.options["repeats"])
        names, xyz = montage_channels()
        write_channel_info(out / CHANNEL_FILE, names, self.options["sfreq"], xyz)
        for folder in VARIANTS:
            (out / folder).mkdir()
        for s in range(self.options["n_subjects"]):
            labels, data = self.simulate(s, xyz)
            name = f"sub_{s + 1}_ImaginedSpeech.h5"
            write_release(out / "raw" / name, data, labels)
            write_release(out / "spectra" / name, self.spectra_of(data), labels)


__all__ = ["Lee2024Synthetic", "montage_channels", "write_channel_info", "write_release"]
