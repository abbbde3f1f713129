"""Evaluate trained XPs on their test split and write per-item outputs and a summary per XP.

    python -m scripts.run_eval_probs SIG [SIG ...]      # Dora signatures
    python -m scripts.run_eval_probs synthetic            # every XP of a grid (dora grid NAME ran before)
    python -m scripts.run_eval_probs SIG --split valid    # the validation split, into <xp folder>/eval/valid/
    python -m scripts.run_eval_probs SIG --tta --denoise  # classification: also with the inference add-ons
    python -m scripts.run_eval_probs SIG --tta --override test.tta.noise=0.05

For each XP, the model is rebuilt from its self-describing checkpoint (best state), the test split is rebuilt
from the checkpoint's config (data paths from the current environment), and the XP's task (``test.task``)
writes into ``<xp folder>/eval/`` its per-item outputs and ``summary.json`` (metrics overall and per group,
chance levels). Retrieval: ``probs.npy`` (softmax over the unique test candidates), ``candidates.csv``,
``segments.csv`` (per-segment metadata with stable content-hash ids and ranks), 95% bootstrap intervals.
Classification: ``items.csv``, ``probs.npy``, ``logits.npy``, ``confusion.csv``, ``per_class.csv``. Detection:
``timelines.npz``, ``recordings.csv``, ``items.csv``. Reconstruction: ``per_bin.csv``, ``items.csv``, ``audio/``.
``--tta`` / ``--denoise`` (classification) also evaluate with test-time augmentation and / or db4 wavelet
denoising (settings: the XP's ``test.tta`` / ``test.denoise``, defaults for older XPs, ``--override``): each
variant's outputs go to ``eval/tta/``, ``eval/denoise/``, ``eval/denoise_tta/`` and its metrics join
``eval/summary.json`` as ``f1_macro_tta`` ... next to the plain ones.
The logic lives in :mod:`bm2.tasks.evaluate`; this is its command line.
"""

from __future__ import annotations

import argparse
import logging


from bm2.tasks.evaluate import (EvalError, describe, eval_folder, evaluate_checkpoint, find_xps, get_main,
                                start_cli)

logger = logging.getLogger("scripts.run_eval_probs")

evaluate_xp = evaluate_checkpoint  # the name this script used before the logic moved into the package

__all__ = ["EvalError", "evaluate_xp", "find_xps", "get_main", "main"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="XP signatures and / or grid names")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-probs", action="store_true", help="do not write probs.npy (nor logits.npy)")
    parser.add_argument("--split", default="test", choices=("test", "valid", "train"),
                        help="the split to evaluate (test: into eval/, the others into eval/<split>/)")
    parser.add_argument("--tta", action="store_true", help="also evaluate with test-time augmentation (test.tta)")
    parser.add_argument("--denoise", action="store_true",
                        help="also evaluate with wavelet denoising of the inputs (test.denoise)")
    parser.add_argument("--override", action="append", default=[],
                        help="key=value applied to each XP's config before evaluating (e.g. test.tta.noise=0.05)")
    args = parser.parse_args(argv)
    xps = start_cli(parser, args.targets)
    failures = 0
    addons = [name for name in ("denoise", "tta") if getattr(args, name)]
    for xp in xps:
        try:
            result = evaluate_checkpoint(xp, args.device, keep_probs=not args.no_probs, batch_size=args.batch_size,
                                         split=args.split, addons=addons, overrides=args.override)
        except (EvalError, ValueError) as exc:
            logger.error("%s", exc)
            failures += 1
            continue
        logger.info("XP %s: %s -> %s", xp.sig, describe(result.task, result.metrics),
                    eval_folder(xp.folder, args.split))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
