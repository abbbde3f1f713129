"""Neural Speech Decoding's chain on the embedded synthetic ECoG study at the paper's sizes and schedule (60 epochs
per stage, batch 16, Adam (0, 0.99) at 2e-3): per participant a2a (non-causal and causal), then the 3-D ResNet,
LSTM and 3-D Swin ECoG decoders, each non-causal and causal (2 + 6 XPs per participant). Meant for a GPU (SLURM);
``nsd.tiny`` is the CPU-sized chain.

    dora grid nsd.synthetic --dry_run --init      # sign; then `dora run -f SIG`, a2a before e2a
"""

from .._explorers import ReconstructionExplorer
from . import nsd_chain

#: overrides shared by every XP of the grid (none: the recipes' paper sizes, nsd_synthetic's defaults)
BASE: dict = {}
#: the chain's arguments (grids.nsd.plan): nsd_synthetic's default participant (n_subjects=1), a female speaker
CHAIN = {"subjects": ("SY01",), "sexes": {"SY01": "female"}}


@ReconstructionExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, cpus_per_gpu=4, mem_per_gpu=16, time=12 * 60)
    launcher.bind_(BASE)
    nsd_chain(launcher, **CHAIN)
