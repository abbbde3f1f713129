"""Benchmarks of bm2 against plain baselines: ``python -m scripts.bench [--out DIR] [--quick]`` (``make bench``).

Each measure runs side by side with its baseline in the same run and is reported as a ratio:

1. **data loading**: segments/s and MB/s that the training loader (:class:`~bm2.data.loader.BatchLoader` over
   :class:`~bm2.data.SegmentDataset`, shuffled, as the solver) delivers from the cache with 0, 1 and 2 threads,
   and torch's DataLoader with 2 worker processes (the loader before), against a plain in-memory copy
   (``numpy.copyto``) of the same bytes (best of the copies before and after the loaders), with one buffer pool per
   setting kept across its repeats as the solver keeps one for the run; against a bare gather of the same windows
   (no normalisation); memory of the main process, of the buffer pool and of each worker.
2. **training step**: samples/s of forward + CLIP loss + backward + Adam step of SimpleConv (default small
   size and paper size) on CPU, and on GPU when there is one; bf16 autocast vs fp32 of the paper-size step; and
   the training steps (model + its objective + AdamW) of DeMEGa, the Du-IN classifier and the Du-IN VQ-VAE at their
   paper sizes, and of the three ECoG decoders of Neural Speech Decoding (3-D ResNet, LSTM, 3-D Swin: decoder + MSE
   on its features + Adam with betas (0, 0.99), batch 16 x 64 electrodes x 144 frames), bf16 autocast vs fp32 where
   bf16 is native (CUDA, CPUs with bf16), else fp32.
3. **preprocessing**: seconds per recording-hour of :func:`bm2.preprocessing.preprocess` (FIF file read
   lazily, chunks of channels) against mne's ``read_raw_fif(preload=True)`` + ``filter`` + ``resample`` of
   the same file, each in its own subprocess (peak resident memory, ``VmHWM`` / ``ru_maxrss``).
4. **evaluation**: seconds of :func:`bm2.evaluation.retrieval_from_scores` (segment- and word-level ranks)
   on random scores, without the bootstrap; the bootstrap is timed separately.
5. **cache reuse**: two ``dora run`` of one small XP with fresh ``BM2_XP_DIR``: first (study generated,
   cache empty) and warm (same data and cache); time from launch to the end of epoch 1, and from the log
   line ``preparing N recordings`` to ``epoch 1``; then the data preparation alone
   (:func:`bm2.builders.build_all_datasets`, in-process) with an empty cache and with a warm one.
6. **superlet**: channel-seconds of signal per second of :func:`bm2.superlet.superlet` (fractional adaptive,
   c1 = 3, orders 1 -> 30, 50 frequencies 2-100 Hz at 256 Hz, per trial) against mne's ``tfr_array_morlet``
   (power, one Morlet per frequency with the superlet's base Gaussian: ``n_cycles = 3 * 2 pi / 5``) on the
   same frequencies and data; the superlet convolves ~15 wavelets per frequency where mne convolves one.
7. **LibriBrain phoneme windows with grouping**: windows / s that the phoneme-window dataset of the
   ``libribrain_phoneme`` recipe (synthetic LibriBrain study, 306 channels at 250 Hz, windows of 125 samples) delivers
   averaged into groups of ``dset.grouping.k`` = 100 same-phoneme windows (standardised, clipped, batched by the
   solver's loader, :class:`~bm2.data.loader.BatchLoader`, at the recipe's batch size), against
   a plain ``h5py`` slice read (``data[:, start:start + 125]``) of the same windows from the serialised h5 files.

Writes ``DIR/bench.json`` and ``DIR/bench.md`` (measure, value, baseline, ratio, target, met?) and prints
the table. Timings are measurements of this machine, never assertions: the tests only check that every
number is produced.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import typing as tp
from pathlib import Path
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("preprocessing", "dataloading", "training", "evaluation", "cache_reuse", "superlet",
            "libribrain")
MB = 1e6  # bandwidths in MB/s (10^6 bytes)
MIB = 2**20  # memory in MiB
# The tiny XP of tests/integration/test_train_cli.py (the quick cache-reuse benchmark).
TINY_STUDY = ["studies.synthetic.n_subjects=2", "studies.synthetic.n_sessions=1",
              "studies.synthetic.n_sentences=30", "studies.synthetic.sentences_per_recording=20",
              "studies.synthetic.sfreq=200"]
TINY_MODEL = ["model.simpleconv.hidden=16", "model.simpleconv.merger_channels=16", "model.simpleconv.depth=2",
              "model.simpleconv.head_hidden=32", "features.mel.n_mels=8", "optim.batch_size=16"]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one benchmark run (full or quick)."""

    n_channels: int = 208
    raw_sfreq: float = 1000.0
    rec_seconds: float = 600.0  # the recording used for preprocessing and data loading
    block_seconds: float = 30.0
    sample_rate: float = 120.0
    highpass: float | None = 0.1
    loader_batch: int = 256
    loader_batches: int = 30  # batches drawn per worker setting and repeat
    loader_repeats: int = 2  # the fastest repeat is reported (all of them are in the details)
    loader_workers: tuple[int, ...] = (0, 1, 2)
    train_batch: int = 32
    train_times: int = 360  # 3 s at 120 Hz
    train_features: int = 40  # the default mel dimension (features.mel.n_mels)
    train_subjects: int = 4
    demega_batch: int = 64  # the recipe trains with 512 (306 x 125 windows); a smaller batch keeps the CPU run short
    duin_batch: int = 32  # Du-IN's recipes (3 s at 1 kHz)
    duin_channels: int = 10  # sEEG channels of a subject (the channel map to 16 is a small part of the model)
    ecog_batch: int = 16  # Neural Speech Decoding's batch (README commands), 144 ECoG frames = 128 + the 16-frame lead
    model_repeats: int = 2  # fp32 / bf16 runs of each new model, alternated (the best of each is reported)
    compile_config: str | None = "simpleconv_paper"  # the torch.compile row's model (None: no row; compiling
    # takes tens of seconds to minutes, as long as the whole --quick check)
    train_min_steps: int = 3
    train_min_seconds: float = 5.0
    eval_segments: int = 10_000
    eval_candidates: int = 2_000
    eval_words: int = 600
    eval_repeats: int = 3
    libri_train_runs: int = 4  # synthetic LibriBrain runs of the grouping benchmark
    libri_run_seconds: float = 90.0
    libri_k: int = 100
    # dora run of the cache-reuse benchmark: the default synthetic study with a tiny model and one short epoch
    dora_overrides: tuple[str, ...] = tuple(TINY_MODEL + ["optim.epochs=1", "optim.max_batches=2", "num_threads=1"])
    superlet_channels: int = 16
    superlet_seconds: float = 30.0  # per channel, at 256 Hz


FULL = Sizes()
QUICK = Sizes(rec_seconds=120.0, block_seconds=10.0, loader_batch=32, loader_batches=6, loader_repeats=1,
              train_batch=4, demega_batch=2, duin_batch=2, ecog_batch=2, model_repeats=1, compile_config=None,
              train_times=120, train_min_steps=1, train_min_seconds=0.0, eval_segments=1000, eval_candidates=200,
              eval_words=60, eval_repeats=1, libri_train_runs=1, libri_run_seconds=30.0, libri_k=10,
              dora_overrides=tuple(TINY_STUDY + TINY_MODEL + ["optim.epochs=1", "optim.max_batches=1",
                                                             "num_threads=1"]),
              superlet_channels=2, superlet_seconds=4.0)


# --------------------------------------------------------------------------------------------- rows
def row(section: str, measure: str, value: float, unit: str, *, baseline: float | None = None,
        baseline_label: str = "", ratio: float | None = None, ratio_label: str = "",
        target: tuple[str, str, float] | None = None) -> dict[str, tp.Any]:
    """One line of the results table.

    ``target`` is ``(on, op, threshold)`` with ``on`` in {"value", "ratio"} and ``op`` in {">=", "<", "<="}.
    """
    out: dict[str, tp.Any] = {"section": section, "measure": measure, "value": float(value), "unit": unit,
                              "baseline": None if baseline is None else float(baseline),
                              "baseline_label": baseline_label, "ratio": None if ratio is None else float(ratio),
                              "ratio_label": ratio_label, "target": None, "met": None}
    if target is not None:
        on, op, threshold = target
        got = out[on]
        ok = {">=": got >= threshold, ">": got > threshold, "<": got < threshold, "<=": got <= threshold}[op]
        out["target"] = {"on": on, "op": op, "threshold": float(threshold)}
        out["met"] = bool(ok)
    return out


def _num(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return str(x)
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def format_row(r: dict[str, tp.Any]) -> list[str]:
    """The markdown cells of a row: measure, value, baseline, ratio, target, met?"""
    value = f"{_num(r['value'])} {r['unit']}"
    baseline = "—" if r["baseline"] is None else f"{_num(r['baseline'])} {r['unit']} ({r['baseline_label']})"
    if r["ratio"] is None:
        ratio = "—"
    elif r["ratio_label"] == "faster" and r["ratio"] < 1:  # "0.87x faster" reads wrong
        ratio = f"{r['ratio']:.2f}x ({1 / r['ratio']:.2f}x slower)"
    else:
        ratio = f"{r['ratio']:.2f}x {r['ratio_label']}".rstrip()
    target, met = "—", "—"
    if r["target"] is not None:
        t = r["target"]
        what = "ratio" if t["on"] == "ratio" else "value"
        unit = "x" if t["on"] == "ratio" else f" {r['unit']}"
        target = f"{what} {t['op']} {_num(t['threshold'])}{unit}"
        met = "not judged (quick)" if r["met"] is None else "yes" if r["met"] else "**no**"
    return [r["measure"], value, baseline, ratio, target, met]


def markdown(rows: list[dict[str, tp.Any]]) -> str:
    """The markdown table of ``rows``."""
    lines = ["| measure | value | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(format_row(r)) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- helpers
def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Workspace:
    """Files shared by the sections: the FIF recording, a wav and the events of the recording."""

    root: Path
    sizes: Sizes
    _fif: Path | None = None
    _events: tp.Any = None

    @property
    def fif(self) -> Path:
        from .bench_preprocess import write_fif

        if self._fif is None:
            start = time.perf_counter()
            self._fif = write_fif(self.root / "bench_raw.fif", self.sizes.n_channels, self.sizes.raw_sfreq,
                                  self.sizes.rec_seconds)
            _log(f"wrote {self._fif} ({self._fif.stat().st_size / MB:.0f} MB) in "
                 f"{time.perf_counter() - start:.1f}s")
        return self._fif

    @property
    def events(self) -> tp.Any:
        from .bench_preprocess import make_events, write_wav

        if self._events is None:
            wav = write_wav(self.root / "stimulus.wav")
            self._events = make_events(self.sizes.rec_seconds, wav, self.sizes.block_seconds)
        return self._events

    @property
    def cache(self) -> Path:
        return self.root / "cache"


# --------------------------------------------------------------------------------------------- 3. preprocessing
def bench_preprocessing(ws: Workspace) -> tuple[list[dict], dict]:
    """bm2's chunked preprocess vs mne's preload + filter + resample, each in its own subprocess."""
    s = ws.sizes
    fif = ws.fif
    results = {}
    for side in ("bm2", "mne"):
        # bm2 writes straight into the shared cache, which the data-loading benchmark then reuses.
        out = ws.cache if side == "bm2" else ws.root / "mne_out"
        if side == "bm2" and out.exists():
            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "scripts.bench_preprocess", "--side", side, "--fif", str(fif),
               "--out", str(out), "--sample-rate", str(s.sample_rate)]
        if s.highpass:
            cmd += ["--highpass", str(s.highpass)]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, BM2_NO_PROGRESS="1"))
        if proc.returncode != 0:
            raise RuntimeError(f"preprocessing subprocess ({side}) failed:\n{proc.stderr[-3000:]}")
        results[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        _log(f"preprocess {side}: {results[side]['seconds']:.1f}s, peak RSS {results[side]['peak_rss_mb']:.0f} MiB")
    shutil.rmtree(ws.root / "mne_out", ignore_errors=True)
    hours = s.rec_seconds / 3600
    bm2, mne_ = results["bm2"], results["mne"]
    steps = f"{'high-pass ' + str(s.highpass) + ' Hz + ' if s.highpass else ''}resample"
    label = f"{s.n_channels} ch {s.raw_sfreq / 1000:g} kHz FIF -> {s.sample_rate:g} Hz ({steps})"
    rows = [
        row("preprocessing", f"preprocess {label}: time per recording-hour", bm2["seconds"] / hours, "s/h",
            baseline=mne_["seconds"] / hours, baseline_label="mne filter + resample",
            ratio=mne_["seconds"] / bm2["seconds"], ratio_label="faster", target=("ratio", ">=", 1.0)),
        row("preprocessing", f"preprocess {label}: peak RSS of the process", bm2["peak_rss_mb"], "MiB",
            baseline=mne_["peak_rss_mb"], baseline_label="mne, preload=True",
            ratio=mne_["peak_rss_mb"] / bm2["peak_rss_mb"], ratio_label="less memory",
            target=("ratio", ">", 1.0)),
    ]
    details = {"recording_seconds": s.rec_seconds, "fif_mb": fif.stat().st_size / MB, "bm2": bm2, "mne": mne_,
               "mne_steps": "read_raw_fif(preload=True); filter(l_freq, None) (FIR, default); "
                            "resample(sfreq) (default method)",
               "bm2_steps": "preprocess(): chunks of 32 channels, demean, Butterworth sosfiltfilt, resample_poly"}
    return rows, details


# --------------------------------------------------------------------------------------------- 1. data loading
def _datasets(ws: Workspace) -> tp.Any:
    from bm2.cache import Cache
    from bm2.data import NormParams, SplitParams, WindowParams, build_datasets
    from bm2.features import FeatureStack, MelSpectrum
    from bm2.preprocessing import PreprocessParams

    from .bench_preprocess import FifRecording

    s = ws.sizes
    rec = FifRecording(ws.fif, ws.events)
    return build_datasets([rec], Cache(ws.cache), PreprocessParams(sample_rate=s.sample_rate, highpass=s.highpass),
                          FeatureStack([MelSpectrum()]), WindowParams(offset_ms=150),
                          SplitParams(test=0.0, valid=0.0), NormParams())  # only the training loader is measured


def _plain_copy_bandwidth(nbytes: int, repeats: int, threads: int = 1) -> float:
    """Bytes/s of ``threads`` concurrent ``numpy.copyto`` of ``nbytes`` each between preallocated in-memory buffers
    (numpy releases the GIL; best of 3): 1 thread is the loader's baseline, more show what the memory allows."""
    import threading

    pairs = [(np.ones(max(nbytes // 4, 1), dtype=np.float32), np.empty(max(nbytes // 4, 1), dtype=np.float32))
             for _ in range(threads)]
    for src, dst in pairs:
        np.copyto(dst, src)  # fault the pages in

    def work(src: np.ndarray, dst: np.ndarray) -> None:
        for _ in range(repeats):
            np.copyto(dst, src)

    best = math.inf
    for _ in range(3):
        workers = [threading.Thread(target=work, args=pair) for pair in pairs[1:]]
        start = time.perf_counter()
        for w in workers:
            w.start()
        work(*pairs[0])  # in this thread: a single copy runs exactly as before
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return pairs[0][0].nbytes * repeats * threads / best


def _gather_bandwidth(dataset: tp.Any, batch: int, repeats: int) -> float:
    """Bytes/s of copying random brain windows from an in-RAM copy of the cached array into a reused batch buffer
    (best of 3): the bare gather a loader cannot beat, without baseline, scaling, clamping or features."""
    rec = dataset.recordings[0]
    brain = np.array(rec.brain.array)
    length = dataset.window.n_samples(rec.sample_rate)
    rng = np.random.default_rng(0)
    out = np.empty((batch, brain.shape[0], length), dtype=np.float32)
    out.fill(0)  # fault the pages in
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            for i, idx in enumerate(rng.integers(0, len(dataset), size=batch)):
                s0 = int(dataset._start[idx])
                out[i] = brain[:, s0:s0 + length]
        best = min(best, time.perf_counter() - start)
    return out.nbytes * repeats / best


def _drain(dataset: tp.Any, batch: int, n_batches: int, workers: int, kind: str = "threads",
           pool: tp.Any = None) -> dict[str, tp.Any]:
    """Draw ``n_batches`` shuffled batches with the training loader (``kind`` threads: bm2's BatchLoader, as the
    solver, with buffers from ``pool``, which the solver keeps for the whole run; processes: torch's DataLoader
    with worker processes, the loader bm2 used before)."""
    import psutil
    import torch

    from bm2.data import collate
    from bm2.data.loader import BatchLoader

    sampler = torch.utils.data.RandomSampler(dataset, num_samples=batch * n_batches,
                                             generator=torch.Generator().manual_seed(workers))
    loader: tp.Any
    if kind == "threads":
        loader = BatchLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                             pool=pool)
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate,
                                             num_workers=workers, drop_last=True)
    me = psutil.Process()
    start_rss = main_rss = me.memory_info().rss
    rss: dict[int, int] = {}
    uss: dict[int, int] = {}
    count = nbytes = n = 0
    start = time.perf_counter()
    first = None
    for batch_ in loader:
        if first is None:
            first = time.perf_counter() - start
        count += len(batch_["brain"])
        nbytes += sum(t.numel() * t.element_size() for t in batch_.values())
        n += 1
        main_rss = max(main_rss, me.memory_info().rss)
        for child in me.children():
            try:
                rss[child.pid] = max(rss.get(child.pid, 0), child.memory_info().rss)
                if n == max(n_batches // 2, 1):  # USS reads smaps: once, in the middle of the run
                    uss[child.pid] = child.memory_full_info().uss
            except psutil.Error:
                pass
    elapsed = time.perf_counter() - start
    pool = getattr(loader, "pool", None)
    return {"kind": kind, "workers": workers, "segments": count, "bytes": nbytes, "seconds": elapsed,
            "first_batch_s": first, "segments_per_s": count / elapsed, "mb_per_s": nbytes / MB / elapsed,
            "bytes_per_batch": nbytes // max(n, 1), "main_peak_rss_mib": main_rss / MIB,
            "main_rss_growth_mib": (main_rss - start_rss) / MIB,
            "pool_mib": None if pool is None else pool.nbytes / MIB,
            "pool_buffers": None if pool is None else pool.allocated,
            "pool_reused": None if pool is None else pool.reused,
            "worker_peak_rss_mib": [v / MIB for v in rss.values()],
            "worker_uss_mib": [v / MIB for v in uss.values()]}


def bench_dataloading(ws: Workspace) -> tuple[list[dict], dict]:
    """Throughput of the training loader from the cache vs a plain in-memory copy of the same bytes."""
    import torch

    from bm2.data import window_kernel
    from bm2.data.loader import BatchLoader, BufferPool

    s = ws.sizes
    start = time.perf_counter()
    datasets = _datasets(ws)
    prepare_s = time.perf_counter() - start
    train = datasets.train
    if len(train) < s.loader_batch:
        raise RuntimeError(f"only {len(train)} training windows for a batch of {s.loader_batch}")
    _log(f"datasets ready in {prepare_s:.1f}s: {len(train)} training windows")
    runs, all_runs = [], []
    most = max(s.loader_workers)
    probe = _drain(train, s.loader_batch, 1, 0)  # the bytes of one batch, for the plain copy
    copy_before = _plain_copy_bandwidth(probe["bytes_per_batch"], max(s.loader_batches // 2, 2))
    kernel, path = window_kernel.available(), window_kernel.status()  # path: in words, for the rows
    settings = [*(("threads", w) for w in s.loader_workers), ("processes", most)]
    if kernel:  # the same loader with the window kernel switched off: what the compiled kernel gains
        settings.append(("threads-torch", most))
    for kind, workers in settings:
        # one buffer pool for the repeats, as the solver keeps one for the whole run: the first repeat faults the
        # pages of its buffers in, later ones run in the steady state that training sees (the plain copy's
        # buffers are faulted in before it is timed, too)
        pool = BufferPool(max_per_shape=max(workers, 1) * BatchLoader.PREFETCH + 2) if kind != "processes" else None
        with mock.patch.dict(os.environ, {window_kernel.ENV: "0"} if kind == "threads-torch" else {}):
            repeats = [_drain(train, s.loader_batch, s.loader_batches, workers, kind.split("-")[0], pool)
                       for _ in range(s.loader_repeats)]
        for r in repeats:
            r["kind"] = kind
        all_runs.extend(repeats)
        runs.append(max(repeats, key=lambda r: r["segments_per_s"]))
        speeds = ", ".join(f"{r['segments_per_s']:.0f}" for r in repeats)
        _log(f"{'torch DataLoader' if kind == 'processes' else 'BatchLoader'} {workers} {kind}: {speeds} segments/s")
    nbytes = runs[0]["bytes_per_batch"]
    # the best of the copies measured before and after the loaders (the machine's load may change in between)
    copy_bw = max(copy_before, _plain_copy_bandwidth(nbytes, max(s.loader_batches // 2, 2)))
    gather_bw = _gather_bandwidth(train, s.loader_batch, max(s.loader_batches // 4, 1))
    copy_threads_bw = _plain_copy_bandwidth(nbytes, max(s.loader_batches // 2, 2), most)
    item = train[0]
    shape = tuple(item["brain"].shape)
    window_bytes = 4 * shape[0] * train.window.n_samples(train.recordings[0].sample_rate) * int(np.prod(shape[1:-1]))
    rows = []

    def name(r: dict) -> str:
        w = r["workers"]
        threads = f"{w} thread{'s' if w != 1 else ''}"
        if r["kind"] == "threads":
            return f"training loader (BatchLoader), {threads}"
        if r["kind"] == "threads-torch":
            return f"training loader (BatchLoader), {threads}, torch path ({window_kernel.ENV}=0)"
        return f"torch DataLoader (before), {w} worker process{'es' if w != 1 else ''}"

    def how(r: dict) -> str:
        if r["kind"] != "threads":
            return ""
        return "; " + path.split(";")[0]

    for r in runs:
        target = ("ratio", ">=", 0.5) if r["kind"] == "threads" and r["workers"] == most else None
        rows.append(row(
            "dataloading", f"{name(r)}, batch {s.loader_batch} x {shape[0]} ch x {shape[1]} samples: bandwidth "
            f"({r['segments_per_s']:,.0f} segments/s{how(r)})", r["mb_per_s"], "MB/s", baseline=copy_bw / MB,
            baseline_label="plain in-memory copy", ratio=r["mb_per_s"] * MB / copy_bw, ratio_label="of plain copy",
            target=target))
    loader = next(r for r in runs if r["kind"] == "threads" and r["workers"] == most)
    gather_wps = gather_bw / window_bytes
    rows.append(row("dataloading", f"{name(loader)} vs a bare gather of the same windows (numpy slices of an "
                    "in-RAM copy into a reused buffer; no baseline, scaling, clamping or features; 1 thread)",
                    loader["segments_per_s"], "segments/s", baseline=gather_wps, baseline_label="bare gather",
                    ratio=loader["segments_per_s"] / gather_wps, ratio_label="of a bare gather"))
    torch_path = next((r for r in runs if r["kind"] == "threads-torch"), None)
    if torch_path is not None:
        rows.append(row("dataloading", f"{name(loader)} vs the same loader's torch path ({window_kernel.ENV}=0)",
                        loader["segments_per_s"], "segments/s", baseline=torch_path["segments_per_s"],
                        baseline_label="torch path", ratio=loader["segments_per_s"] / torch_path["segments_per_s"],
                        ratio_label="of the torch path"))
    rows.append(row("dataloading", f"plain in-memory copy, {most} threads at once (each its own buffers) vs 1: "
                    "what more threads get from the memory", copy_threads_bw / MB, "MB/s", baseline=copy_bw / MB,
                    baseline_label="1 thread", ratio=copy_threads_bw / copy_bw, ratio_label="of 1 thread"))
    for r in runs:
        if r["kind"] == "threads-torch":
            continue
        if r["kind"] == "processes":
            rows.append(row("dataloading", f"{name(r)}: peak RSS per worker (USS "
                            f"{max(r['worker_uss_mib'] or [0]):.0f} MiB)", max(r["worker_peak_rss_mib"] or [0.0]),
                            "MiB"))
        elif r["workers"] == 0:
            rows.append(row("dataloading", f"{name(r)}: peak RSS of the main process (buffer pool "
                            f"{r['pool_mib']:.0f} MiB)", r["main_peak_rss_mib"], "MiB"))
        else:
            rows.append(row("dataloading", f"{name(r)}: memory per thread (buffer pool {r['pool_mib']:.0f} MiB in all, "
                            f"{r['pool_buffers']} buffers; main process peak RSS {r['main_peak_rss_mib']:.0f} MiB)",
                            r["pool_mib"] / r["workers"], "MiB"))
    details = {"train_windows": len(train), "item_brain_shape": list(shape),
               "item_features_shape": list(item["features"].shape), "prepare_seconds": prepare_s,
               "plain_copy_mb_per_s": copy_bw / MB, "plain_copy_before_mb_per_s": copy_before / MB,
               "ram_gather_mb_per_s": gather_bw / MB,
               "plain_copy_threads_mb_per_s": copy_threads_bw / MB,
               "pool": "one BufferPool per setting, shared by its repeats (the solver keeps one for the run)",
               "torch_threads": torch.get_num_threads(), "runs": [r for r in runs if r["kind"] == "threads"],
               "window_kernel": str(window_kernel.library_path()) if kernel else None, "window_kernel_status": path,
               "torch_path_runs": [r for r in runs if r["kind"] == "threads-torch"],
               "dataloader_processes": [r for r in runs if r["kind"] == "processes"], "all_runs": all_runs,
               "repeats": s.loader_repeats, "page_cache": "warm (the cache was just written)"}
    return rows, details


# --------------------------------------------------------------------------------------------- 2. training
def _model_kwargs(name: str) -> dict[str, tp.Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml"), resolve=True)
    assert isinstance(cfg, dict)
    return dict(cfg["simpleconv"])


def _time_steps(step: tp.Callable[[], None], device: str, s: Sizes) -> tuple[int, float, float]:
    """Run ``step`` after a warm-up (allocations, kernels: 2 steps on CUDA, 1 on CPU) for at least
    ``s.train_min_steps`` steps and ``s.train_min_seconds``; returns (steps, seconds, seconds of the warm-up: with
    torch.compile, the compilation), CUDA synchronised."""
    import torch

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    for _ in range(2 if device.startswith("cuda") else 1):
        step()
    sync()
    warmup = time.perf_counter() - start  # with torch.compile: the compilation
    steps, start = 0, time.perf_counter()
    while steps < s.train_min_steps or time.perf_counter() - start < s.train_min_seconds:
        step()
        sync()
        steps += 1
    return steps, time.perf_counter() - start, warmup


def _train_speed(config: str, device: str, s: Sizes, bf16: bool | None = None,
                 compiled: bool = False) -> dict[str, tp.Any]:
    import torch

    with torch.random.fork_rng(devices=[] if device == "cpu" else None):  # leave the caller's RNG alone
        torch.manual_seed(0)
        return _train_speed_seeded(config, device, s, bf16, compiled)


def _train_speed_seeded(config: str, device: str, s: Sizes, bf16: bool | None = None,
                        compiled: bool = False) -> dict[str, tp.Any]:
    import torch

    from bm2.losses import ClipLoss
    from bm2.models import build_model, count_parameters

    model = build_model("simpleconv", out_channels=s.train_features, n_subjects=s.train_subjects,
                        **_model_kwargs(config)).to(device)
    loss_fn = ClipLoss().to(device)
    optim = torch.optim.Adam(model.parameters(), lr=3e-4)
    b, c, t = s.train_batch, s.n_channels, s.train_times
    brain = torch.randn(b, c, t, device=device)
    positions = torch.rand(b, c, 2, device=device)
    mask = torch.ones(b, c, dtype=torch.bool, device=device)
    subjects = torch.randint(0, s.train_subjects, (b,), device=device)
    features = torch.randn(b, s.train_features, t, device=device)
    from bm2.utils.precision import autocast, autocast_dtype

    # as the solver: bf16 autocast on CUDA by default; on CPU only when asked (optim.amp_cpu) and native
    dtype = autocast_dtype(device, cuda=bf16 is not False, cpu=bool(bf16))

    forward = torch.compile(model) if compiled else model  # as the solver's optim.compile

    def step() -> None:
        with autocast(device, dtype):
            est = forward(brain, subjects, positions, mask)
        loss = loss_fn(est.float(), features)  # the loss in float32, as in the solver
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    model.train()
    with warnings.catch_warnings():
        # dynamo reads .grad of non-leaf tensors while tracing (torch's own warning; an error under pytest's filters)
        warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning)
        steps, elapsed, first = _time_steps(step, device, s)
    return {"config": config, "device": device, "parameters": count_parameters(model), "steps": steps,
            "seconds_per_step": elapsed / steps, "samples_per_s": steps * b / elapsed,
            "precision": "bf16" if dtype is not None else "fp32", "compiled": compiled,
            "first_step_s": first}


# Training steps of the newer models at their paper sizes: (model, objective, objective kwargs, batch maker)
def _classifier_batch(b: int, c: int, t: int, n_classes: int, device: str) -> dict[str, tp.Any]:
    import torch

    return {"brain": torch.randn(b, c, t, device=device), "mask": torch.ones(b, c, dtype=torch.bool, device=device),
            "subject_index": torch.zeros(b, dtype=torch.long, device=device),
            "label": torch.arange(b, device=device) % n_classes}  # every class of the batch twice at least


def _model_steps(s: Sizes) -> list[dict[str, tp.Any]]:
    """The new models' training steps at their paper sizes (bm2/models/demega.py, duin.py, duin_vq.py)."""
    return [
        {"label": "DeMEGa", "model": "demega", "kwargs": {"out_channels": 39, "n_channels": 306, "n_times": 125},
         "loss": "demega", "batch": s.demega_batch, "shape": (306, 125), "classes": 39,
         "optim": "AdamW lr 1e-4 (recipe=demega; batch 512 there)"},
        {"label": "Du-IN classifier", "model": "duin",
         "kwargs": {"out_channels": 61, "n_channels": s.duin_channels, "n_times": 3000}, "loss": "cross_entropy",
         "batch": s.duin_batch, "shape": (s.duin_channels, 3000), "classes": 61,
         "optim": "AdamW (recipe=duin_classifier)"},
        {"label": "Du-IN VQ-VAE", "model": "duin_vqvae",
         "kwargs": {"out_channels": 1, "n_channels": s.duin_channels, "n_times": 3000}, "loss": "duin_vqvae",
         "batch": s.duin_batch, "shape": (s.duin_channels, 3000), "classes": 1,
         "optim": "AdamW (recipe=duin_vqvae)"},
        *({"label": f"ECoG {label} decoder", "ecog": name, "loss": "mse", "batch": s.ecog_batch, "shape": (64, 144),
           "optim": "Adam lr 2e-3, betas (0, 0.99) (Neural Speech Decoding)"}
          for name, label in (("resnet", "3-D ResNet"), ("lstm", "LSTM"), ("swin", "3-D Swin"))),
    ]


def _ecog_step(spec: dict[str, tp.Any], device: str) -> tuple[tp.Any, tp.Callable[[tp.Any], tp.Any], tp.Any]:
    """An ECoG decoder (bm2/models/ecog_decoders.py, paper size, non-causal) with an MSE on its features and
    Adam(betas (0, 0.99)): (model, loss of a batch, optimiser). The batch is ECoG [B, 64, 144] and target
    features [B, D, 128]."""
    import torch

    from bm2.models.ecog_decoders import build_ecog_decoder

    model = build_ecog_decoder(spec["ecog"]).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=2e-3, betas=(0.0, 0.99))
    b, (c, t) = spec["batch"], spec["shape"]
    ecog = torch.randn(b, c, t, device=device)
    with torch.no_grad():
        target = torch.randn_like(model.eval()(ecog[:1])).expand(b, -1, -1).contiguous()

    def loss(dtype: tp.Any) -> tp.Any:
        from bm2.utils.precision import autocast

        with autocast(device, dtype):
            out = model(ecog)
        return torch.nn.functional.mse_loss(out.float(), target)  # the loss in float32, as in the solver

    return model, loss, optim


def _model_step_speed(spec: dict[str, tp.Any], device: str, s: Sizes, bf16: bool) -> dict[str, tp.Any]:
    """Samples/s of run_model + objective + backward + AdamW step of ``spec``, fp32 or bf16 autocast."""
    import torch

    from bm2.models import build_model, count_parameters
    from bm2.objectives import build_objective
    from bm2.tasks import run_model
    from bm2.utils.precision import autocast, autocast_dtype

    with torch.random.fork_rng(devices=[] if device == "cpu" else None):
        torch.manual_seed(0)
        dtype = autocast_dtype(device, cuda=bf16, cpu=bf16)
        if "ecog" in spec:
            model, ecog_loss, optim = _ecog_step(spec, device)
        else:
            model = build_model(spec["model"], n_subjects=1, **spec["kwargs"]).to(device)
            objective = build_objective(spec["loss"]).to(device)
            optim = torch.optim.AdamW([*model.parameters(), *objective.parameters()], lr=1e-4)
            batch = _classifier_batch(spec["batch"], *spec["shape"], spec["classes"], device)

        def step() -> None:
            if "ecog" in spec:
                loss = ecog_loss(dtype)
            else:
                with autocast(device, dtype):
                    outputs = run_model(model, batch, device)
                loss = objective.total(objective(batch, outputs))  # objectives compute in float32
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()

        model.train()
        steps, elapsed, _ = _time_steps(step, device, s)  # the warm-up step also runs the k-means start
    return {"config": spec.get("model", spec.get("ecog")), "device": device, "parameters": count_parameters(model),
            "steps": steps,
            "batch": spec["batch"], "seconds_per_step": elapsed / steps,
            "samples_per_s": steps * spec["batch"] / elapsed,
            "precision": "bf16" if dtype is not None else "fp32"}


def _model_rows(s: Sizes, device: str, where: str, runs: list[dict]) -> list[dict]:
    """One row per new model: bf16 autocast vs fp32 where bf16 is native (CUDA, or a CPU with bf16), else fp32."""
    from bm2.utils.precision import autocast_dtype

    mixed = autocast_dtype(device, cuda=True, cpu=True) is not None
    rows = []
    for spec in _model_steps(s):
        # fp32 then bf16, twice alternated, best of each (as the SimpleConv row)
        fp32, bf16 = [], []
        for _ in range(s.model_repeats if mixed else 1):
            fp32.append(_model_step_speed(spec, device, s, bf16=False))
            if mixed:
                bf16.append(_model_step_speed(spec, device, s, bf16=True))
        runs.extend(fp32 + bf16)
        best32 = max(r["samples_per_s"] for r in fp32)
        params = fp32[0]["parameters"] / 1e6
        c, t = spec["shape"]
        what = (f"train step {spec['label']} paper size ({params:.2f} M params, loss {spec['loss']}), batch "
                f"{spec['batch']} x {c} ch x {t} {'frames' if 'ecog' in spec else 'samples'}, {where}")
        if mixed:
            best16 = max(r["samples_per_s"] for r in bf16)
            _log(f"train step {spec['label']} on {device}: fp32 {best32:.1f}, bf16 {best16:.1f} samples/s")
            rows.append(row("training", f"{what}: bf16 autocast vs fp32", best16, "samples/s", baseline=best32,
                            baseline_label="fp32", ratio=best16 / best32, ratio_label="faster"))
        else:
            _log(f"train step {spec['label']} on {device}: fp32 {best32:.1f} samples/s (no native bf16)")
            rows.append(row("training", f"{what}, fp32 (no native bf16)", best32, "samples/s"))
    return rows


def bench_training(ws: Workspace) -> tuple[list[dict], dict]:
    """Samples/s of a full training step of SimpleConv (small default and paper size)."""
    import torch

    s = ws.sizes
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows, runs = [], []
    for device in devices:
        where = f"cpu, {torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
        for config in ("simpleconv", "simpleconv_paper"):
            r = _train_speed(config, device, s)
            runs.append(r)
            _log(f"train step {config} on {device}: {r['samples_per_s']:.1f} samples/s")
            size = "small default" if config == "simpleconv" else "paper size"
            rows.append(row("training", f"train step SimpleConv {size} ({r['parameters'] / 1e6:.2f} M params), "
                            f"batch {s.train_batch} x {s.n_channels} ch x {s.train_times} samples, {where}, "
                            f"{r['precision']}", r["samples_per_s"], "samples/s"))
        if device == "cpu" and s.compile_config is None:
            _log("torch.compile row skipped (--quick)")
        if device == "cpu" and s.compile_config is not None:
            # torch.compile (optim.compile), fp32: eager then compiled, twice alternated, best of each; the first
            # step's time is the compilation, from an empty inductor cache the first time (a fresh machine), from
            # the cache the second
            before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(ws.root / "inductor")
            try:
                pairs = [(_train_speed(s.compile_config, device, s, bf16=False),
                          _train_speed(s.compile_config, device, s, bf16=False, compiled=True))
                         for _ in range(s.model_repeats)]
            finally:
                if before is None:
                    os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
                else:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
            cold, cached = pairs[0][1]["first_step_s"], pairs[-1][1]["first_step_s"]
            # (the second compilation runs in this process, where inductor's generated code is already loaded)
            from_cache = f", {cached:.0f} s from inductor's cache in the same process" if len(pairs) > 1 else ""
            runs.extend(r for pair in pairs for r in pair)
            eager_best = max(e["samples_per_s"] for e, _ in pairs)
            comp_best = max(c["samples_per_s"] for _, c in pairs)
            size = "paper size" if s.compile_config == "simpleconv_paper" else "small default"
            _log(f"{size} train step on {device}: eager {eager_best:.1f}, torch.compile {comp_best:.1f} "
                 f"samples/s (first compiled step {cold:.0f} s{from_cache})")
            rows.append(row("training", f"train step SimpleConv {size}, torch.compile (optim.compile=true; the "
                            f"first step compiles: {cold:.0f} s{from_cache}) vs eager, fp32, {where}", comp_best,
                            "samples/s", baseline=eager_best, baseline_label="eager", ratio=comp_best / eager_best,
                            ratio_label="faster"))
        if device == "cpu":
            from bm2.utils.precision import cpu_has_native_bf16

            if not cpu_has_native_bf16():
                _log("this CPU has no native bf16: the mixed-precision row is skipped (fp32 only)")
                continue
            # fp32 then bf16 on the same batch, twice alternated, best of each: the ratio of one run
            fp32 = [_train_speed("simpleconv_paper", device, s, bf16=False) for _ in range(2)]
            bf16 = [_train_speed("simpleconv_paper", device, s, bf16=True) for _ in range(2)]
            runs.extend(fp32 + bf16)
            best32 = max(r["samples_per_s"] for r in fp32)
            best16 = max(r["samples_per_s"] for r in bf16)
            _log(f"paper-size train step on cpu: fp32 {best32:.1f}, bf16 autocast {best16:.1f} samples/s")
            rows.append(row("training", f"train step SimpleConv paper size, bf16 autocast (optim.amp_cpu=true) vs "
                            f"fp32 eager, {where}", best16, "samples/s", baseline=best32, baseline_label="fp32",
                            ratio=best16 / best32, ratio_label="faster", target=("ratio", ">=", 1.5)))
    for device in devices:
        where = f"cpu, {torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
        rows.extend(_model_rows(s, device, where, runs))
    details = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "devices": devices,
               "runs": runs, "loss": "ClipLoss", "optimizer": "Adam lr 3e-4",
               "out_channels": s.train_features, "n_subjects": s.train_subjects}
    return rows, details


# --------------------------------------------------------------------------------------------- 4. evaluation
def _eval_problem(s: Sizes) -> tuple[tp.Any, tp.Any]:
    import pandas as pd
    import torch

    rng = np.random.default_rng(0)
    cand_words = rng.permutation(np.arange(s.eval_candidates) % s.eval_words)
    target = np.concatenate([np.arange(s.eval_candidates),
                             rng.integers(0, s.eval_candidates, s.eval_segments - s.eval_candidates)])
    target = rng.permutation(target)
    segments = pd.DataFrame({"segment_uid": [f"seg{t}" for t in target],
                             "word": [f"w{cand_words[t]}" for t in target],
                             "subject": [f"s{i % 8}" for i in range(s.eval_segments)], "study": "bench"})
    scores = torch.from_numpy(rng.standard_normal((s.eval_segments, s.eval_candidates), dtype=np.float32))
    return scores, segments


def _best_time(fn: tp.Callable[[], tp.Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls (the least disturbed by other processes on the machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(min(times))


def bench_evaluation(ws: Workspace) -> tuple[list[dict], dict]:
    """Seconds of segment- and word-level retrieval metrics on random scores."""
    import torch

    from bm2.evaluation import candidate_table, retrieval_from_scores
    from bm2.metrics import target_ranks

    s = ws.sizes
    scores, segments = _eval_problem(s)
    candidates, target = candidate_table(segments)
    words = sorted(set(candidates.word))
    index = {w: i for i, w in enumerate(words)}
    cand_words = torch.tensor([index[w] for w in candidates.word])
    target_words = torch.tensor([index[w] for w in segments.word])
    ranks_s = _best_time(lambda: target_ranks(scores, torch.tensor(target), cand_words, target_words,
                                                len(words)), s.eval_repeats)
    # n_boot=1: one bootstrap resample per metric, i.e. the bootstrap left out (its cost is timed below)
    no_boot_s = _best_time(lambda: retrieval_from_scores(scores, segments, n_boot=1), s.eval_repeats)
    start = time.perf_counter()
    result = retrieval_from_scores(scores, segments, n_boot=1000)
    with_boot_s = time.perf_counter() - start
    shape = f"{s.eval_segments:,} segments x {len(candidates):,} candidates, {len(words)} words"
    _log(f"evaluation {shape}: {no_boot_s:.2f}s without bootstrap, {with_boot_s:.2f}s with")
    rows = [
        row("evaluation", f"retrieval_from_scores, {shape}, top-1/5/10 segment + word, no bootstrap", no_boot_s,
            "s", target=("value", "<", 2.0)),
        row("evaluation", "of which target_ranks (segment + word ranks)", ranks_s, "s"),
        row("evaluation", "bootstrap CIs (1000 resamples x 6 metrics), reported separately",
            max(with_boot_s - no_boot_s, 1e-6), "s"),
    ]
    details = {"segments": s.eval_segments, "candidates": len(candidates), "words": len(words),
               "repeats": s.eval_repeats, "with_bootstrap_s": with_boot_s,
               "top10_segment": result.metrics["top10_segment"], "chance_top10_segment":
               result.metrics["chance_top10_segment"]}
    return rows, details


# --------------------------------------------------------------------------------------------- 5. cache reuse
def _dora_run(env: dict[str, str], overrides: tp.Sequence[str], timeout: float = 900.0) -> dict[str, tp.Any]:
    """Run ``dora run OVERRIDES``; seconds from launch to each log line of interest (as they arrive)."""
    dora = str(Path(sys.executable).parent / "dora")
    proc = subprocess.Popen([dora, "run", *overrides], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    marks: dict[str, float] = {}
    patterns = {"xp": re.compile(r"XP \w+ in "), "preparing": re.compile(r"preparing \d+ recordings"),
                "epoch1": re.compile(r"epoch 1 \|"), "results": re.compile(r"Test results of XP")}
    tail: list[str] = []
    start = time.perf_counter()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            now = time.perf_counter() - start
            tail = (tail + [line])[-60:]
            for name, pattern in patterns.items():
                if name not in marks and pattern.search(line):
                    marks[name] = now
            if now > timeout:
                raise TimeoutError(f"dora run took more than {timeout}s")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    total = time.perf_counter() - start
    missing = [k for k in patterns if k not in marks]
    if proc.returncode != 0 or missing:
        raise RuntimeError(f"dora run {' '.join(overrides)} failed (rc {proc.returncode}, missing log lines "
                           f"{missing}):\n{''.join(tail)}")
    return {"total_s": total, **{f"{k}_s": v for k, v in marks.items()}}


def _build_datasets_seconds(overrides: tp.Sequence[str], data: Path, cache: Path) -> float:
    """Seconds of :func:`bm2.builders.build_all_datasets` (in this process) for the XP of ``overrides``."""
    from hydra import compose, initialize_config_dir

    from bm2.builders import build_all_datasets

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.data={data}", f"paths.cache={cache}"])
    start = time.perf_counter()
    build_all_datasets(cfg)
    return time.perf_counter() - start


def bench_cache_reuse(ws: Workspace) -> tuple[list[dict], dict]:
    """Start of ``dora run``: first (generation + preprocessing) vs warm (all cached); and the data
    preparation alone (:func:`~bm2.builders.build_all_datasets`) with an empty cache vs a warm one."""
    s = ws.sizes
    base = ws.root / "dora"
    env = dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"), BM2_NO_PROGRESS="1",
               PYTHONUNBUFFERED="1")
    runs = {}
    for name in ("first", "warm"):
        env["BM2_XP_DIR"] = str(base / f"xps_{name}")
        runs[name] = _dora_run(env, s.dora_overrides)
        _log(f"dora run ({name}): epoch 1 after {runs[name]['epoch1_s']:.1f}s, "
             f"total {runs[name]['total_s']:.1f}s")
    first, warm = runs["first"], runs["warm"]
    # The same data preparation in-process, without the interpreter start and the epoch: study on disk,
    # cache empty, then the same cache again.
    cold_build = _build_datasets_seconds(s.dora_overrides, base / "data", base / "cache_inprocess")
    warm_build = _build_datasets_seconds(s.dora_overrides, base / "data", base / "cache_inprocess")
    _log(f"build_all_datasets: {cold_build:.1f}s with an empty cache, {warm_build:.2f}s warm")

    def prep(r: dict) -> float:  # 'preparing N recordings' -> end of epoch 1
        return r["epoch1_s"] - r["preparing_s"]

    rows = [
        row("cache_reuse", "dora run, launch -> end of epoch 1: warm (all cached) vs first run (study generated "
            "+ preprocessed)", warm["epoch1_s"], "s", baseline=first["epoch1_s"], baseline_label="first run",
            ratio=first["epoch1_s"] / warm["epoch1_s"], ratio_label="faster", target=("ratio", ">=", 10.0)),
        row("cache_reuse", "dora run, launch -> end of epoch 1, warm (all cached): seconds", warm["epoch1_s"], "s",
            target=("value", "<", 3.0)),
        row("cache_reuse", "dora run, 'preparing N recordings' -> end of epoch 1 (preprocessing, features, "
            "scalers, one short epoch): warm vs first run", prep(warm), "s", baseline=prep(first),
            baseline_label="first run", ratio=prep(first) / prep(warm), ratio_label="faster",
            target=("ratio", ">=", 10.0)),
        row("cache_reuse", "build_all_datasets in-process (study on disk): warm cache vs empty cache", warm_build,
            "s", baseline=cold_build, baseline_label="empty cache", ratio=cold_build / warm_build,
            ratio_label="faster", target=("ratio", ">=", 10.0)),
    ]
    details = {"overrides": list(s.dora_overrides), "runs": runs,
               "build_all_datasets_s": {"empty_cache": cold_build, "warm": warm_build},
               "note": "dora times are taken when each log line reaches the benchmark (stdout, unbuffered); "
                       "'end of epoch 1' includes one short training epoch and the validation pass"}
    shutil.rmtree(base, ignore_errors=True)
    return rows, details


def bench_superlet(ws: Workspace) -> tuple[list[dict], dict]:
    """Superlet throughput (channel-seconds per second) against mne's ``tfr_array_morlet`` on the same data."""
    import mne

    from bm2.superlet import SD_CYCLES, superlet

    s = ws.sizes
    fs, c1, order = 256.0, 3.0, (1.0, 30.0)
    foi = np.linspace(2.0, 100.0, 50)
    x = np.random.default_rng(0).standard_normal((s.superlet_channels, int(s.superlet_seconds * fs)))
    n_cycles = c1 * 2 * math.pi / SD_CYCLES  # mne's sigma_t = n_cycles / (2 pi f) = the superlet's c1 / (5 f)
    repeats = 1 if s.superlet_seconds < 10 else 2

    def ours() -> None:
        superlet(x, fs, foi, c1, order)

    def theirs() -> None:
        mne.time_frequency.tfr_array_morlet(x[None], fs, foi, n_cycles=n_cycles, output="power", zero_mean=False,
                                            verbose="error")

    ours_s, theirs_s = _best_time(ours, repeats), _best_time(theirs, repeats)
    channel_seconds = s.superlet_channels * s.superlet_seconds
    n_wavelets = int(sum(np.ceil(np.linspace(*order, len(foi)))))
    rows = [row("superlet", f"superlet FASLT (c1 3, orders 1-30, {len(foi)} freqs 2-100 Hz, 256 Hz): "
                            "throughput", channel_seconds / ours_s, "ch*s/s",
                baseline=channel_seconds / theirs_s, baseline_label="mne tfr_array_morlet, same freqs",
                ratio=theirs_s / ours_s, ratio_label="of mne's speed")]
    details = {"channels": s.superlet_channels, "seconds_per_channel": s.superlet_seconds, "fs": fs,
               "bm2_seconds": ours_s, "mne_seconds": theirs_s, "bm2_wavelets": n_wavelets,
               "mne_wavelets": len(foi), "mne_n_cycles": n_cycles}
    return rows, details


# --------------------------------------------------------------------------------------------- 7. LibriBrain
def _h5_slice_read(h5_files: dict[str, Path], segments: tp.Any, rows: np.ndarray, length: int) -> float:
    """Seconds to read the windows ``rows`` of ``segments`` as plain h5 slices of their runs' files (by uid)."""
    import h5py

    files = {uid: h5py.File(path, "r") for uid, path in h5_files.items()}
    uids, starts = segments.recording_uid.to_numpy(), segments.start.to_numpy()
    start = time.perf_counter()
    try:
        for i in rows:
            first = int(starts[int(i)])
            np.asarray(files[uids[int(i)]]["data"][:, first:first + length], dtype=np.float32)
    finally:
        for f in files.values():
            f.close()
    return time.perf_counter() - start


def bench_libribrain(ws: Workspace) -> tuple[list[dict], dict]:
    """The phoneme-window dataset with grouping K (windows averaged / s) vs a plain h5 slice read of the windows."""
    import torch
    from hydra import compose, initialize_config_dir

    from bm2.builders import build_all_datasets, select_recordings
    from bm2.data.loader import BatchLoader

    s = ws.sizes
    data, cache = ws.root / "libri_data", ws.root / "libri_cache"
    overrides = ["recipe=libribrain_phoneme", f"studies.libribrain_synthetic.n_train_runs={s.libri_train_runs}",
                 f"studies.libribrain_synthetic.run_seconds={s.libri_run_seconds}", f"dset.grouping.k={s.libri_k}",
                 "dset.grouping.dynamic=true", f"paths.data={data}", f"paths.cache={cache}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    start = time.perf_counter()
    datasets = build_all_datasets(cfg)
    prepare_s = time.perf_counter() - start
    train = datasets.train
    base = train.base
    train.set_epoch(1)
    length = int(base.window.n_samples(base.recordings[0].sample_rate))
    # the solver's training loader (Solver._loader): BatchLoader, the recipe's batch size and workers
    batch_size, workers = int(cfg.optim.batch_size), int(cfg.num_workers)
    loader = BatchLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                         drop_last=len(train) >= 2 * batch_size, num_workers=workers)
    best, n_windows = math.inf, 0
    for _ in range(2):  # the first pass also faults the cache pages in
        t0 = time.perf_counter()
        n_windows = 0
        for batch in loader:
            assert batch["brain"].shape[-1] == length
            n_windows += sum(len(train.groups[int(i)]) for i in batch["index"])  # drop_last: the groups drawn
        best = min(best, time.perf_counter() - t0)
    grouped_wps = n_windows / best
    rows_ = np.concatenate(train.groups)
    h5_files = {r.uid: r.h5 for r in select_recordings(cfg)}  # the runs' serialised h5 files
    h5_s = min(_h5_slice_read(h5_files, base.segments, rows_, length) for _ in range(2))
    h5_wps = len(rows_) / h5_s
    rows = [row("libribrain", f"LibriBrain phoneme windows, grouping K={s.libri_k} (306 ch x {length} samples, "
                f"{len(train)} groups of {n_windows} windows): windows averaged / s", grouped_wps, "windows/s",
                baseline=h5_wps, baseline_label="plain h5 slice read", ratio=grouped_wps / h5_wps,
                ratio_label="of h5 slice read", target=("ratio", ">=", 1.0))]
    details = {"prepare_seconds": prepare_s, "k": s.libri_k, "groups": len(train), "windows": n_windows,
               "train_windows": len(base), "grouped_seconds": best, "h5_seconds": h5_s,
               "grouped_windows_per_s": grouped_wps, "h5_windows_per_s": h5_wps,
               "h5_read": "h5py File(...)['data'][:, start:start + length] per window, files kept open",
               "grouped_read": f"the solver's loader (BatchLoader, shuffled, batch {batch_size}, {workers} threads) "
                               "over the GroupedDataset of the cached, standardised SegmentDataset"}
    return rows, details


BENCHES: dict[str, tp.Callable[[Workspace], tuple[list[dict], dict]]] = {
    "preprocessing": bench_preprocessing, "dataloading": bench_dataloading, "training": bench_training,
    "evaluation": bench_evaluation, "cache_reuse": bench_cache_reuse, "superlet": bench_superlet,
    "libribrain": bench_libribrain}


def _loader_vs_training(details: dict[str, dict]) -> dict[str, tp.Any] | None:
    """DataLoader segments/s (most workers) against the small model's training samples/s on CPU."""
    if "dataloading" not in details or "training" not in details:
        return None
    loader = max(details["dataloading"]["runs"], key=lambda r: r["workers"])
    small = next(r for r in details["training"]["runs"] if r["config"] == "simpleconv" and r["device"] == "cpu")
    return row("dataloading", f"training loader {loader['workers']} threads: segments/s vs small-model training "
               "samples/s (cpu)", loader["segments_per_s"], "samples/s", baseline=small["samples_per_s"],
               baseline_label="small model train step", ratio=loader["segments_per_s"] / small["samples_per_s"],
               ratio_label="of consumption", target=("ratio", ">=", 10.0))


def environment() -> dict[str, tp.Any]:
    """Machine and library versions."""
    import mne
    import psutil
    import scipy
    import torch

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "memory_gib": psutil.virtual_memory().total / 2**30, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "numpy": np.__version__, "scipy": scipy.__version__, "mne": mne.__version__}


def _write(out: Path, quick: bool, only: tp.Sequence[str], sizes: Sizes, rows: list[dict],
           details: dict[str, dict], seconds: dict[str, float], load: dict[str, list[float]], started: float,
           done: bool) -> tuple[dict[str, tp.Any], str]:
    """Write ``out/bench.json`` and ``out/bench.md`` from the sections measured so far (``done`` False: after each
    section, so that a run stopped half-way keeps what it measured); returns the JSON content and the text."""
    rows = sorted(rows, key=lambda r: SECTIONS.index(r["section"]))  # stable: keeps the order inside each section
    if quick:  # the targets are for the full sizes: tiny batches and studies cannot meet them, so none is judged
        rows = [{**r, "met": None} for r in rows]
    result: dict[str, tp.Any] = {
        "quick": quick, "complete": done, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "environment": environment(), "sizes": dataclasses.asdict(sizes), "rows": rows, "details": details,
        "section_seconds": seconds, "load_average_1min": load, "total_seconds": time.perf_counter() - started}
    env = result["environment"]
    sections = "every section" if set(only) >= set(SECTIONS) else "sections " + ", ".join(s for s in SECTIONS
                                                                                        if s in only)
    header = (f"bm2 benchmark ({'quick' if quick else 'full'} sizes, {sections}), {result['date']}: "
              f"{env['cpu_count']} CPU cores, torch {env['torch']} ({env['torch_threads']} threads), "
              f"GPU: {env['gpu'] or 'none'}; {result['total_seconds']:.0f} s in all; 1-min load average "
              f"{max((max(v) for v in load.values()), default=0):.1f} at most"
              + ("; quick sizes: a check that the measures run, targets not judged" if quick else "")
              + ("" if done else f"; INCOMPLETE: stopped after {', '.join(seconds) or 'no section'}"))
    text = f"{header}\n\n{markdown(rows)}"
    (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench.md").write_text(text + "\n")
    return result, text


def run(out: Path, quick: bool = False, only: tp.Sequence[str] = SECTIONS, workdir: Path | None = None,
        keep: bool = False) -> dict[str, tp.Any]:
    """Run the benchmarks, write ``out/bench.json`` and ``out/bench.md`` (again after each section, marked
    incomplete until the end); returns the JSON content."""
    sizes = QUICK if quick else FULL
    out.mkdir(parents=True, exist_ok=True)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bm2-bench-", dir=workdir))
    ws = Workspace(root, sizes)
    rows: list[dict] = []
    details: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    load: dict[str, list[float]] = {}
    started = time.perf_counter()
    bm2_logger = logging.getLogger("bm2")
    level = bm2_logger.level
    bm2_logger.setLevel(logging.ERROR)  # e.g. "split 'valid' is empty" of the single benchmark recording
    try:
        for name in SECTIONS:
            if name not in only:
                continue
            _log(f"--- {name}")
            start = time.perf_counter()
            before = os.getloadavg()[0]
            section_rows, details[name] = BENCHES[name](ws)
            seconds[name] = time.perf_counter() - start
            load[name] = [before, os.getloadavg()[0]]  # other processes on the machine skew timings
            rows.extend(section_rows)
            if name == "training":
                extra = _loader_vs_training(details)
                if extra is not None:
                    rows.append(extra)
            _write(out, quick, only, sizes, rows, details, seconds, load, started, done=False)
    finally:
        bm2_logger.setLevel(level)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    result, text = _write(out, quick, only, sizes, rows, details, seconds, load, started, done=True)
    print(text, flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m scripts.bench [--out DIR] [--quick] [--only SECTION ...]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="folder of bench.json / bench.md")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (1-2 minutes on an idle 2-core "
                        "machine): checks that the measures run (all but torch.compile's); targets are not judged")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="parent of the temporary folder (FIF file, cache; default: the system's temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    import signal

    # `timeout` / `kill` send SIGTERM: exit through Python so that run()'s cleanup removes the temporary folder
    # (a 0.5 GB FIF file) and the sections measured so far stay written
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run(args.out, args.quick, args.only, args.workdir, args.keep)


if __name__ == "__main__":
    main()
