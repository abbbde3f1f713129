"""A two-stage chain on the synthetic study: contrastive (CLIP) pre-training, then a word classifier that starts
from the pre-trained encoder (all but its output head), fine-tuned and compared with the same classifier trained
from scratch.

    dora grid chain                      # on SLURM: the classifier's job waits for the pre-training job
    dora grid chain --dry_run --init     # sign only; then `dora run -f PARENT`, then `dora run -f CHILD`
"""

from ._chain import stage
from ._explorers import TaskExplorer
from ._tiny import SMALL_JOB, TINY


@TaskExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(TINY, {"optim.epochs": 2})
    pretrained = stage(launcher, {"loss.name": "clip"})
    classifier = {"recipe": "word_classification", "optim.epochs": 3}
    stage(launcher, classifier, parent=pretrained, exclude=["head"])
    stage(launcher, classifier)  # from scratch, for comparison
