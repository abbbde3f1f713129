"""Evaluate trained XPs on their test split and write the probabilities, tables and a summary per XP.

    python -m scripts.run_eval_probs SIG [SIG ...]      # Dora signatures
    python -m scripts.run_eval_probs synthetic            # every XP of a grid (dora grid NAME ran before)

For each XP, the model is rebuilt from its self-describing checkpoint (best state), the test split is rebuilt
from the checkpoint's config (data paths from the current environment), and ``<xp folder>/eval/`` receives
``probs.npy`` (softmax over the unique test candidates), ``candidates.csv``, ``segments.csv`` (per-segment
metadata with stable content-hash ids and ranks) and ``summary.json`` (metrics overall, per subject and per
study, chance levels, 95% bootstrap intervals).
"""

from __future__ import annotations

import argparse
import logging
import os
import typing as tp
from pathlib import Path

import torch
from omegaconf import OmegaConf

logger = logging.getLogger("scripts.run_eval_probs")


class EvalError(RuntimeError):
    """An XP cannot be evaluated; the message says why and what to do."""


def get_main() -> tp.Any:
    """bm2's Dora main (the decorated ``bm2.train.main``)."""
    from bm2.train import main

    return main


def find_xps(targets: tp.Sequence[str]) -> list[tp.Any]:
    """Dora XPs for signatures and / or grid names, in order, without duplicates."""
    main = get_main()
    sigs: list[str] = []
    for target in targets:
        grid = main.dora.dir / main.dora._grids / target
        if grid.is_dir():
            children = sorted(p.name for p in grid.iterdir())
            if not children:
                raise EvalError(f"grid {target!r} has no XP in {grid}; run `dora grid {target}` first")
            sigs.extend(children)
        elif (main.dora.dir / main.dora.xps / target).is_dir():
            sigs.append(target)
        else:
            raise EvalError(f"{target!r} is neither an XP signature nor a grid name under {main.dora.dir} "
                            "(check `dora info -f SIG`, the grid name, or $BM2_XP_DIR)")
    unique = list(dict.fromkeys(sigs))
    return [main.get_xp_from_sig(sig) for sig in unique]


def evaluate_xp(xp: tp.Any, device: str = "auto", keep_probs: bool = True, batch_size: int = 128,
                num_workers: int = 0) -> tp.Any:
    """Evaluate one XP on its test split; returns the :class:`bm2.evaluation.RetrievalResult` (also saved)."""
    from bm2.builders import build_all_datasets, resolve_device
    from bm2.evaluation import get_task
    from bm2.losses import build_loss
    from bm2.models import model_from_spec
    from bm2.solvers.base import CheckpointError, load_checkpoint

    path = Path(xp.folder) / "checkpoint.th"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise EvalError(f"XP {xp.sig}: {exc}. Train it first (`dora run -f {xp.sig}`)") from exc
    if not ckpt.get("model_spec"):
        raise EvalError(f"XP {xp.sig}: the checkpoint does not describe its model (written by an older bm2)")
    cfg = OmegaConf.create(ckpt["config"])
    cfg.paths = xp.cfg.paths  # data may have moved: take paths from the current environment
    datasets = build_all_datasets(cfg)
    if len(datasets.test) == 0:
        raise EvalError(f"XP {xp.sig}: its test split is empty (selections {list(cfg.dset.selections)}, "
                        f"split {OmegaConf.to_container(cfg.dset.split)}); select more recordings or raise "
                        "dset.split.test")
    model = model_from_spec(ckpt["model_spec"])
    model.load_state_dict(ckpt["best_state"] or ckpt["states"]["model"])
    loss = build_loss(ckpt["loss_spec"]["name"], **ckpt["loss_spec"]["kwargs"])
    loss.load_state_dict(ckpt["states"]["loss"])
    dev = resolve_device(device)
    task = get_task(cfg.test.get("task", "retrieval"))
    result = task.evaluate(model.to(dev), datasets.test, getattr(loss.to(dev), "scores", None), ks=tuple(cfg.test.ks),
                           keep_probs=keep_probs, batch_size=batch_size, device=dev, num_workers=num_workers)
    meta = {"sig": xp.sig, "argv": list(xp.argv), "selections": list(cfg.dset.selections),
            "features": list(cfg.dset.features), "loss": cfg.loss.name, "model": cfg.model.name,
            "seed": int(cfg.seed), "epochs_trained": len(ckpt["history"])}
    result.save(Path(xp.folder) / "eval", meta)
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="XP signatures and / or grid names")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-probs", action="store_true", help="do not write probs.npy")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("BM2_NO_PROGRESS", "1")
    import mne

    mne.set_log_level("ERROR")
    torch.set_grad_enabled(False)
    try:
        xps = find_xps(args.targets)
    except EvalError as exc:
        parser.error(str(exc))
    failures = 0
    for xp in xps:
        try:
            result = evaluate_xp(xp, args.device, keep_probs=not args.no_probs, batch_size=args.batch_size)
        except EvalError as exc:
            logger.error("%s", exc)
            failures += 1
            continue
        m = result.metrics
        logger.info("XP %s: top-1 %.1f%% / top-10 %.1f%% (segment), top-1 %.1f%% / top-10 %.1f%% (word), "
                    "chance top-10 %.1f%%, %d segments, %d candidates -> %s", xp.sig, 100 * m["top1_segment"],
                    100 * m["top10_segment"], 100 * m["top1_word"], 100 * m["top10_word"],
                    100 * m["chance_top10_segment"], m["n_segments"], m["n_candidates"], Path(xp.folder) / "eval")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
