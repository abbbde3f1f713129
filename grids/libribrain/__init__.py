"""LibriBrain 2025 phoneme classification grids (issue 12): DeMEGa over grouping levels and seeds, the stack over
grouping levels, and the baselines on the same task, split and evaluation grouping.

    dora grid libribrain.demega --dry_run --init      # the release (paths.studies.libribrain2025), paper sizes
    dora grid libribrain.baselines --dry_run --init   # SimpleConv and braindecode's EEGConformer, same setting
    dora grid libribrain.synthetic --dry_run --init   # DeMEGa + stack on the synthetic LibriBrain-like study
    dora grid libribrain.tiny --dry_run --init        # two tiny base models + their stack, seconds on a CPU

The stack follows DeMEGa's three stages (``bm2/stacking.py`` says how and where bm2 differs): one base XP per
training grouping level K, then a stacking XP (``stack.bases=[...]``) whose meta-learner is fitted on the bases'
**validation** logits and scored on the test split. The bases of one stack share everything but K, in particular
the evaluation grouping (``dset.grouping.valid_k`` / ``test_k``) and the seed, so that their validation and test
items are the same groups. On SLURM the stacking XP's job waits for all its bases' jobs (``afterok``); locally, run
the bases with ``dora run -f SIG`` first (a stack run before them stops, naming the unfinished base), or use
``python -m scripts.stack`` on finished bases.
"""

from __future__ import annotations

import typing as tp

from .._chain import stage

#: DeMEGa's stage 1: one base model per grouping level K of the training split
LEVELS = (5, 10, 25, 50, 100)
#: the 2025 competition graded averages of 100 same-phoneme trials; validation is grouped alike (see README)
EVAL_K = 100
#: DeMEGa's seed (777) and two more
SEEDS = (777, 778, 779)
#: the 2025 release instead of the synthetic study (its root: paths.studies.libribrain2025)
RELEASE = {"dset.selections": ["libribrain2025"]}
#: one GPU per XP at the paper's sizes (batch 512 of 306 x 125 windows); cluster names come from BM2_SLURM_*
PAPER_JOB = {"gpus": 1, "cpus_per_gpu": 8, "mem_per_gpu": 64, "time": 24 * 60}
#: the stacking XP: evaluates its bases (validation and test) if needed, then a logistic regression
STACK_JOB = {"gpus": 1, "cpus_per_gpu": 4, "mem_per_gpu": 32, "time": 2 * 60}


def grouping(k: int, eval_k: int, dynamic: bool = False) -> dict[str, tp.Any]:
    """Overrides: training groups of ``k`` same-label windows (redrawn every epoch with ``dynamic``), validation
    and test groups of ``eval_k``."""
    return {"dset.grouping.k": k, "dset.grouping.valid_k": eval_k, "dset.grouping.test_k": eval_k,
            "dset.grouping.dynamic": dynamic}


def stacked_levels(launcher: tp.Any, overrides: dict[str, tp.Any] | None = None, levels: tp.Sequence[int] = LEVELS,
                   eval_k: int = EVAL_K, dynamic: bool = False, C: float = 1.0,
                   stack_job: dict[str, tp.Any] | None = None) -> dict[str, str]:
    """Schedule one base XP per level in ``levels`` (``overrides`` + :func:`grouping`) and the stacking XP that
    waits for them all. Returns the signatures by name: ``k5``, ``k10`` ... and ``stack``."""
    if len(levels) < 2:
        raise ValueError(f"a stack needs at least two grouping levels, got {list(levels)}")
    sigs = {f"k{k}": stage(launcher, {**(overrides or {}), **grouping(k, eval_k, dynamic)}) for k in levels}
    bases = [sigs[f"k{k}"] for k in levels]
    stacker = launcher.slurm(**stack_job) if stack_job else launcher
    sigs["stack"] = stage(stacker, {"stack.bases": bases, "stack.C": C}, after=bases)
    return sigs


__all__ = ["EVAL_K", "LEVELS", "PAPER_JOB", "RELEASE", "SEEDS", "STACK_JOB", "grouping", "stacked_levels"]
