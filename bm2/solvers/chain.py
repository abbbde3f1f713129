"""Chained XPs: start a model from another XP's best state (all of it or named sub-modules, optionally frozen).

A child names its parent by signature (``chain.parent=SIG``) or by the parent's overrides
(``chain.parent=[key=value, ...]``, signed like ``dora run`` would); the parent's signature then enters the
child's, so a grid can chain VQ-VAE -> masked pre-training -> classifier, or audio-to-audio -> ECoG-to-audio. The
parent must have finished (its last epoch holds test results); otherwise the child fails with an error naming the
parent and the command that trains it.
"""

from __future__ import annotations

import logging
import typing as tp
from pathlib import Path

import torch

from .base import CheckpointError, load_checkpoint

logger = logging.getLogger(__name__)


class ChainError(RuntimeError):
    """A parent XP is missing, unfinished or incompatible; the message names it and what to run."""


def _selected(key: str, modules: tp.Sequence[str] | None, exclude: tp.Sequence[str]) -> bool:
    def under(prefixes: tp.Sequence[str]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    return (modules is None or under(modules)) and not under(exclude)


def parent_state(folder: str | Path, sig: str) -> dict[str, tp.Any]:
    """The checkpoint of the finished parent XP in ``folder``; raises :class:`ChainError` otherwise."""
    path = Path(folder) / "checkpoint.th"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise ChainError(f"parent XP {sig} has no usable checkpoint ({exc}): train it first with "
                         f"`dora run -f {sig}` (or let its grid run it)") from exc
    history = ckpt.get("history") or []
    if not history or "test" not in history[-1]:
        raise ChainError(f"parent XP {sig} has not finished ({len(history)} epochs, no test results yet): run "
                         f"`dora run -f {sig}` to completion, then start this XP again")
    return ckpt


def load_from_parent(model: torch.nn.Module, ckpt: dict[str, tp.Any], sig: str,
                     modules: tp.Sequence[str] | None = None, exclude: tp.Sequence[str] = ()) -> list[str]:
    """Copy the parent's best state into ``model`` for keys under ``modules`` (None: all) and not under
    ``exclude``; returns the keys loaded.

    Raises :class:`ChainError` when a selected key is missing from either model or has another shape (e.g. a
    classification head of another size: exclude it).
    """
    source = ckpt.get("best_state") or ckpt["states"]["model"]
    target = model.state_dict()
    wanted = [k for k in source if _selected(k, modules, exclude)]
    if not wanted:
        raise ChainError(f"chain.modules={list(modules or [])} selects no weight of parent {sig}; its top-level "
                         f"modules are {sorted({k.split('.')[0] for k in source})}")
    missing = [k for k in wanted if k not in target]
    mismatched = [f"{k} {tuple(source[k].shape)} vs {tuple(target[k].shape)}" for k in wanted
                  if k in target and source[k].shape != target[k].shape]
    if missing or mismatched:
        raise ChainError(f"parent {sig} does not fit this model: missing {missing[:5]}, shapes differ for "
                         f"{mismatched[:5]}; restrict chain.modules or add those modules to chain.exclude")
    absent = [k for k in target if _selected(k, modules, exclude) and k not in source]
    if absent:
        raise ChainError(f"this model has weights {absent[:5]} under chain.modules that parent {sig} lacks")
    with torch.no_grad():
        for k in wanted:
            target[k].copy_(source[k])
    logger.info("started from parent XP %s: %d tensors loaded (%s%s)", sig, len(wanted),
                "all modules" if modules is None else ", ".join(modules),
                f" except {', '.join(exclude)}" if exclude else "")
    return wanted


__all__ = ["ChainError", "load_from_parent", "parent_state"]
