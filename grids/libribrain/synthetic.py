"""DeMEGa's stack over grouping levels on the embedded synthetic LibriBrain-like study (``libribrain_synthetic``:
4 training runs of 90 s, no download): base models at training K in {1, 5, 10}, validation and test grouped by 5
(the synthetic runs hold about 900 phonemes each: groups of 100 would leave a handful of items), two seeds, paper
sizes; a stack per seed. 8 XPs, minutes each on a GPU (the single-model levels are in the README's DeMEGa section).

    dora grid libribrain.synthetic --dry_run --init   # sign; then `dora run -f SIG` (bases first, then each stack)
"""

from .._explorers import ClassificationExplorer
from .._tiny import SMALL_JOB
from . import stacked_levels

LEVELS = (1, 5, 10)
EVAL_K = 5
SEEDS = (0, 1)


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**{**SMALL_JOB, "time": 120})
    launcher.bind_({"recipe": "demega", "optim.amp_cpu": True})
    for seed in SEEDS:
        stacked_levels(launcher.bind({"seed": seed}), levels=LEVELS, eval_k=EVAL_K)
