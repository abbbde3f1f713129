"""Du-IN's three-stage chain (Zheng et al. 2024) as grids: VQ-VAE -> MAE -> word classifier, per subject, with the
ablations of the paper's table and a multi-subject pre-training variant.

``duin.synthetic`` runs it on the embedded synthetic sEEG study at the paper's sizes; ``duin.tiny`` is the same
chain at tiny sizes (100 Hz, one block, a 32-code book) that runs on a CPU in seconds per stage (the integration
test). For each subject (the original trains every stage on one subject):

- ``vqvae``: stage 1 (the VQ-VAE tokenizer), ``mae``: stage 2 (masked code prediction, the frozen tokenizer copied
  from ``vqvae``);
- three classifiers on the same split: ``cls_scratch`` (no pre-training), ``cls_vqvae`` (the encoder started from
  the VQ-VAE's encoder, skipping the MAE: ``chain.rename={vqvae.encoder: encoder}``) and ``cls_mae`` (from the
  MAE: Du-IN);
- the baseline ``cls_conformer``: braindecode's EEGConformer (``model=eegconformer``, bm2's zoo adapter; the paper's
  EEG-Conformer row) with the same recipe, split and trials, no pre-training (its sizes: ``conformer=``);
- with ``multi_subject``: one VQ-VAE and one MAE pre-trained on all subjects together (``all/vqvae``,
  ``all/mae``), and per subject a classifier started from that MAE (``cls_multi``).

A subject's XPs select its windows with ``dset.subjects=[ID]`` **after** the split of all subjects' data
(:func:`bm2.builders.select_subjects`): every classifier of a grid sees the same test trials, the subject layer's
rows keep their indices from pre-training to fine-tuning, and a multi-subject pre-training on the 3-s epochs (the
fallback of ``dset.crops`` without continuous data) never trains on a trial that a per-subject classifier tests on.

    dora grid duin.synthetic                       # on SLURM: each stage's job waits for its parent's
    dora grid duin.synthetic --dry_run --init      # sign only; then `dora run -f SIG` stage by stage, in order
    python -m scripts.duin_chain tiny --subject 001  # the whole chain of one subject, locally, in order
"""

from __future__ import annotations

import dataclasses
import typing as tp

from .._chain import stage

#: the encoder's sizes shared by the three stages (they must agree for the weights to be copied)
ENCODER_KEYS = ("d_subject", "patch", "depth", "n_heads", "d_head", "d_ff", "attn_dropout", "ff_dropout")
#: the tokenizer's own sizes (stage 1, and stage 2's frozen copy)
VQ_KEYS = ("n_codes", "d_code", "decay", "kmeans_iters", "decoder_depth")
#: the classifiers of the paper's ablation table: no pre-training, VQ-VAE only, MAE (Du-IN), and the EEGConformer
#: baseline (braindecode's, no pre-training)
ABLATIONS = ("scratch", "vqvae", "mae", "conformer")
#: key of the stages pre-trained on all subjects together (the multi-subject variant)
ALL = "all"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One XP of the chain: ``key`` is ``SUBJECT/NAME`` (``all/...`` for the multi-subject pre-training),
    ``overrides`` its own overrides, ``parent`` the key of the stage it starts from (None: from scratch) and
    ``chain`` the other ``chain.*`` keys (``modules``, ``freeze``, ``rename``)."""

    key: str
    overrides: dict[str, tp.Any]
    parent: str | None = None
    chain: dict[str, tp.Any] = dataclasses.field(default_factory=dict)

    @property
    def subject(self) -> str:
        """The subject id, or :data:`ALL`."""
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        """``vqvae``, ``mae`` (pre-training) or ``cls_scratch``, ``cls_vqvae``, ``cls_mae``, ``cls_conformer``,
        ``cls_multi``."""
        return self.key.split("/", 1)[1]


def plan(encoder: dict | None = None, vq: dict | None = None, stages: tp.Sequence[dict] = ({}, {}, {}),
         subjects: tp.Sequence[str] = ("001",), multi_subject: bool = True,
         ablations: tp.Sequence[str] = ABLATIONS, conformer: dict | None = None) -> list[Stage]:
    """The stages of the chain, parents before children, with the ``encoder`` and ``vq`` sizes (model keys, see
    :data:`ENCODER_KEYS`, :data:`VQ_KEYS`; empty: the recipes' paper sizes), extra overrides per stage (VQ-VAE,
    MAE, classifier; the classifier's also apply to the EEGConformer), one chain per subject id of ``subjects`` and
    the classifiers of ``ablations``; ``conformer``: EEGConformer keys (``model.eegconformer.*``, see
    ``conf/model/eegconformer.yaml``; empty: braindecode's defaults); with ``multi_subject`` also the pre-training
    on all subjects and a classifier per subject started from it.

    Raises ``KeyError`` for unknown sizes or ablations and ``ValueError`` for no or repeated subjects."""
    encoder, vq = dict(encoder or {}), dict(vq or {})
    unknown = sorted(set(encoder) - set(ENCODER_KEYS)) + sorted(set(vq) - set(VQ_KEYS))
    if unknown:
        raise KeyError(f"unknown Du-IN sizes {unknown}; encoder: {ENCODER_KEYS}, tokenizer: {VQ_KEYS}")
    if set(ablations) - set(ABLATIONS):
        raise KeyError(f"unknown ablations {sorted(set(ablations) - set(ABLATIONS))}; valid: {ABLATIONS}")
    subjects = [str(s) for s in subjects]
    if not subjects or len(set(subjects)) != len(subjects) or ALL in subjects:
        raise ValueError(f"subjects must be distinct ids (not {ALL!r}), got {subjects}")
    vqvae = {"recipe": "duin_vqvae", **{f"model.duin_vqvae.{k}": v for k, v in {**encoder, **vq}.items()},
             **stages[0]}
    mae = {"recipe": "duin_mae", **{f"model.duin_mae.{k}": v for k, v in encoder.items()},
           **{f"model.duin_mae.vqvae.{k}": v for k, v in vq.items()}, **stages[1]}
    classifier = {"recipe": "duin_classifier", "model": "duin",
                  **{f"model.duin.{k}": v for k, v in encoder.items()}, **stages[2]}
    baseline = {"recipe": "duin_classifier", "model": "eegconformer",
                **{f"model.eegconformer.{k}": v for k, v in (conformer or {}).items()}, **stages[2]}
    tokenizer = {"modules": ["vqvae"], "freeze": ["vqvae"]}
    out: list[Stage] = []
    if multi_subject:
        out += [Stage(f"{ALL}/vqvae", vqvae), Stage(f"{ALL}/mae", mae, f"{ALL}/vqvae", tokenizer)]
    for subject in subjects:
        only = {"dset.subjects": [subject]}
        out += [Stage(f"{subject}/vqvae", {**vqvae, **only}),
                Stage(f"{subject}/mae", {**mae, **only}, f"{subject}/vqvae", tokenizer)]
        cls = {**classifier, **only}
        if "scratch" in ablations:
            out.append(Stage(f"{subject}/cls_scratch", cls))
        if "vqvae" in ablations:
            out.append(Stage(f"{subject}/cls_vqvae", cls, f"{subject}/vqvae",
                             {"modules": ["encoder"], "rename": {"vqvae.encoder": "encoder"}}))
        if "mae" in ablations:
            out.append(Stage(f"{subject}/cls_mae", cls, f"{subject}/mae", {"modules": ["encoder"]}))
        if "conformer" in ablations:
            out.append(Stage(f"{subject}/cls_conformer", {**baseline, **only}))
        if multi_subject:
            out.append(Stage(f"{subject}/cls_multi", cls, f"{ALL}/mae", {"modules": ["encoder"]}))
    return out


def duin_chain(launcher: tp.Any, **kwargs: tp.Any) -> dict[str, str]:
    """Schedule the stages of :func:`plan` (same keyword arguments) with ``launcher``; a child's job waits for
    its parent's on SLURM (:func:`grids._chain.stage`). Returns the signatures by stage key."""
    sigs: dict[str, str] = {}
    for st in plan(**kwargs):
        parent = sigs[st.parent] if st.parent else None
        sigs[st.key] = stage(launcher, st.overrides, parent=parent, **st.chain)
    return sigs


__all__ = ["ABLATIONS", "ALL", "ENCODER_KEYS", "Stage", "VQ_KEYS", "duin_chain", "plan"]
