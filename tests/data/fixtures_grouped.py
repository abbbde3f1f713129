"""Write LibriBrain "grouped" h5 files in the published format (ANCHORS_WAVE2 §1.3): ``data`` float32
``[n, 306, T]`` chunked ``(min(32, n), 306, T)``, ``labels`` int64 ``[n]``, ``group_indices`` variable-length int32
``[n]`` and the file attributes of ``GroupedDataset.preprocess_and_save``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from bm2.data.grouped_h5 import grouped_path


def write_grouped(path: Path, data: np.ndarray, labels: np.ndarray, k: int, members: list[np.ndarray] | None = None,
                  skip: tuple[str, ...] = ()) -> Path:
    """One grouped file; ``skip`` leaves datasets out (malformed fixtures)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data, dtype=np.float32)
    n = data.shape[0]
    if members is None:
        members = [np.arange(i * k, (i + 1) * k, dtype=np.int32) for i in range(n)]
    with h5py.File(path, "w") as f:
        if "data" not in skip:
            f.create_dataset("data", data=data, chunks=(min(32, n), *data.shape[1:]))
        if "labels" not in skip:
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
        if "group_indices" not in skip:
            ds = f.create_dataset("group_indices", (n,), dtype=h5py.vlen_dtype(np.dtype("int32")))
            for i, m in enumerate(members):
                ds[i] = np.asarray(m, dtype=np.int32)
        f.attrs.update({"n_groups": n, "n_channels": data.shape[1], "n_timepoints": data.shape[2],
                        "grouped_samples": k, "average_grouped_samples": True, "drop_remaining": False,
                        "shuffle": True, "shuffle_seed": 777, "created_time": "2025-08-01T00:00:00"})
    return path


def write_level(root: Path, k: int, sizes: dict[str, int] | None = None, n_times: int = 125,
                seed: int = 0, signal: float = 0.0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The three files of level ``k`` under ``root`` (white noise plus ``signal`` times a fixed evoked field per
    class, shared by the splits; labels cycling through the 39 classes); returns the ``(data, labels)``
    written per bm2 split."""
    rng = np.random.default_rng(seed)
    spatial = np.random.default_rng(1234).standard_normal((39, 306, 1))
    patterns = (spatial * np.hanning(n_times)).astype(np.float32)  # an evoked field per class
    written = {}
    for split, n in (sizes or {"train": 80, "valid": 39, "test": 45}).items():
        labels = (np.arange(n) * 7 + k) % 39
        data = rng.standard_normal((n, 306, n_times)).astype(np.float32) + signal * patterns[labels]
        write_grouped(grouped_path(root, k, split), data, labels, k)
        written[split] = (data, labels)
    return written
