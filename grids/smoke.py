"""Smoke grid of the SLURM integration test: two tiny XPs, one longer XP that the test preempts, a 2-task
DDP XP, and one XP that fails on purpose (unknown study) to exercise failure reporting and ``dora grid smoke -r``."""

from ._explorers import ClipExplorer
from ._tiny import SMALL_JOB, TINY


@ClipExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(TINY, {"optim.epochs": 2})
    launcher({"loss.name": "clip"})
    launcher({"loss.name": "mse"})
    launcher({"optim.epochs": 12, "seed": 5})          # long enough to be preempted mid-training
    launcher({"dset.selections": ["no_such_study"]})  # fails on purpose
    launcher.slurm(gpus=2)({"seed": 9})               # one XP as a 2-task DDP job (gloo on CPU)
