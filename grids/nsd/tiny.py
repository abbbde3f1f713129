"""Neural Speech Decoding's chain at tiny sizes on a tiny synthetic ECoG study, on a CPU in seconds per stage (the
integration test): 60 trials of 8 words, a 16-channel speech encoder of 2 blocks, 20 samples per formant shape,
tiny decoders, 1 epoch of 4 batches per stage; per participant a2a and every decoder, non-causal and causal.

    dora grid nsd.tiny --dry_run --init           # sign; then `dora run -f SIG`, a2a before e2a
    python -m scripts.nsd_chain tiny --subject SY01   # or: the whole chain in one command
"""

from .._explorers import ReconstructionExplorer
from .._tiny import SMALL_JOB
from . import nsd_chain

TINY_NSD = {"studies.nsd_synthetic.n_trials": 60, "studies.nsd_synthetic.n_words": 8,
            "model.nsd.channels": 16, "model.nsd.encoder_depth": 2, "model.nsd.n_filter_samples": 20,
            "model.nsd.background_mlp": False, "optim.epochs": 1, "optim.max_batches": 4, "optim.batch_size": 8,
            "num_threads": 1}
#: each decoder's sizes (bm2.models.ecog_decoders)
TINY_DECODERS = {"resnet": {"width": 4}, "lstm": {"hidden": 16, "layers": 1},
                 "swin": {"embed_dim": 12, "depths": [1, 1], "heads": [1, 2], "head_channels": [16, 8]}}
#: overrides shared by every XP of the grid
BASE = TINY_NSD
#: the chain's arguments (grids.nsd.plan)
CHAIN = {"subjects": ("SY01",), "decoder_kwargs": TINY_DECODERS}


@ReconstructionExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(BASE)
    nsd_chain(launcher, **CHAIN)
