"""Evaluate trained XPs from their checkpoints: rebuild the model and the test split, run the XP's task, save.

``python -m scripts.run_eval_probs`` is the command line of this module; :mod:`bm2.results` finds XPs through
:func:`find_xps`. For each XP the model is rebuilt from its self-describing checkpoint (best state), the splits
from the checkpoint's config (data paths from the current environment), and the task named by the config's
``test.task`` writes its per-item outputs and ``summary.json`` into ``<xp folder>/eval/``.

Inference add-ons (classification: ``test.denoise``, ``test.tta``; :mod:`bm2.tasks.inference`) enabled in the
XP's config, or switched on here (``addons=("denoise", "tta")``, the command line's ``--denoise`` / ``--tta``), are
evaluated too: each variant's outputs go to ``eval/<variant>/`` (``eval/tta/`` ...) and its metrics join the plain
ones in ``eval/summary.json`` under the variant's suffix (``f1_macro_tta`` ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import typing as tp
from pathlib import Path

import torch

from . import get_task
from .classification import ADDON_ROWS, addon_metrics

if tp.TYPE_CHECKING:
    from omegaconf import DictConfig

logger = logging.getLogger(__name__)


class EvalError(RuntimeError):
    """An XP cannot be evaluated; the message says why and what to do."""


def get_main() -> tp.Any:
    """bm2's Dora main (the decorated ``bm2.train.main``)."""
    from ..train import main

    return main


def start_cli(parser: tp.Any, targets: tp.Sequence[str]) -> list[tp.Any]:
    """The shared start of the evaluation command lines (``scripts.run_eval_probs``, ``scripts.stack``): log
    messages plainly, no progress bars unless ``BM2_NO_PROGRESS`` is set otherwise, mne quiet, autograd off; returns
    the XPs of ``targets`` (:func:`find_xps`), or exits through ``parser.error`` naming what was not found."""
    import mne

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("BM2_NO_PROGRESS", "1")
    mne.set_log_level("ERROR")
    torch.set_grad_enabled(False)
    try:
        return find_xps(targets)
    except EvalError as exc:
        parser.error(str(exc))
        raise  # parser.error exits; for type checkers


def find_xps(targets: tp.Sequence[str]) -> list[tp.Any]:
    """Dora XPs for signatures and / or grid names, in order, without duplicates."""
    main = get_main()
    sigs: list[str] = []
    for target in targets:
        grid = main.dora.dir / main.dora._grids / target
        if grid.is_dir():
            children = sorted(p.name for p in grid.iterdir())
            if not children:
                raise EvalError(f"grid {target!r} has no XP in {grid}: `dora grid {target}` links its XPs there "
                               "when it schedules them; after `--dry_run --init` (no scheduler) pass the XPs' "
                               "signatures instead (the dry run prints them)")
            sigs.extend(children)
        elif (main.dora.dir / main.dora.xps / target).is_dir():
            sigs.append(target)
        else:
            raise EvalError(f"{target!r} is neither an XP signature nor a grid name under {main.dora.dir} "
                            "(check `dora info -f SIG`, the grid name, or $BM2_XP_DIR)")
    unique = list(dict.fromkeys(sigs))
    return [main.get_xp_from_sig(sig) for sig in unique]


@dataclasses.dataclass
class Rebuilt:
    """What :func:`rebuild` makes of a checkpoint: the trained model, the splits and the task's extra arguments."""

    model: torch.nn.Module
    datasets: tp.Any
    options: dict[str, tp.Any]
    inference: tuple[tp.Any, ...] = ()


def rebuild(ckpt: dict[str, tp.Any], cfg: DictConfig, device: str, addons: tp.Sequence[str] = ()) -> Rebuilt:
    """The model (best state, on ``device``), the datasets, the task's options and the inference add-on variants
    of a checkpoint.

    The only place of the evaluation that calls the builders: when the way a config becomes objects changes,
    this is the function to adapt. ``options`` are keyword arguments of the task's ``evaluate``: the trained
    objective's ``scorer`` for retrieval, the training split (class prior) for the other tasks. ``addons``
    (``denoise``, ``tta``) switches those add-ons on over the config's ``enabled``.
    """
    from ..builders import build_all_datasets, build_inference
    from ..models import model_from_spec
    from ..objectives import build_objective

    datasets = build_all_datasets(cfg)
    model = model_from_spec(ckpt["model_spec"])
    model.load_state_dict(ckpt["best_state"] or ckpt["states"]["model"])
    task = str(cfg.test.get("task", "retrieval"))
    inference = build_inference(cfg, get_task(task), force=addons)  # before the data: bad settings fail fast
    if task == "retrieval":
        spec = ckpt["loss_spec"]
        objective = build_objective(spec["name"], weights=spec.get("weights") or None, **spec["kwargs"])
        objective.load_state_dict(ckpt["states"]["loss"])
        options: dict[str, tp.Any] = {"scorer": getattr(objective.to(device), "scores", None)}
    else:
        options = {"train": datasets.train}
    return Rebuilt(model.to(device), datasets, options, inference)


def xp_meta(sig: str, argv: tp.Sequence[str], cfg: DictConfig, ckpt: dict[str, tp.Any]) -> dict[str, tp.Any]:
    """The ``meta`` of ``summary.json``: what the result tables label and group XPs by."""
    return {"sig": sig, "argv": list(argv), "selections": list(cfg.dset.selections),
            "features": list(cfg.dset.features), "loss": cfg.loss.name, "model": cfg.model.name,
            "seed": int(cfg.seed), "epochs_trained": len(ckpt["history"])}


def _xp_identity(xp: tp.Any) -> tuple[str, Path, list[str], tp.Any]:
    """Signature, folder, argv and current ``paths`` config (or None) of a Dora XP or an XP folder."""
    if isinstance(xp, (str, Path)):
        folder = Path(xp)
        argv_path = folder / ".argv.json"
        argv = json.loads(argv_path.read_text()) if argv_path.exists() else []
        return folder.name, folder, list(argv), None
    return str(xp.sig), Path(xp.folder), list(xp.argv), xp.cfg.paths


def eval_folder(folder: str | Path, split: str = "test") -> Path:
    """Where :func:`evaluate_checkpoint` writes the evaluation of ``split`` of the XP in ``folder``: ``eval/`` for
    the test split (what the tables and reports read), ``eval/<split>/`` for the others."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be train, valid or test, got {split!r}")
    return Path(folder) / "eval" if split == "test" else Path(folder) / "eval" / split


def checkpoint_config(ckpt: dict[str, tp.Any], paths: tp.Any = None, overrides: tp.Sequence[str] = ()) -> tp.Any:
    """The configuration an XP was trained with (from its checkpoint), its data paths replaced by ``paths`` (a
    ``paths`` config) or else by ``$BM2_DATA`` / ``$BM2_CACHE`` when set (data may have moved), then ``overrides``
    (``key=value``) applied."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(ckpt["config"])
    if paths is not None:
        cfg.paths = paths
    else:
        for key, var in (("data", "BM2_DATA"), ("cache", "BM2_CACHE")):
            if os.environ.get(var) and "paths" in cfg:
                cfg.paths[key] = os.environ[var]
    if overrides:
        cfg = tp.cast(tp.Any, OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides))))
    return cfg


def evaluate_checkpoint(xp: tp.Any, device: str = "auto", keep_probs: bool = True, batch_size: int = 128,
                        num_workers: int = 0, split: str = "test", paths: tp.Any = None,
                        addons: tp.Sequence[str] = (), overrides: tp.Sequence[str] = ()) -> tp.Any:
    """Evaluate one XP (a Dora XP or an XP folder) on its ``split`` (test by default) with its task; returns the
    task's result, also saved in :func:`eval_folder` (``<xp folder>/eval/`` for test). ``paths`` (a ``paths``
    config) replaces the data paths of an XP given by its folder (default: the checkpoint's, with
    ``$BM2_DATA`` / ``$BM2_CACHE`` when set). ``addons`` (``denoise``, ``tta``) switches inference add-ons on
    (module docstring: each variant into ``<eval folder>/<variant>/``); ``overrides`` (``key=value``, e.g.
    ``test.tta.noise=0.05``) are applied to the checkpoint's config first. Raises :class:`EvalError` without a
    checkpoint or with an empty split, ``ValueError`` for add-ons on a task other than classification."""
    from omegaconf import OmegaConf

    from ..builders import resolve_device
    from ..solvers.base import CheckpointError, load_checkpoint

    out = eval_folder(".", split)  # checks the split's name before anything is built
    sig, folder, argv, xp_paths = _xp_identity(xp)
    paths = xp_paths if paths is None else paths
    try:
        ckpt = load_checkpoint(folder / "checkpoint.th")
    except CheckpointError as exc:
        raise EvalError(f"XP {sig}: {exc}. Train it first (`dora run -f {sig}`)") from exc
    if not ckpt.get("model_spec"):
        raise EvalError(f"XP {sig}: the checkpoint does not describe its model (written by an older bm2)")
    cfg = checkpoint_config(ckpt, paths, overrides)
    dev = resolve_device(device)
    rebuilt = rebuild(ckpt, cfg, dev, addons)
    dataset = getattr(rebuilt.datasets, split)
    if len(dataset) == 0:
        raise EvalError(f"XP {sig}: its {split} split is empty (selections {list(cfg.dset.selections)}, "
                        f"split {OmegaConf.to_container(cfg.dset.split)}); select more recordings or raise "
                        f"dset.split.{split}")
    task = get_task(str(cfg.test.get("task", "retrieval")))
    meta = {**xp_meta(sig, argv, cfg, ckpt), "split": split}
    if overrides:
        meta["overrides"] = list(overrides)  # this evaluation is not the XP's own: tables and stacking can tell
    result = task.evaluate(rebuilt.model, dataset, ks=tuple(cfg.test.ks), keep_probs=keep_probs,
                           batch_size=batch_size, device=dev, num_workers=num_workers, **rebuilt.options)
    for variant in rebuilt.inference:
        extra = task.evaluate(rebuilt.model, dataset, ks=tuple(cfg.test.ks), keep_probs=keep_probs,
                              batch_size=batch_size, device=dev, num_workers=num_workers, addons=variant,
                              **rebuilt.options)
        extra.save(folder / out / variant.name, {**meta, "inference": variant.settings()})
        result.metrics = addon_metrics(result.metrics, extra.metrics, variant.suffix)
        logger.info("XP %s, %s: %s", sig, variant.describe(), describe(task.name, extra.metrics))
    if rebuilt.inference:
        meta["inference"] = {v.name: v.settings() for v in rebuilt.inference}
    result.save(folder / out, meta)
    return result


def describe(task: str, metrics: dict[str, float]) -> str:
    """One log line of a task's headline test metrics (retrieval keeps its historical wording)."""
    m = metrics
    if task == "retrieval":
        return (f"top-1 {100 * m['top1_segment']:.1f}% / top-10 {100 * m['top10_segment']:.1f}% (segment), "
                f"top-1 {100 * m['top1_word']:.1f}% / top-10 {100 * m['top10_word']:.1f}% (word), "
                f"chance top-10 {100 * m['chance_top10_segment']:.1f}%, {m['n_segments']:.0f} segments, "
                f"{m['n_candidates']:.0f} candidates")
    parts = []
    headline = list(get_task(task).headline)
    # every top-k level the XP computed (e.g. lee2024's top-10), in order of k, then the other headline metrics
    topk = sorted({k for k in [*headline, *m] if re.fullmatch(r"top\d+", k)}, key=lambda k: int(k[3:]))
    for key in topk + [k for k in headline if k not in topk]:
        if key not in m:
            continue
        value = m[key]
        text = f"{value:.3f}" if key.startswith(("pcc", "stoi")) else f"{100 * value:.1f}%"
        chance = m.get(f"chance_{key}")
        if chance is not None:
            text += f" (chance {chance:.3f})" if key.startswith("pcc") else f" (chance {100 * chance:.1f}%)"
        parts.append(f"{key} {text}")
    for suffix, label in ADDON_ROWS[1:]:
        if f"f1_macro{suffix}" in m:
            parts.append(f"with {label}: f1_macro {100 * m[f'f1_macro{suffix}']:.1f}%, balanced_accuracy "
                         f"{100 * m[f'balanced_accuracy{suffix}']:.1f}%")
    return f"{task}: " + ", ".join(parts)
