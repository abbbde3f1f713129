"""Lee et al. 2024's class-codebook decoder, 10-fold cross-validation: one XP per test fold (``dset.split.fold``),
recipe ``lee2024`` at the release's model sizes and schedule (100 epochs), on the embedded synthetic study. For the
release add ``dset.selections=[lee2024] preprocess.sample_rate=256`` and ``paths.studies.lee2024`` to the bind
below (or on the command line of ``dora run -f``). Meant for a GPU (SLURM).

    dora grid lee2024 --dry_run --init             # sign the 10 XPs; then `dora run -f SIG` for each
    python -m scripts.make_tables lee2024 --folds  # mean +- sd over the folds of each setting
"""

from ._explorers import ClassificationExplorer

N_FOLDS = 10


@ClassificationExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, cpus_per_gpu=8, mem_per_gpu=40, time=12 * 60)
    # the recipe's defaults are a CPU demo; the original's schedule (ANCHORS_WAVE2 §4.2)
    launcher.bind_({"recipe": "lee2024", "optim.epochs": 100, "optim.warmup": 10, "optim.lr": 1e-4,
                    "loss.codebook.warmup_epochs": 10})
    for fold in range(N_FOLDS):
        launcher({"dset.split.fold": fold})
