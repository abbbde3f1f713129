"""A tiny synthetic setting shared by the CPU grids (a few seconds per XP)."""

TINY = {
    "studies.synthetic.n_subjects": 2,
    "studies.synthetic.n_sessions": 1,
    "studies.synthetic.n_sentences": 30,
    "studies.synthetic.sentences_per_recording": 20,
    "studies.synthetic.sfreq": 200,
    "model.simpleconv.hidden": 16,
    "model.simpleconv.merger_channels": 16,
    "model.simpleconv.depth": 2,
    "model.simpleconv.head_hidden": 32,
    "features.mel.n_mels": 8,
    "optim.batch_size": 16,
    "num_threads": 1,
}
# One CPU and one (fake or real) GPU per XP, so that a laptop-sized SLURM runs two XPs at once.
SMALL_JOB = {"gpus": 1, "cpus_per_gpu": 1, "mem_per_gpu": 2, "time": 30}
