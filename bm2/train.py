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
    """Train one XP (its folder and history come from Dora)."""
    from .builders import build_study, get_solver

    setup_logging(cfg.get("verbose", False))
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
    Dora composes the config outside Hydra's own error handling, which would print a 30-line traceback."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    def wrapped(overrides: tp.Sequence[str] = ()) -> DictConfig:
        try:
            return compose(list(overrides))
        except (ConfigCompositionException, OverrideParseException) as exc:
            what = str(exc).split("\nConfig search path")[0]  # Hydra's search path says nothing actionable
            detail = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
            raise SystemExit(f"bm2: invalid overrides {list(overrides)}: {what}{detail}\n"
                             "Recipes are the files of conf/recipe/, models those of conf/model/; an existing key "
                             "is set as key=value (see conf/config.yaml).") from None
    return wrapped


main._get_config_noinit = _short_config_errors(main._get_config_noinit)  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
