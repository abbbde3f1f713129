"""Table 2: per study, random / mel regression / mel + CLIP / wav2vec 2.0 + CLIP, 3 seeds (48 XPs).

``dora grid nmi.main_table`` on a SLURM cluster; ``--dry_run --init`` only signs the XPs.
"""

from .._explorers import ClipExplorer
from ._common import MEL, SEEDS, STUDIES, WAV2VEC, setup


@ClipExplorer
def explorer(launcher):
    setup(launcher)
    for study in STUDIES:
        for seed in SEEDS:
            sub = launcher.bind({"dset.selections": [study], "seed": seed})
            sub(MEL, {"optim.max_batches": 0, "optim.epochs": 1})  # random (untrained) encoder
            sub(MEL, {"loss.name": "mse"})                          # mel regression
            sub(MEL, {"loss.name": "clip"})                         # + contrastive
            sub(WAV2VEC, {"loss.name": "clip"})                     # + wav2vec 2.0
