"""DeMEGa on the LibriBrain 2025 release: one base model per training grouping level K in {5, 10, 25, 50, 100}
(static groups, as the original's pre-grouped files) for each of three seeds, validation and test grouped by 100,
and per seed the stack over the five levels (meta-learner on the validation logits). Paper sizes and schedule
(``recipe=demega``: AdamW 1e-4, 5 warm-up epochs then cosine, batch 512, up to 30 epochs, early stopping on
validation F1-macro). 18 XPs; needs the release under ``paths.studies.libribrain2025`` and a GPU per XP.

    dora grid libribrain.demega --dry_run --init   # sign; then `dora run -f SIG` (bases first, then each stack)
    dora grid libribrain.demega                    # on SLURM: each stack's job waits for its five bases (afterok)
"""

from .._explorers import ClassificationExplorer
from . import EVAL_K, LEVELS, PAPER_JOB, RELEASE, SEEDS, STACK_JOB, stacked_levels


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**PAPER_JOB)
    launcher.bind_({"recipe": "demega"}, RELEASE)
    for seed in SEEDS:
        stacked_levels(launcher.bind({"seed": seed}), levels=LEVELS, eval_k=EVAL_K, stack_job=STACK_JOB)
