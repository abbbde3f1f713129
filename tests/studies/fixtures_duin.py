"""Du-IN release fixtures: pickles written through a stand-in of the release's ``utils.DotDict.DotDict``, so the
files name exactly the global the real ones do; the stand-in is removed from ``sys.modules`` afterwards (the
loader must read them without it)."""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
import typing as tp
from pathlib import Path

import numpy as np

DATASET = Path("data") / "seeg.he2023xuanwu"


class _DotDict(dict):
    """Attribute access over dict items, like the release's class."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


@contextlib.contextmanager
def release_classes() -> tp.Iterator[type]:
    """A ``DotDict`` class importable as ``utils.DotDict.DotDict`` while the block runs (pickle checks it)."""
    saved = {name: sys.modules.get(name) for name in ("utils", "utils.DotDict")}
    package, module = types.ModuleType("utils"), types.ModuleType("utils.DotDict")
    cls = type("DotDict", (_DotDict,), {"__module__": "utils.DotDict", "__qualname__": "DotDict"})
    module.DotDict = cls  # type: ignore[attr-defined]
    package.DotDict = module  # type: ignore[attr-defined]
    package.__path__ = []  # type: ignore[attr-defined]
    sys.modules.update({"utils": package, "utils.DotDict": module})
    try:
        yield cls
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def write_run(folder: Path, ch_names: tp.Sequence[str], labels: tp.Sequence[str], data: np.ndarray,
              protocol: int = 4) -> None:
    """One ``dataset.bipolar.default.*`` folder: ``data`` (items with name, data_s, data_n) and ``info``."""
    folder.mkdir(parents=True, exist_ok=True)
    with release_classes() as DotDict:
        items = [DotDict(name=label, data_s=np.ascontiguousarray(epoch), data_n=np.ascontiguousarray(epoch))
                 for label, epoch in zip(labels, data)]
        info = DotDict(ch_names=list(ch_names))
        (folder / "data").write_bytes(pickle.dumps(items, protocol=protocol))
        (folder / "info").write_bytes(pickle.dumps(info, protocol=protocol))


def make_epochs(n_trials: int, n_channels: int, seed: int, n_samples: int = 3000) -> np.ndarray:
    """Random epochs (µV scale) of ``n_samples``."""
    return (np.random.default_rng(seed).standard_normal((n_trials, n_channels, n_samples)) * 20).astype(np.float32)


def write_release(root: Path, layout: dict[str, dict[str, tuple[list[str], list[str], np.ndarray]]],
                  variant: str = "unaligned", protocol: int = 4) -> dict[str, dict[str, Path]]:
    """``layout = {subject: {run: (ch_names, labels, data)}}`` under ``root/data/seeg.he2023xuanwu``; returns the
    run folders ``{subject: {run: folder}}``."""
    out: dict[str, dict[str, Path]] = {}
    for subject, runs in layout.items():
        for run, (ch_names, labels, data) in runs.items():
            folder = root / DATASET / subject / "word-recitation" / run / f"dataset.bipolar.default.{variant}"
            write_run(folder, ch_names, labels, data, protocol)
            out.setdefault(subject, {})[run] = folder
    return out
