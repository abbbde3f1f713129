"""Chained XPs: start a model from another XP's best state (all of it or named sub-modules, optionally frozen).

A child names its parent by signature (``chain.parent=SIG``) or by the parent's overrides
(``chain.parent=[key=value, ...]``, signed like ``dora run`` would); the parent's signature then enters the
child's, so a grid can chain VQ-VAE -> masked pre-training -> classifier, or audio-to-audio -> ECoG-to-audio. The
parent must have finished (its last epoch holds test results); otherwise the child fails with an error naming the
parent and the command that trains it.

``chain.rename={SRC: DST}`` moves the parent's weights under prefix ``SRC`` to prefix ``DST`` before
``chain.modules`` / ``chain.exclude`` select them, for a child whose module lives under another name: e.g. Du-IN's
"VQ-VAE only" ablation starts the classifier's ``encoder`` from the VQ-VAE's ``vqvae.encoder``
(``chain.rename={vqvae.encoder: encoder} chain.modules=[encoder]``).
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


def _prefixes(keys: tp.Iterable[str], depth: int = 2) -> list[str]:
    """Module prefixes of state keys, up to ``depth`` levels (``vqvae``, ``vqvae.encoder`` ...), for messages."""
    out: set[str] = set()
    for key in keys:
        parts = key.split(".")[:-1]  # the last part names a tensor, not a module
        out.update(".".join(parts[:i]) for i in range(1, min(depth, len(parts)) + 1))
    return sorted(out)


def rename_keys(source: tp.Mapping[str, tp.Any], rename: tp.Mapping[str, str] | None, sig: str = "?"
                ) -> dict[str, tp.Any]:
    """``source`` (a state dict) with the keys under each prefix ``src`` of ``rename`` moved under ``rename[src]``
    (``a.b.w`` with ``{a.b: c}`` becomes ``c.w``; an empty ``dst`` strips the prefix); other keys unchanged. The
    longest matching prefix wins.

    Raises :class:`ChainError` when a prefix matches no key of parent ``sig`` (naming its module prefixes) or when
    two keys end up under one name (e.g. renaming ``vqvae.encoder`` to ``encoder`` in a parent that already has an
    ``encoder``, such as Du-IN's MAE).
    """
    if not rename:
        return dict(source)
    rules = sorted(((str(k).strip("."), str(v).strip(".")) for k, v in rename.items()), key=lambda r: -len(r[0]))
    for src, _ in rules:
        if not src or not any(k == src or k.startswith(src + ".") for k in source):
            raise ChainError(f"chain.rename: prefix {src!r} matches no weight of parent {sig}; its module prefixes "
                             f"are {_prefixes(source)}")
    out: dict[str, tp.Any] = {}
    origin: dict[str, str] = {}
    for key, value in source.items():
        new = key
        for src, dst in rules:
            if key == src or key.startswith(src + "."):
                rest = key[len(src) + 1:]
                new = f"{dst}.{rest}" if dst and rest else (dst or rest)
                break
        if new in out:
            raise ChainError(f"chain.rename={dict(rename)} maps both {origin[new]!r} and {key!r} of parent {sig} "
                             f"to {new!r}; rename the other module too or pick another target prefix")
        out[new], origin[new] = value, key
    return out


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
                     modules: tp.Sequence[str] | None = None, exclude: tp.Sequence[str] = (),
                     rename: tp.Mapping[str, str] | None = None) -> list[str]:
    """Copy the parent's best state into ``model`` for keys under ``modules`` (None: all) and not under
    ``exclude``, after moving the prefixes of ``rename`` (:func:`rename_keys`); returns the keys loaded (as named
    in ``model``).

    Raises :class:`ChainError` when a selected key is missing from either model or has another shape (e.g. a
    classification head of another size: exclude it), and as :func:`rename_keys` does.
    """
    source = rename_keys(ckpt.get("best_state") or ckpt["states"]["model"], rename, sig)
    target = model.state_dict()
    wanted = [k for k in source if _selected(k, modules, exclude)]
    if not wanted:
        raise ChainError(f"chain.modules={list(modules or [])} selects no weight of parent {sig}"
                         f"{' (after chain.rename)' if rename else ''}; its module prefixes are {_prefixes(source)}")
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
    logger.info("started from parent XP %s: %d tensors loaded (%s%s%s)", sig, len(wanted),
                "all modules" if modules is None else ", ".join(modules),
                f" except {', '.join(exclude)}" if exclude else "",
                "; renamed " + ", ".join(f"{k} -> {v}" for k, v in rename.items()) if rename else "")
    return wanted


__all__ = ["ChainError", "load_from_parent", "parent_state", "rename_keys"]
