"""Baselines of the DeMEGa grid on the same task, split, standardisation and grouping (``recipe=libribrain_phoneme``
on the release: 39 phonemes, windows [0, 0.5] s, the 2025 named split, training-run statistics; training groups of
K in {5, 10, 25, 50, 100}, validation and test groups of 100, the first DeMEGa seed): bm2's SimpleConv (its
classification head: per-sample logits averaged over the window) and braindecode's EEGConformer through the model
zoo's adapter (``pip install bm2[zoo]``), each with cross-entropy and the recipe's optimiser, and each stacked over
the levels like DeMEGa. 12 XPs.

    dora grid libribrain.baselines --dry_run --init
"""

from .._explorers import ClassificationExplorer
from . import EVAL_K, LEVELS, PAPER_JOB, RELEASE, SEEDS, STACK_JOB, stacked_levels

#: the baseline models (model=...) and their overrides; EEGConformer's kernels (25 + 75 samples) fit 125 samples
MODELS = {"simpleconv": {}, "eegconformer": {}}


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**PAPER_JOB)
    launcher.bind_({"recipe": "libribrain_phoneme", "seed": SEEDS[0]}, RELEASE)
    for model, overrides in MODELS.items():
        stacked_levels(launcher.bind({"model": model, **overrides}), levels=LEVELS, eval_k=EVAL_K,
                       stack_job=STACK_JOB)
