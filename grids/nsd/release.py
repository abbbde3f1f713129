"""Neural Speech Decoding's chain on the released data (Chen et al. 2024; one HDF5 per participant under
``paths.studies.nsd2024``, e.g. HB02 from Mendeley Data doi:10.17632/fp4bv9gtwk.2): per participant a2a
(non-causal and causal), then the 3-D ResNet, LSTM and 3-D Swin decoders, each non-causal and causal, at the
paper's sizes and schedule. Edit ``CHAIN`` to list your participants and their sex (the synthesizer's f0 and
formant ranges; the release does not store it).

    dora grid nsd.release --dry_run --init        # sign; then `dora run -f SIG`, a2a before e2a
"""

from .._explorers import ReconstructionExplorer
from . import nsd_chain

#: overrides shared by every XP of the grid
BASE: dict = {}
#: the chain's arguments (grids.nsd.plan): the release's example participant
CHAIN = {"subjects": ("HB02",), "study": "nsd2024", "sexes": {"HB02": "female"}}


@ReconstructionExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, cpus_per_gpu=4, mem_per_gpu=16, time=16 * 60)
    launcher.bind_(BASE)
    nsd_chain(launcher, **CHAIN)
