"""A small grid on the synthetic study that runs on CPU: CLIP vs. regression, two seeds."""

from ._explorers import ClipExplorer


@ClipExplorer
def explorer(launcher):
    launcher.slurm_(gpus=1, mem_per_gpu=8, time=60)
    launcher.bind_({"optim.epochs": 6})
    for seed in (0, 1):
        sub = launcher.bind({"seed": seed})
        sub({"loss.name": "clip"})
        sub({"loss.name": "mse"})
