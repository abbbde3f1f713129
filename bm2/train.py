"""Training entry point for ``dora run`` / ``dora grid``: seed, logging, distributed init, solver, run."""

from __future__ import annotations

import logging
import random
import typing as tp

import numpy as np
import torch
from dora import get_xp, hydra_main
from omegaconf import DictConfig

from . import distrib

logger = logging.getLogger("bm2")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr, quiet mne, keep warnings visible."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    import mne

    mne.set_log_level("ERROR")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@hydra_main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Train one XP (its folder and history come from Dora). Errors about the user's data or settings (bm2's own
    error classes, :func:`user_errors`) end the run with their message only; ``verbose=true`` shows the traceback."""
    setup_logging(cfg.get("verbose", False))
    try:
        _main(cfg)
    except user_errors() as exc:
        if cfg.get("verbose", False):
            raise
        raise SystemExit(f"bm2 stopped ({type(exc).__name__}): {exc}\n(`verbose=true` shows the traceback)") from None


def user_errors() -> tuple[type[BaseException], ...]:
    """bm2's error classes that describe a problem with the data, the files or the settings (and name the fix), as
    opposed to a bug: their message is all a user needs."""
    from .download.http import DownloadError
    from .events import EventsValidationError
    from .features.base import FeatureError
    from .models.common import ModelConfigError
    from .models.duin_vq import UntrainedTokenizerError
    from .preprocessing import RecordingDataError
    from .solvers.base import CheckpointError
    from .solvers.chain import ChainError
    from .stacking import StackError
    from .studies.base import StudyError
    from .utils.safe_pickle import PickleReadError

    return (StudyError, DownloadError, EventsValidationError, FeatureError, RecordingDataError, CheckpointError,
            ChainError, StackError, PickleReadError, UntrainedTokenizerError, ModelConfigError)


def _main(cfg: DictConfig) -> None:
    from .builders import build_study, get_solver

    xp = get_xp()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    seed_everything(int(cfg.seed))
    if cfg.download_only:
        from .download import DOWNLOADERS, download_study

        for name in cfg.dset.selections:
            study = build_study(cfg, name)
            # Studies with a known source are fetched (resumably; at once when complete); the others
            # (synthetic, data put in place by hand) only go through their own prepare().
            if name in DOWNLOADERS:
                download_study(name, study.root, cfg.get("download"))
            study.prepare()
        logger.info("studies %s are ready", list(cfg.dset.selections))
        return
    if cfg.get("stack") and cfg.stack.bases:
        from .stacking import run_stack_xp

        # a stacking XP trains no network: a meta-learner on its base XPs' validation logits (bm2/stacking.py)
        result = run_stack_xp(cfg, xp)
        print(f"\nTest results of XP {xp.sig} (stack of {len(cfg.stack.bases)} base XPs, meta-learner fitted on "
              f"their validation logits):\n{result.markdown()}", flush=True)
        return
    distrib.init()
    logger.info("XP %s in %s", xp.sig, xp.folder)
    solver = get_solver(cfg, xp.folder, xp.link)
    last = solver.run()
    if distrib.is_rank_zero():
        test = last["test"]
        table = solver.task.table(test)
        (xp.folder / "results.md").write_text(table + "\n")
        if solver.task.name == "retrieval":
            counts = (f"{int(test['n_segments'])} segments, {int(test['n_candidates'])} unique candidates, "
                      f"{int(test['n_words'])} words")
        else:
            counts = f"task {solver.task.name}, {len(solver.datasets.test)} test windows"
        print(f"\nTest results of XP {xp.sig} ({counts}):\n{table}", flush=True)


def _short_config_errors(compose: tp.Callable[..., DictConfig]) -> tp.Callable[..., DictConfig]:
    """Turn Hydra's composition errors (unknown recipe/model, unknown key) into a one-paragraph exit message:
    Dora composes the config outside Hydra's own error handling, which would print a 30-line traceback.

    Compositions are also memoised per list of overrides (a copy is returned each time): ``dora run`` composes the
    same overrides three times (the XP, the sheep, the run), each reading and merging every YAML file of
    ``conf/``. The files do not change within a process, and composition resolves no interpolation.
    """
    import copy

    from hydra.errors import ConfigCompositionException, OverrideParseException

    composed: dict[tuple[str, ...], DictConfig] = {}

    def wrapped(overrides: tp.Sequence[str] = ()) -> DictConfig:
        key = tuple(overrides)
        try:
            if key not in composed:
                composed[key] = compose(list(overrides))
                _check_booleans(composed[key], overrides)
                _check_device(composed[key])
            return copy.deepcopy(composed[key])
        except (ConfigCompositionException, OverrideParseException) as exc:
            what = str(exc).split("\nConfig search path")[0]  # Hydra's search path says nothing actionable
            detail = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            raise SystemExit(f"bm2: invalid overrides {list(overrides)}: {what}{detail}\n{_did_you_mean(what)}"
                             "Recipes are the files of conf/recipe/, models those of conf/model/; an existing key "
                             "is set as key=value (see conf/config.yaml).") from None
    return wrapped


def _check_booleans(cfg: DictConfig, overrides: tp.Sequence[str]) -> None:
    """Exit with a short message when an override gives a true / false key anything but a boolean: ``no``,
    ``off`` or ``tru`` reach the code as non-empty strings, which Python reads as true (``optim.amp_cpu=no`` would
    turn bf16 on)."""
    from omegaconf import OmegaConf

    base = getattr(main, "_base_cfg", None)
    for override in overrides:
        name, sep, _ = str(override).partition("=")
        if not sep or name.startswith(("+", "~")):
            continue
        default = OmegaConf.select(base, name, default=None) if base is not None else None
        value = OmegaConf.select(cfg, name, default=None)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise SystemExit(f"bm2: invalid override {override!r}: {name} is true or false (got {value!r}); set "
                             f"{name}=true or {name}=false")


def _check_device(cfg: DictConfig) -> None:
    """Exit with a short message, before any data is prepared, when ``device`` is not a torch device."""
    from .builders import resolve_device

    if cfg.get("device") is not None:
        try:
            resolve_device(str(cfg.device))
        except ValueError as exc:
            raise SystemExit(f"bm2: {exc}") from None


def _did_you_mean(message: str) -> str:
    """For Hydra's "Could not override 'KEY'": the existing keys closest to KEY, and a warning that Hydra's
    ``+KEY=...`` would add a key nothing reads."""
    import difflib
    import re

    from omegaconf import OmegaConf

    found = re.search(r"Could not override '([^']+)'", message)
    if not found:
        return ""
    key = found.group(1)
    keys: list[str] = []

    def walk(node: tp.Any, prefix: str) -> None:
        for k, v in node.items():
            keys.append(f"{prefix}{k}")
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")

    walk(OmegaConf.to_container(main._base_cfg, resolve=False), "")  # type: ignore[attr-defined, arg-type]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.75)
    last = key.rsplit(".", 1)[-1]
    same_name = sorted((k for k in keys if k.rsplit(".", 1)[-1] == last and k not in close), key=lambda k: k.count("."))
    close += same_name[:2]  # the shallowest keys of the same name: optim.seed -> seed
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    return (f"{hint}bm2 reads no key {key!r}: adding it with +{key}=... would be silently ignored.\n")


main._get_config_noinit = _short_config_errors(main._get_config_noinit)  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
