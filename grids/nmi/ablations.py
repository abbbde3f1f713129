"""Ablation table on the two MEG studies: no clamping, no subject layers, no spatial attention (3 seeds)."""

from .._explorers import ClipExplorer
from ._common import N_CHANNELS, SEEDS, WAV2VEC, setup

MEG_STUDIES = ["gwilliams2022", "schoffelen2019"]


@ClipExplorer
def explorer(launcher):
    setup(launcher)
    launcher.bind_(WAV2VEC, {"loss.name": "clip"})
    for study in MEG_STUDIES:
        for seed in SEEDS:
            sub = launcher.bind({"dset.selections": [study], "seed": seed})
            sub()                                                  # full model (reference)
            sub({"norm.max_scale": None})                          # no clamping
            sub({"model.simpleconv.subject_layers": False})        # no subject layers
            sub({"model.simpleconv.merger": False,                 # no spatial attention
                 "model.simpleconv.in_channels": N_CHANNELS[study]})
