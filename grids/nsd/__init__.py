"""Neural Speech Decoding (Chen et al. 2024) as chained grids: per participant, the speech encoder and synthesizer
learn audio to audio (``a2a``), then each ECoG decoder learns ECoG to audio (``e2a``) with that synthesizer and
encoder frozen, for every decoder and both causal settings (participant x decoder x causal).

``nsd.synthetic`` runs it on the embedded synthetic ECoG study at the paper's sizes and schedule (60 epochs per
stage, batch 16; meant for a GPU on SLURM); ``nsd.tiny`` is the same chain at tiny sizes on a tiny synthetic study,
on a CPU in seconds per stage (the integration test); ``nsd.small`` a CPU-sized chain that learns (a2a about 35
minutes, then about 13 per decoder; the README's measurement); ``nsd.release`` reads the release's HDF5 files
(``paths.studies.nsd2024``). For each participant:

- ``a2a`` and ``a2a_causal``: stage 1 (``recipe=nsd_a2a``), non-causal and causal speech encoder (the original's
  a2a configuration trains a causal one);
- ``e2a_<decoder>`` and ``e2a_<decoder>_causal`` for ``decoder`` in resnet, lstm, swin: stage 2
  (``recipe=nsd_e2a``), started from the a2a XP of the same causal setting (``chain.modules`` / ``chain.freeze`` =
  encoder, synth: the recipe's), so that a causal decoder is never guided by a non-causal encoder.

A participant's XPs read only that participant's file (``studies.<study>.subjects=[ID]``), and its model takes the
participant's sex (``model.nsd.sex``: f0 and formant ranges) when the grid gives one.

    dora grid nsd.synthetic                       # on SLURM: each e2a job waits for its a2a job (afterok)
    dora grid nsd.synthetic --dry_run --init      # sign only; then `dora run -f SIG`, a2a before e2a
    python -m scripts.nsd_chain tiny --subject SY01   # one participant's whole chain, locally, in order
"""

from __future__ import annotations

import dataclasses
import typing as tp

from .._chain import stage

#: the ECoG decoders of the paper (bm2.models.ecog_decoders)
DECODERS = ("resnet", "lstm", "swin")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One XP of the chain: ``key`` is ``PARTICIPANT/NAME`` (``a2a``, ``a2a_causal``, ``e2a_lstm_causal`` ...),
    ``overrides`` its own overrides, ``parent`` the key of the a2a stage it starts from (None for a2a)."""

    key: str
    overrides: dict[str, tp.Any]
    parent: str | None = None

    @property
    def subject(self) -> str:
        """The participant id."""
        return self.key.split("/", 1)[0]

    @property
    def name(self) -> str:
        """``a2a``, ``a2a_causal``, ``e2a_<decoder>`` or ``e2a_<decoder>_causal``."""
        return self.key.split("/", 1)[1]


def plan(subjects: tp.Sequence[str] = ("SY01",), study: str = "nsd_synthetic",
         decoders: tp.Sequence[str] = DECODERS, causal: tp.Sequence[bool] = (False, True),
         sexes: tp.Mapping[str, str] | None = None, a2a: dict | None = None, e2a: dict | None = None,
         decoder_kwargs: tp.Mapping[str, dict] | None = None) -> list[Stage]:
    """The stages, parents first: per participant of ``subjects`` (ids of ``study``'s files, e.g. ``SY01`` or the
    release's ``HB02``), an a2a XP per causal setting of ``causal`` and an e2a XP per decoder of ``decoders`` and
    causal setting; ``sexes``: participant -> ``female`` / ``male`` (``model.nsd.sex``; absent: the model's
    default); ``a2a`` / ``e2a``: extra overrides of each stage (``e2a`` also takes keys shared by both, e.g. sizes
    of the encoder, which must match the parent's); ``decoder_kwargs``: per decoder, its sizes
    (``model.nsd.decoder_kwargs``, see :func:`bm2.models.ecog_decoders.build_ecog_decoder`).

    Raises ``KeyError`` for an unknown decoder and ``ValueError`` for no or repeated participants or causal
    settings."""
    unknown = sorted(set(decoders) - set(DECODERS)) + sorted(set(decoder_kwargs or {}) - set(DECODERS))
    if unknown:
        raise KeyError(f"unknown ECoG decoders {unknown}; valid: {DECODERS}")
    subjects = [str(s) for s in subjects]
    if not subjects or len(set(subjects)) != len(subjects):
        raise ValueError(f"subjects must be distinct participant ids, got {subjects}")
    causal = [bool(c) for c in causal]
    if not causal or len(set(causal)) != len(causal):
        raise ValueError(f"causal must list distinct settings (False, True), got {causal}")
    out: list[Stage] = []
    for subject in subjects:
        own: dict[str, tp.Any] = {f"studies.{study}.subjects": [subject]}
        if study != "nsd_synthetic":
            own["dset.selections"] = [study]
        if sexes and subject in sexes:
            own["model.nsd.sex"] = sexes[subject]
        for c in causal:
            suffix = "_causal" if c else ""
            parent = f"{subject}/a2a{suffix}"
            out.append(Stage(parent, {"recipe": "nsd_a2a", **own, "model.nsd.causal": c, **(a2a or {})}))
            for decoder in decoders:
                sizes = (decoder_kwargs or {}).get(decoder)
                overrides = {"recipe": "nsd_e2a", **own, "model.nsd.causal": c, "model.nsd.decoder": decoder,
                             **({"model.nsd.decoder_kwargs": dict(sizes)} if sizes else {}), **(e2a or {})}
                out.append(Stage(f"{subject}/e2a_{decoder}{suffix}", overrides, parent))
    return out


def nsd_chain(launcher: tp.Any, **kwargs: tp.Any) -> dict[str, str]:
    """Schedule the stages of :func:`plan` (same keyword arguments) with ``launcher``; an e2a job waits for its a2a
    job on SLURM (:func:`grids._chain.stage`). Returns the signatures by stage key."""
    sigs: dict[str, str] = {}
    for st in plan(**kwargs):
        sigs[st.key] = stage(launcher, st.overrides, parent=sigs[st.parent] if st.parent else None)
    return sigs


__all__ = ["DECODERS", "Stage", "nsd_chain", "plan"]
