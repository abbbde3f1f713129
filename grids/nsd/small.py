"""Neural Speech Decoding's chain at CPU sizes that still learn (the README's measurement): one participant of the
synthetic ECoG study with 800 trials of 40 words (the last 50 the test set), a 128-channel speech encoder of 4
blocks without the background MLP (its per-sample pass makes a step ~5x slower), f0 by harmonic salience
(``model.nsd.f0_estimator=salience``, ours: the learned head stays a few Hz off, README), 40 samples per formant
shape, the synthesizer's background profile the study's baseline (its floor); a2a for 60 epochs of 100 batches of
16, supervised by the study's true F1-F3 (``dset.extra_targets=[speech,praat]``, 10x the release's weights,
fading from epoch 40 to 60), then the non-causal 3-D ResNet (width 8), LSTM (64 hidden, 2 layers) and 3-D Swin
(24-dim, 2 + 2 blocks) ECoG decoders for 20 epochs of 50 batches each. The evaluation takes the noise sources'
expected power (``model.nsd.expected_noise``; training still draws), the deterministic part of the spectrogram
that a decoder can predict. Measured on this project's 2-core CPU (one thread, other runs alongside): a2a 35 min
(test PCC 0.922), each e2a stage about 13 min.

    python -m scripts.nsd_chain small --subject SY01   # the whole chain, locally, parents first, then its table
    python -m scripts.nsd_chain small --subject SY01 --decoders lstm --causal true   # causal a2a, causal LSTM
    dora grid nsd.small --dry_run --init               # or sign; then `dora run -f SIG`, a2a before e2a
"""

from .._explorers import ReconstructionExplorer
from .._tiny import SMALL_JOB
from . import nsd_chain

SMALL_NSD = {"model.nsd.channels": 128, "model.nsd.encoder_depth": 4, "model.nsd.n_filter_samples": 40,
             "model.nsd.background_mlp": False, "model.nsd.expected_noise": True, "optim.batch_size": 16,
             "num_threads": 1,
             # 800 trials (20 of each word, 750 for training and validation): from 200, the test words' formants
             # were the a2a encoder's largest error (README)
             "studies.nsd_synthetic.n_trials": 800,
             # the speech encoder's f0 by harmonic salience (ours, model.nsd.f0_estimator; e2a's encoder is its a2a
             # parent's, so both stages name it): 0.69 Hz off on the test words, where the learned head, even with
             # the pitch augmentation at S = 0.5, was 2.05 Hz off (README). a2a's f0 term (praat_f0 below) then has
             # no gradient: it only reports the error (left in, so that the a2a XP keeps its signature)
             "model.nsd.f0_estimator": "salience",
             # the study's pre-trial baseline (all at the -50 dB floor, its background being at -70 dB) as the
             # synthesizer's background profile, as the release does; the default flat -35 dB would have to be
             # learned down through background_gain first
             "model.nsd.noise_profile": [-1.0] * 256}
#: each decoder's sizes (bm2.models.ecog_decoders)
SMALL_DECODERS = {"resnet": {"width": 8}, "lstm": {"hidden": 64, "layers": 2},
                  "swin": {"embed_dim": 24, "depths": [2, 2], "heads": [2, 4], "head_channels": [32, 16]}}
#: overrides shared by every XP of the grid
BASE = SMALL_NSD
#: the chain's arguments (grids.nsd.plan): non-causal only (a causal decoder needs its own causal a2a parent)
CHAIN = {"subjects": ("SY01",), "sexes": {"SY01": "female"}, "causal": (False,), "decoder_kwargs": SMALL_DECODERS,
         # a2a: f0 and F1-F3 supervise the speech encoder (the release's pitch / formant supervision; the study
         # stores its true tracks where the release has Praat's), at 10x the release's weights and full until
         # epoch 40, fading to 0 at 60: with the release's (weights 4e-4 / 3e-6, fading from epoch 20 to 40) and
         # Praat's estimates, f0 and formants were still far off after 1,600 steps (README)
         "a2a": {"optim.epochs": 60, "optim.max_batches": 100, "dset.extra_targets": ["speech", "praat"],
                 "+loss.weights.praat_f0": 4e-3, "+loss.weights.praat_formant": 3e-5,
                 "loss.nsd_a2a.praat_decay": [40, 60]},
         "e2a": {"optim.epochs": 20, "optim.max_batches": 50}}


@ReconstructionExplorer
def explorer(launcher):
    launcher.slurm_(**SMALL_JOB)
    launcher.bind_(BASE)
    nsd_chain(launcher, **CHAIN)
