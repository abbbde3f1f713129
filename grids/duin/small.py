"""Du-IN's chain at CPU sizes that still learn (the README's measurement): 3 subjects x 2 runs x 61 words x 5
repeats of the synthetic sEEG study, 10 contacts, at 100 Hz (10-sample patches: 30 tokens), a 2-block encoder, a
256 x 16 codebook; 30 / 30 / 60 epochs (VQ-VAE / MAE / classifier), 3 warm-up epochs. Per subject the three
ablations (no pre-training, VQ-VAE only, MAE), braindecode's EEGConformer at its defaults (60 epochs, the
classifiers' recipe) and the multi-subject variant.

    python -m scripts.duin_chain small --subject 001 002 003 --multi    # all of it, locally, parents first
    dora grid duin.small --dry_run --init                               # or sign; then `dora run -f SIG`
"""

from .._explorers import ClassificationExplorer
from .._tiny import SMALL_JOB
from . import duin_chain

SMALL_SEEG = {"studies.synthetic_seeg.n_subjects": 3, "studies.synthetic_seeg.n_runs": 2,
              "studies.synthetic_seeg.n_words": 61, "studies.synthetic_seeg.repeats": 5,
              "preprocess.sample_rate": 100, "optim.warmup": 3, "num_threads": 1}
SMALL_ENCODER = {"patch": 10, "depth": 2, "n_heads": 4, "d_head": 16, "d_ff": 64}
SMALL_VQ = {"n_codes": 256, "d_code": 16, "decoder_depth": 1}
#: overrides shared by every XP of the grid
BASE = SMALL_SEEG
#: the chain's arguments (grids.duin.plan)
CHAIN = {"encoder": SMALL_ENCODER, "vq": SMALL_VQ, "subjects": ("001", "002", "003"), "multi_subject": True,
         "conformer": {},
         "stages": ({"optim.epochs": 30}, {"optim.epochs": 30}, {"optim.epochs": 60})}


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(BASE)
    duin_chain(launcher, **CHAIN)
