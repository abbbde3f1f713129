"""Du-IN's chain on the embedded synthetic sEEG study at the paper's sizes (1 kHz, 3-s trials, 30 tokens of 160,
8 blocks, 2048 x 64 codebook) and schedules (800 / 400 / 200 epochs): per subject VQ-VAE -> MAE -> classifier with
the ablations (no pre-training, VQ-VAE only, MAE), braindecode's EEGConformer on the same trials (its defaults:
2.13 M parameters for 10 contacts x 3000 samples and 61 words; the paper's EEG-Conformer has 2.34 M), and the
multi-subject pre-training variant. Meant for a GPU (SLURM); ``duin.tiny`` is the CPU-sized chain.

    dora grid duin.synthetic --dry_run --init      # sign; then `dora run -f SIG` for each stage, parents first
"""

from .._explorers import ClassificationExplorer
from . import duin_chain

#: overrides shared by every XP of the grid (none: the recipes' defaults, synthetic_seeg's 2 subjects)
BASE: dict = {}
#: the chain's arguments (grids.duin.plan): the subjects of synthetic_seeg's default n_subjects=2
CHAIN = {"subjects": ("001", "002"), "multi_subject": True, "conformer": {}}


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, cpus_per_gpu=4, mem_per_gpu=16, time=24 * 60)
    launcher.bind_(BASE)
    duin_chain(launcher, **CHAIN)
