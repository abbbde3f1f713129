"""Du-IN's three-stage chain (Zheng et al. 2024) as grids: VQ-VAE -> MAE -> word classifier.

``duin.synthetic`` runs it on the embedded synthetic sEEG study at the paper's sizes; ``duin.tiny`` is the same
chain at tiny sizes (100 Hz, one block, a 32-code book) that runs on a CPU in seconds per stage (the integration
test). Both add the classifier trained from scratch on the same split (the "no pre-training" row).

    dora grid duin.synthetic                       # on SLURM: each stage's job waits for its parent's
    dora grid duin.synthetic --dry_run --init      # sign only; then `dora run -f SIG` stage by stage, in order

Stage 2 copies the whole stage-1 model (``vqvae``) and keeps it frozen; stage 3 copies stage 2's ``encoder``
(subject layer, tokenizer and Transformer) and trains it with its new head.
"""

from __future__ import annotations

import typing as tp

from .._chain import stage

#: the encoder's sizes shared by the three stages (they must agree for the weights to be copied)
ENCODER_KEYS = ("d_subject", "patch", "depth", "n_heads", "d_head", "d_ff", "attn_dropout", "ff_dropout")
#: the tokenizer's own sizes (stage 1, and stage 2's frozen copy)
VQ_KEYS = ("n_codes", "d_code", "decay", "kmeans_iters", "decoder_depth")


def duin_chain(launcher: tp.Any, encoder: dict | None = None, vq: dict | None = None,
               stages: tp.Sequence[dict] = ({}, {}, {}), scratch: bool = True) -> dict[str, str]:
    """Schedule VQ-VAE -> MAE -> classifier with the ``encoder`` and ``vq`` sizes (model keys, see
    :data:`ENCODER_KEYS`, :data:`VQ_KEYS`; empty: the recipes' paper sizes) and extra overrides per stage;
    ``scratch`` adds the classifier without pre-training. Returns the signatures by stage name."""
    encoder, vq = dict(encoder or {}), dict(vq or {})
    unknown = sorted(set(encoder) - set(ENCODER_KEYS)) + sorted(set(vq) - set(VQ_KEYS))
    if unknown:
        raise KeyError(f"unknown Du-IN sizes {unknown}; encoder: {ENCODER_KEYS}, tokenizer: {VQ_KEYS}")
    vqvae = {"recipe": "duin_vqvae", **{f"model.duin_vqvae.{k}": v for k, v in {**encoder, **vq}.items()},
             **stages[0]}
    mae = {"recipe": "duin_mae", **{f"model.duin_mae.{k}": v for k, v in encoder.items()},
           **{f"model.duin_mae.vqvae.{k}": v for k, v in vq.items()}, **stages[1]}
    classifier = {"recipe": "duin_classifier", "model": "duin",
                  **{f"model.duin.{k}": v for k, v in encoder.items()}, **stages[2]}
    sigs = {"vqvae": stage(launcher, vqvae)}
    sigs["mae"] = stage(launcher, mae, parent=sigs["vqvae"], modules=["vqvae"], freeze=["vqvae"])
    sigs["classifier"] = stage(launcher, classifier, parent=sigs["mae"], modules=["encoder"])
    if scratch:
        sigs["scratch"] = stage(launcher, classifier)
    return sigs


__all__ = ["ENCODER_KEYS", "VQ_KEYS", "duin_chain"]
