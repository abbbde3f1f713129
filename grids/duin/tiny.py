"""Du-IN's chain at tiny sizes on a tiny synthetic sEEG study, on CPU in seconds per stage (integration test):
2 subjects x 2 runs x 6 words x 5 repeats, 6 contacts, 100 Hz (10-sample patches: 30 tokens of 16), one block,
a 32 x 8 codebook, 2 epochs per stage; per subject the three ablations, a tiny EEGConformer (8 temporal filters,
one block of 2 heads), and the multi-subject variant.

    dora grid duin.tiny --dry_run --init           # sign; then `dora run -f SIG` for each stage, parents first
    python -m scripts.duin_chain tiny --subject 001  # or: one subject's whole chain in one command
"""

from .._explorers import ClassificationExplorer
from .._tiny import SMALL_JOB
from . import duin_chain

TINY_SEEG = {"studies.synthetic_seeg.n_subjects": 2, "studies.synthetic_seeg.n_runs": 2,
             "studies.synthetic_seeg.n_words": 6, "studies.synthetic_seeg.repeats": 5,
             "studies.synthetic_seeg.n_channels": 6, "studies.synthetic_seeg.n_responsive": 3,
             "preprocess.sample_rate": 100, "optim.epochs": 2, "optim.warmup": 0, "optim.batch_size": 16,
             "num_threads": 1}
TINY_ENCODER = {"patch": 10, "depth": 1, "n_heads": 2, "d_head": 8, "d_ff": 32}
TINY_VQ = {"n_codes": 32, "d_code": 8, "decoder_depth": 1}
#: braindecode EEGConformer keys (its kernels, 25 + 75 samples, fit the 300-sample window)
TINY_CONFORMER = {"n_filters_time": 8, "att_heads": 2, "att_depth": 1}
#: overrides shared by every XP of the grid
BASE = TINY_SEEG
#: the chain's arguments (grids.duin.plan)
CHAIN = {"encoder": TINY_ENCODER, "vq": TINY_VQ, "subjects": ("001", "002"), "multi_subject": True,
         "conformer": TINY_CONFORMER}


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(BASE)
    duin_chain(launcher, **CHAIN)
