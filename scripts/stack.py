"""Stack finished classification XPs: a meta-learner fitted on their validation logits, scored on the test split,
side by side with each base model (F1-macro, balanced accuracy, top-1). See ``bm2/stacking.py`` for the method.

The meta-learner is ``--meta mlp`` by default (the original DeMEGa's MLP, 5 seeds of which the best 3 by
cross-validated F1-macro on validation are averaged: ``bm2/stacking_mlp.py``) or ``--meta logistic`` (bm2's
alternative, ``--C``). A stacking XP's own ``stack.meta`` / ``stack.C`` / ``stack.mlp`` and ``seed`` are used for
it; ``--meta`` / ``--C`` / ``--seed`` set those of a stack of plain base XPs (``--seed``: by default the first base's
``seed``, so that a stack of the bases of a stacking XP repeats it).

    python -m scripts.stack SIG1 SIG2 [SIG3 ...]       # base XPs (e.g. one per grouping level K), feature order
    python -m scripts.stack STACK_SIG                  # the bases a stacking XP names (stack.bases)
    python -m scripts.stack libribrain.demega          # every stacking XP of a grid scheduled by `dora grid`
    python -m scripts.stack SIG1 SIG2 --out stacks     # also write stacks/<name>/{stack.csv,stack.md,eval/}
    python -m scripts.stack SIG1 SIG2 --meta logistic  # bm2's logistic-regression meta-learner instead of the MLP

Bases without ``eval/valid/logits.npy`` or ``eval/logits.npy`` are evaluated first from their checkpoints (data
paths from the current environment), unless ``--no-evaluate``. Exit status 1, with the reason, when a base is
missing or unfinished, or when the bases' items do not align (another evaluation grouping, seed or data).
"""

from __future__ import annotations

import argparse
import logging
import typing as tp
from pathlib import Path

logger = logging.getLogger("scripts.stack")


def _is_stack(xp: tp.Any) -> bool:
    stack = xp.cfg.get("stack")
    return bool(stack and stack.bases)


def plan(xps: tp.Sequence[tp.Any], C: float = 1.0, meta: str = "mlp", seed: int | None = None
         ) -> list[tuple[str, list[Path], dict[str, tp.Any], tp.Any]]:
    """``(name, base folders, meta-learner options, paths)`` of each stack to compute: one per stacking XP among
    ``xps`` (its own ``stack.*`` and ``seed``), plus one of the other XPs together when there is no stacking XP
    (``meta``, ``C``, ``seed`` or else the first base's seed, and the config's ``stack.mlp``)."""
    from bm2.stacking import meta_options

    jobs = []
    for xp in xps:
        if _is_stack(xp):
            folders = [Path(xp.folder).parent / str(sig) for sig in xp.cfg.stack.bases]
            jobs.append((str(xp.sig), folders, meta_options(xp.cfg), xp.cfg.paths))
    bases = [xp for xp in xps if not _is_stack(xp)]
    if not jobs:
        options: dict[str, tp.Any] = {"meta": meta, "C": C, "seed": 0 if seed is None else seed, "mlp": {}}
        if bases:
            options = {**meta_options(bases[0].cfg), "meta": meta, "C": C}
            if seed is not None:
                options["seed"] = seed
        jobs.append(("stack_" + "_".join(str(xp.sig) for xp in bases), [Path(xp.folder) for xp in bases], options,
                     bases[0].cfg.paths if bases else None))
    elif bases:
        logger.info("stacking XPs given: %d other XPs (%s) are not stacked together", len(bases),
                    ", ".join(str(xp.sig) for xp in bases))
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="base XP signatures, stacking XP signatures and / or grid names")
    parser.add_argument("--meta", choices=("mlp", "logistic"), default="mlp",
                        help="meta-learner: mlp (default, the original DeMEGa's) or logistic (bm2's alternative); "
                        "stacking XPs use their own stack.meta")
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression "
                        "(--meta logistic; stacking XPs use their own stack.C)")
    parser.add_argument("--seed", type=int, default=None, help="first seed of the MLP meta-learner (default: the "
                        "first base's seed; stacking XPs use their own seed)")
    parser.add_argument("--out", type=Path, default=None, help="write each stack into OUT/<name>/")
    parser.add_argument("--device", default="auto", help="where missing evaluations run: auto, cpu or cuda")
    parser.add_argument("--no-evaluate", action="store_true", help="fail instead of evaluating bases without logits")
    args = parser.parse_args(argv)
    from bm2.stacking import StackError, describe_meta, stack_folders
    from bm2.tasks.evaluate import start_cli

    xps = start_cli(parser, args.targets)
    failures = 0
    for name, folders, options, paths in plan(xps, args.C, args.meta, args.seed):
        try:
            result = stack_folders(folders, device=args.device, paths=paths, evaluate=not args.no_evaluate, **options)
        except StackError as exc:
            logger.error("%s: %s", name, exc)
            failures += 1
            continue
        print(f"\n{name}:\n{result.markdown()}", flush=True)
        if args.out is not None:
            result.save(args.out / name, {"sig": name, "stack_of": [f.name for f in folders], "model": "stack",
                                          "split": "test", "meta_learner": describe_meta(result.meta)})
            logger.info("written to %s", args.out / name)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
