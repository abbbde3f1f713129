"""Du-IN's chain on the embedded synthetic sEEG study at the paper's sizes (1 kHz, 3-s trials, 30 tokens of 160,
8 blocks, 2048 x 64 codebook) and schedules (800 / 400 / 200 epochs): VQ-VAE -> MAE -> classifier, and the
classifier without pre-training. Meant for a GPU (SLURM); ``duin.tiny`` is the CPU-sized chain.

    dora grid duin.synthetic --dry_run --init      # sign; then `dora run -f SIG` for stage 1, 2, 3 in order
"""

from .._explorers import TaskExplorer
from . import duin_chain


@TaskExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, cpus_per_gpu=4, mem_per_gpu=16, time=24 * 60)
    duin_chain(launcher)
