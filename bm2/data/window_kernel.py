"""The compiled window kernel of the training loader: normalised brain windows in one pass per window.

:meth:`bm2.data.dataset.SegmentDataset._brains_into` normalises each window with torch: a subtracting copy out of
the memory-mapped recording, then the scale and the clamp in place, plus a copy and a sum for the baseline; the
loader reached 0.29x of a plain memory copy that way on the 2-core benchmark machine (README, Performance). This C
kernel (``bm2/data/_windows.c``, built by ``pip install`` as the plain shared library ``bm2.data._windows`` and
called through ctypes, which releases the GIL) reads each window once and writes it once, doing the baseline mean,
centre, scale and clamp while a row is in registers. It is our own code because no library offers this fused
gather; it is optional: without a C compiler at install time (or with ``BM2_WINDOW_KERNEL=0``) the torch path
runs, with the same numbers bit for bit (``tests/data/test_window_kernel.py``).

On x86-64 Linux with GCC, one build carries AVX-512, AVX2 and baseline versions (``target_clones``); the loader
picks the CPU's best when the library loads.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

ENV = "BM2_WINDOW_KERNEL"
"""Set to ``0`` to use the torch path (e.g. to compare both in a benchmark)."""

ABI = 1
"""The interface version that ``bm2_windows_abi()`` of the library must return (``_windows.c``)."""

_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None
_TRIED = False


def library_path() -> Path | None:
    """The built library next to this module (``_windows<EXTENSION_SUFFIX>``), or None when it was not built."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_windows{suffix}"
        if path.exists():
            return path
    return None


def _load() -> ctypes.CDLL | None:
    global _LIB, _TRIED
    if _TRIED:  # loaded (or found missing) once per process; every batch asks
        return _LIB
    with _LOCK:
        if not _TRIED:
            try:
                _LIB = _open(library_path())
            finally:
                _TRIED = True  # after _LIB: a thread on the unlocked path never sees "tried" without the library
        return _LIB


def _open(path: Path | None) -> ctypes.CDLL | None:
    if path is None:
        logger.debug("window kernel not built (no C compiler at install?): the loader uses torch")
        return None
    try:
        lib = ctypes.CDLL(str(path))
        abi = lib.bm2_windows_abi() if hasattr(lib, "bm2_windows_abi") else 0
    except OSError as exc:  # a library built for another machine or Python
        logger.warning("window kernel %s cannot be loaded (%s): the loader uses torch; reinstall bm2 "
                       "(pip install -e .) to rebuild it", path, exc)
        return None
    if abi != ABI:
        logger.warning("window kernel %s is from another bm2 version (interface %s, expected %s): the loader uses "
                       "torch; reinstall bm2 (make install or pip install -e .) to rebuild it", path, abi, ABI)
        return None
    fn = lib.bm2_normalised_windows
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, i64, ptr, ptr, i64, i64, i64, i64, ptr, ptr, ctypes.c_int32, ctypes.c_int32,
                   ctypes.c_float, ptr]
    fn.restype = i64
    return lib


def available() -> bool:
    """Whether the loader uses the compiled kernel: it is built and loads, and ``BM2_WINDOW_KERNEL`` is not 0."""
    return os.environ.get(ENV, "1") != "0" and _load() is not None


def status() -> str:
    """Which path the loader takes, in words (logged by the solver and printed by ``make install``)."""
    if os.environ.get(ENV, "1") == "0":
        return f"torch path ({ENV}=0)"
    if _load() is not None:
        return "compiled window kernel"
    if library_path() is None:
        return ("torch path: the window kernel is not built (no C compiler at install?); install one (e.g. gcc) "
                "and rerun `make install` or `pip install -e .` for about twice the loading speed")
    return "torch path: the window kernel does not load (see the warning above); rerun `pip install -e .`"


def normalised_windows(array: np.ndarray, starts: np.ndarray, dest: np.ndarray, first: int, n_out: int,
                       n_pre: int, centre: np.ndarray, out: torch.Tensor, *, multiply: np.ndarray | None = None,
                       divide: np.ndarray | None = None, max_scale: float | None = None) -> bool:
    """Write normalised windows of ``array`` into rows ``dest`` of ``out``; False (nothing written) where the kernel
    does not apply, so that the caller runs the torch path.

    Window ``w`` is ``array[..., s + first : s + first + n_out]`` with ``s = starts[w]``, minus its shift (the
    baseline mean over ``array[..., s : s + n_pre]`` when ``n_pre > 0``, rounded to float32, plus ``centre``), times
    ``multiply`` or divided by ``divide``, clamped to ``[-max_scale, max_scale]``; written to ``out[dest[w]]``. These
    are the float32 operations of the torch path, in its order (the baseline sum is numpy's pairwise sum), so the
    results are the same bit for bit.

    Args:
        array: the recording, float32 ``(C, [F,] T)`` with contiguous rows (a memory map of the cache).
        starts, dest: int ``(W,)`` window starts (samples) and rows of ``out``; windows sorted by start read
            overlapping samples from the CPU cache.
        centre: float32 ``(C, [F])``: the scaler's centre, the features' mean, or zeros.
        multiply, divide: float32 ``(C, [F])`` (at most one): a reciprocal scale or a standard deviation.
        out: float32 ``(B, C, [F,] n_out)``, C-contiguous, on the CPU.

    Returns:
        True when written; False when the kernel is unavailable or the arrays are not in the layout above.

    Raises:
        IndexError: a window reaches outside the recording, or a row of ``dest`` outside ``out`` (nothing written).
        ValueError: ``starts`` and ``dest`` differ in length, or both ``multiply`` and ``divide`` are given.
    """
    if multiply is not None and divide is not None:
        raise ValueError("give multiply or divide, not both")
    lib = _load() if os.environ.get(ENV, "1") != "0" else None
    if lib is None:
        return False
    shape = array.shape[:-1]
    rows = int(np.prod(shape))
    if (array.dtype != np.float32 or array.strides[-1] != 4 or not array.flags.aligned or out.dtype != torch.float32
            or out.device.type != "cpu" or not out.is_contiguous() or tuple(out.shape[1:]) != (*shape, n_out)):
        return False
    # rows evenly spaced: the leading axes of (C, [F,] T) contiguous among themselves
    if any(array.strides[k] != array.strides[k + 1] * array.shape[k + 1] for k in range(array.ndim - 2)):
        return False
    row_stride = array.strides[-2] // 4 if array.ndim > 1 else 0
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    dest = np.ascontiguousarray(dest, dtype=np.int64)
    if starts.ndim != 1 or starts.shape != dest.shape:
        raise ValueError(f"starts and dest must be 1-D of one length, got shapes {starts.shape} and {dest.shape}")
    if len(dest) and (dest.min() < 0 or dest.max() >= out.shape[0]):
        raise IndexError(f"batch rows {dest.min()}..{dest.max()} outside a batch of {out.shape[0]}")
    centre = np.ascontiguousarray(centre, dtype=np.float32).reshape(rows)
    scale = multiply if multiply is not None else divide
    mode = 0 if scale is None else (1 if multiply is not None else 2)
    scale = None if scale is None else np.ascontiguousarray(scale, dtype=np.float32).reshape(rows)
    bad = lib.bm2_normalised_windows(
        array.ctypes.data, rows, row_stride, array.shape[-1], starts.ctypes.data, dest.ctypes.data, len(starts),
        first, n_out, n_pre, centre.ctypes.data, None if scale is None else scale.ctypes.data, mode,
        int(max_scale is not None), 0.0 if max_scale is None else float(max_scale), out.data_ptr())
    if bad:
        s = int(starts[bad - 1])
        raise IndexError(f"window {bad - 1} (samples {s + first}..{s + first + n_out}, baseline {s}..{s + n_pre}) "
                         f"reaches outside the recording's {array.shape[-1]} samples")
    return True

