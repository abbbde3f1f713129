"""Stack finished classification XPs: a meta-learner fitted on their validation logits, scored on the test split,
side by side with each base model (F1-macro, balanced accuracy, top-1). See ``bm2/stacking.py`` for the method.

    python -m scripts.stack SIG1 SIG2 [SIG3 ...]       # base XPs (e.g. one per grouping level K), feature order
    python -m scripts.stack STACK_SIG                  # the bases a stacking XP names (stack.bases)
    python -m scripts.stack libribrain.demega          # every stacking XP of a grid scheduled by `dora grid`
    python -m scripts.stack SIG1 SIG2 --out stacks     # also write stacks/<name>/{stack.csv,stack.md,eval/}

Bases without ``eval/valid/logits.npy`` or ``eval/logits.npy`` are evaluated first from their checkpoints (data
paths from the current environment), unless ``--no-evaluate``. Exit status 1, with the reason, when a base is
missing or unfinished, or when the bases' items do not align (another evaluation grouping, seed or data).
"""

from __future__ import annotations

import argparse
import logging
import os
import typing as tp
from pathlib import Path

logger = logging.getLogger("scripts.stack")


def _is_stack(xp: tp.Any) -> bool:
    stack = xp.cfg.get("stack")
    return bool(stack and stack.bases)


def plan(xps: tp.Sequence[tp.Any], C: float) -> list[tuple[str, list[Path], float, tp.Any]]:
    """``(name, base folders, C, paths)`` of each stack to compute: one per stacking XP among ``xps``, plus one of
    the other XPs together when there is no stacking XP."""
    jobs = []
    for xp in xps:
        if _is_stack(xp):
            folders = [Path(xp.folder).parent / str(sig) for sig in xp.cfg.stack.bases]
            jobs.append((str(xp.sig), folders, float(xp.cfg.stack.C), xp.cfg.paths))
    bases = [xp for xp in xps if not _is_stack(xp)]
    if not jobs:
        jobs.append(("stack_" + "_".join(str(xp.sig) for xp in bases), [Path(xp.folder) for xp in bases], C,
                     bases[0].cfg.paths if bases else None))
    elif bases:
        logger.info("stacking XPs given: %d other XPs (%s) are not stacked together", len(bases),
                    ", ".join(str(xp.sig) for xp in bases))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="base XP signatures, stacking XP signatures and / or grid names")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression "
                        "(stacking XPs use their own stack.C)")
    parser.add_argument("--out", type=Path, default=None, help="write each stack into OUT/<name>/")
    parser.add_argument("--device", default="auto", help="where missing evaluations run: auto, cpu or cuda")
    parser.add_argument("--no-evaluate", action="store_true", help="fail instead of evaluating bases without logits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("BM2_NO_PROGRESS", "1")
    import mne
    import torch

    from bm2.stacking import StackError, stack_folders
    from bm2.tasks.evaluate import EvalError, find_xps

    mne.set_log_level("ERROR")
    torch.set_grad_enabled(False)
    try:
        xps = find_xps(args.targets)
    except EvalError as exc:
        parser.error(str(exc))
    failures = 0
    for name, folders, C, paths in plan(xps, args.C):
        try:
            result = stack_folders(folders, C=C, device=args.device, paths=paths, evaluate=not args.no_evaluate)
        except StackError as exc:
            logger.error("%s: %s", name, exc)
            failures += 1
            continue
        print(f"\n{name}:\n{result.markdown()}", flush=True)
        if args.out is not None:
            result.save(args.out / name, {"sig": name, "stack_of": [f.name for f in folders], "model": "stack",
                                          "split": "test"})
            logger.info("written to %s", args.out / name)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
