"""A small grid on the synthetic study that runs on CPU in about a minute: CLIP vs. MSE, two seeds.

    dora grid synthetic                      # on SLURM (a laptop-sized one works: scripts/slurm_local.py)
    dora grid synthetic --dry_run --init     # sign the XPs only; then `dora run -f SIG`
"""

from ._explorers import ClipExplorer
from ._tiny import SMALL_JOB, TINY


@ClipExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(TINY, {"optim.epochs": 3})
    for seed in (0, 1):
        sub = launcher.bind({"seed": seed})
        sub({"loss.name": "clip"})
        sub({"loss.name": "mse"})
