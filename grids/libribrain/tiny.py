"""Two tiny DeMEGa base models (training K = 1 and 2, evaluation ungrouped) and their stack, on a tiny synthetic
LibriBrain-like study (2 training runs of 30 s), 2 epochs each: seconds per XP on a CPU (the integration test).

    dora grid libribrain.tiny --dry_run --init   # sign; then `dora run -f SIG` for each base, then the stack
"""

from .._explorers import ClassificationExplorer
from .._tiny import SMALL_JOB
from . import stacked_levels

TINY_LIBRI = {"studies.libribrain_synthetic.n_train_runs": 2, "studies.libribrain_synthetic.run_seconds": 30}
TINY_DEMEGA = {"model.demega.dim": 16, "model.demega.n_layers": 1, "model.demega.n_heads": 2,
               "model.demega.ff_dim": 32, "model.demega.embed_hidden": 16, "model.demega.embed_dim": 16,
               "model.demega.ipa_hidden": 8, "model.demega.proj_dim": 16, "optim.batch_size": 32,
               "optim.epochs": 2, "optim.warmup": 0, "num_threads": 1}
LEVELS = (1, 2)


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_({"recipe": "demega"}, TINY_LIBRI, TINY_DEMEGA)
    stacked_levels(launcher, levels=LEVELS, eval_k=1)
