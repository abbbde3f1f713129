"""Settings shared by the paper grids (the module name starts with ``_`` so Dora does not treat it as a grid)."""

STUDIES = ["brennan2019", "broderick2019", "gwilliams2022", "schoffelen2019"]
SEEDS = [0, 1, 2]
# Sensors kept per study (used when spatial attention is ablated and a fixed montage is needed).
N_CHANNELS = {"brennan2019": 60, "broderick2019": 128, "gwilliams2022": 208, "schoffelen2019": 273}

# The paper recipe: paper-size SimpleConv, batch 256 over 2 GPUs, at most 1200 updates per epoch,
# early stopping after 10 epochs without improvement of the valid loss.
PAPER = {
    "model": "simpleconv_paper",
    "optim.batch_size": 256,
    "optim.max_batches": 1200,
    "optim.epochs": 200,
    "optim.patience": 10,
    "num_workers": 8,
}
MEL = {"dset.features": ["mel"], "features.mel.n_mels": 120}
WAV2VEC = {"dset.features": ["wav2vec2"]}


def setup(launcher):
    """Cluster resources and the paper recipe, bound in place."""
    launcher.slurm_(gpus=2, mem_per_gpu=60, time=3 * 24 * 60)
    launcher.bind_(PAPER)
