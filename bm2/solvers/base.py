"""The generic solver: epochs, stages, best state, early stopping, atomic checkpoints and resume.

Subclasses implement :meth:`BaseSolver.train_stage`, :meth:`BaseSolver.valid_stage` and
:meth:`BaseSolver.test_stage`, and register their stateful objects once with
:meth:`BaseSolver.register_stateful`; checkpointing and resuming follow from that list.

The checkpoint is the single source of truth: it holds the history of epochs, which is copied to Dora's
``history.json`` after every save. A run killed at any point restarts from the last completed epoch,
without repeating or losing one (``epoch = len(history) + 1``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import typing as tp
from pathlib import Path

import torch

from .. import distrib

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1



def rng_state() -> dict[str, tp.Any]:
    """The random states a training epoch draws from (python, numpy, torch CPU and CUDA): saved with every
    checkpoint so that a resumed run continues with the draws (shuffling, dropout, augmentation seeds) an
    uninterrupted run would have made, instead of the seed's first ones again."""
    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    # numpy's key array as a tensor: checkpoints are read with weights_only=True, which refuses numpy objects
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, tp.Any]) -> None:
    """Restore what :func:`rng_state` saved (the CUDA states only where as many devices are visible). Under DDP
    every rank restores rank 0's states, as every rank starts from the same seed (``bm2.train``)."""
    import numpy as np

    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)

class HistoryLink(tp.Protocol):
    """What the solver needs of Dora's ``xp.link``: a history that can be replaced."""

    history: list[dict]

    def update_history(self, history: list[dict]) -> None:
        """Replace and persist the history."""


class LocalLink:
    """A :class:`HistoryLink` that keeps the history in memory (tests, runs outside Dora)."""

    def __init__(self) -> None:
        self.history: list[dict] = []

    def update_history(self, history: list[dict]) -> None:
        """Keep a copy of ``history``."""
        self.history = copy.deepcopy(history)


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message names the file."""


class BaseSolver:
    """Runs train / valid stages per epoch, keeps the best state, then tests it.

    Parameters
    ----------
    folder : the XP folder (checkpoint written to ``folder / "checkpoint.th"``).
    link : where the history of epochs is published (Dora's ``xp.link``).
    epochs : maximum number of epochs.
    patience : stop after this many epochs without improvement of the best metric (None = never).
    best_metric : ``(stage, name)`` of the metric that selects the best state, minimised
        (or maximised when ``best_mode == "max"``).
    """

    def __init__(self, folder: str | Path, link: HistoryLink, epochs: int, patience: int | None = None,
                 best_metric: tuple[str, str] = ("valid", "loss"), best_mode: str = "min") -> None:
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.folder = Path(folder)
        self.link = link
        self.epochs = epochs
        self.patience = patience
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.history: list[dict] = []
        self.best_state: dict[str, tp.Any] | None = None
        self._stateful: dict[str, tp.Any] = {}
        self.extra_checkpoint: dict[str, tp.Any] = {}  # self-description written with every checkpoint

    # ----------------------------------------------------------------- state
    def register_stateful(self, **objects: tp.Any) -> None:
        """Register objects with ``state_dict`` / ``load_state_dict`` to be checkpointed."""
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"{name} has no state_dict / load_state_dict")
            self._stateful[name] = obj

    @property
    def checkpoint_path(self) -> Path:
        """Where the checkpoint lives."""
        return self.folder / "checkpoint.th"

    @property
    def epoch(self) -> int:
        """The epoch about to run (1-based)."""
        return len(self.history) + 1

    def best_value(self) -> float | None:
        """The best value of the selection metric so far."""
        values = [h[self.best_metric[0]][self.best_metric[1]] for h in self.history
                  if self.best_metric[1] in h.get(self.best_metric[0], {})]
        if not values:
            return None
        return min(values) if self.best_mode == "min" else max(values)

    def _improved(self, value: float) -> bool:
        best = self.best_value()
        return best is None or (value < best if self.best_mode == "min" else value > best)

    def save_checkpoint(self) -> None:
        """Write the checkpoint atomically (temporary file, fsync, rename); rank 0 only."""
        if not distrib.is_rank_zero():
            return
        state = {"version": CHECKPOINT_VERSION, "history": self.history, "best_state": self.best_state,
                 "states": {name: obj.state_dict() for name, obj in self._stateful.items()},
                 "rng": rng_state(), **self.extra_checkpoint}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_name(f".{self.checkpoint_path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.checkpoint_path)

    def restore(self) -> bool:
        """Resume from the checkpoint if there is one; returns whether it did."""
        if not self.checkpoint_path.exists():
            if self.link.history:
                logger.warning("history.json has %d epochs but there is no checkpoint: starting over",
                               len(self.link.history))
                self.link.update_history([])
            return False
        state = load_checkpoint(self.checkpoint_path)
        self.check_resume(state)
        for name, obj in self._stateful.items():
            if name not in state["states"]:
                raise CheckpointError(f"{self.checkpoint_path} has no state for {name!r}; it was written by "
                                      "another solver or version. Use `dora run --clear` to start over")
            obj.load_state_dict(state["states"][name])
        self.history = list(state["history"])
        self.best_state = state["best_state"]
        if "rng" in state:  # checkpoints written before RNG states were saved resume with the current RNG
            set_rng_state(state["rng"])
        if distrib.is_rank_zero():
            self.link.update_history(self.history)
        logger.info("resumed from %s after epoch %d", self.checkpoint_path, len(self.history))
        return True

    def check_resume(self, state: dict[str, tp.Any]) -> None:
        """Raise :class:`CheckpointError` when ``state`` must not be resumed (e.g. written on other data)."""

    # ----------------------------------------------------------------- loop
    def should_stop(self) -> bool:
        """Stop when all epochs ran, or after ``patience`` epochs without improvement."""
        if len(self.history) >= self.epochs:
            return True
        if self.patience is None or not self.history:
            return False
        best = self.best_value()
        stage, name = self.best_metric
        last_best = max(i for i, h in enumerate(self.history) if h.get(stage, {}).get(name) == best)
        return len(self.history) - 1 - last_best >= self.patience

    def run(self) -> dict:
        """Train (resuming if possible), test the best state and return the last history entry."""
        self.restore()
        if not (self.history and "test" in self.history[-1]):
            while not self.should_stop():
                metrics: dict[str, dict] = {}
                metrics["train"] = self.train_stage()
                metrics["valid"] = self.valid_stage()
                metrics.update(self.monitor_stages())
                value = metrics[self.best_metric[0]][self.best_metric[1]]
                if self._improved(value):
                    self.best_state = self.copy_best_state()
                self.history.append(metrics)
                self.log_epoch(metrics)
                self.save_checkpoint()
                if distrib.is_rank_zero():
                    self.link.update_history(self.history)
            if self.best_state is not None:
                self.load_best_state(self.best_state)
            if not self.history:
                raise RuntimeError("no epoch ran: set optim.epochs >= 1")
            self._test()
        elif self._test_is_stale(self.history[-1]):
            # Evaluation-only settings changed (e.g. test-time add-ons switched on for a finished XP): test the
            # best state again, without training.
            logger.info("test settings changed since the last test (%s): testing the best state again",
                        self.test_settings() or "none")
            if self.best_state is not None:
                self.load_best_state(self.best_state)
            self._test()
        return self.history[-1]

    def _test(self) -> None:
        self.history[-1]["test"] = self.test_stage()
        settings = self.test_settings()
        if settings:
            self.history[-1]["test_settings"] = settings
        else:
            self.history[-1].pop("test_settings", None)
        self.save_checkpoint()
        if distrib.is_rank_zero():
            self.link.update_history(self.history)

    def _test_is_stale(self, entry: dict) -> bool:
        return json.loads(json.dumps(entry.get("test_settings") or {})) != json.loads(json.dumps(self.test_settings()))

    def test_settings(self) -> dict[str, tp.Any]:
        """Settings that change only the test evaluation (not training), recorded as ``test_settings`` next to
        the test metrics; when they differ from the recorded ones, a finished XP is tested again. Default none."""
        return {}

    def log_epoch(self, metrics: dict[str, dict]) -> None:
        """One log line per epoch."""
        parts = [f"{stage} " + " ".join(f"{k}={v:.4g}" for k, v in m.items() if isinstance(v, (int, float)))
                 for stage, m in metrics.items()]
        logger.info("epoch %d | %s", len(self.history), " | ".join(parts))

    # ----------------------------------------------------------------- hooks
    def copy_best_state(self) -> dict[str, tp.Any]:
        """A copy of what the best state keeps (by default the ``model`` registered as stateful)."""
        model = self._stateful["model"]
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def load_best_state(self, state: dict[str, tp.Any]) -> None:
        """Put the best state back into the model before testing."""
        self._stateful["model"].load_state_dict(state)

    def train_stage(self) -> dict[str, float]:
        """One training epoch; returns its metrics."""
        raise NotImplementedError

    def valid_stage(self) -> dict[str, float]:
        """Validation metrics of the current model."""
        raise NotImplementedError

    def test_stage(self) -> dict[str, float]:
        """Test metrics of the best model."""
        raise NotImplementedError

    def monitor_stages(self) -> dict[str, dict[str, float]]:
        """Extra per-epoch metrics recorded in the history under their own stage names, never used to select the
        best state or to stop (none by default)."""
        return {}


def load_checkpoint(path: str | Path) -> dict[str, tp.Any]:
    """Read a checkpoint safely (``weights_only=True``: no code in the file can run)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the XP has not completed an epoch yet")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many types for a damaged file)
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc}); remove it to restart the XP") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unknown format")
    return state
