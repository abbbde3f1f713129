"""A tiny setting shared by the CPU grids and the integration tests (a few seconds per XP)."""

# A small synthetic study: 2 subjects x 1 session, 20 sentences each from a corpus of 30, at 200 Hz.
TINY_STUDY = {
    "studies.synthetic.n_subjects": 2,
    "studies.synthetic.n_sessions": 1,
    "studies.synthetic.n_sentences": 30,
    "studies.synthetic.sentences_per_recording": 20,
    "studies.synthetic.sfreq": 200,
}
# A small SimpleConv and batch, on one thread, for any study (model.simpleconv.* keys: SimpleConv models only).
TINY_MODEL = {
    "model.simpleconv.hidden": 16,
    "model.simpleconv.merger_channels": 16,
    "model.simpleconv.depth": 2,
    "model.simpleconv.head_hidden": 32,
    "features.mel.n_mels": 8,
    "optim.batch_size": 16,
    "num_threads": 1,
}
TINY = {**TINY_STUDY, **TINY_MODEL}
# One CPU and one (fake or real) GPU per XP, so that a laptop-sized SLURM runs two XPs at once.
SMALL_JOB = {"gpus": 1, "cpus_per_gpu": 1, "mem_per_gpu": 2, "time": 30}


def as_overrides(params: dict) -> list[str]:
    """``key=value`` command-line overrides of ``params`` (for ``dora run``)."""
    return [f"{key}={value}" for key, value in params.items()]
