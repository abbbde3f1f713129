"""Run Du-IN's whole chain for one subject (or several) locally, stage after stage, then print its result table.

    python -m scripts.duin_chain tiny --subject 001               # CPU, tiny sizes: seconds per stage
    python -m scripts.duin_chain tiny --subject 001 --multi       # + the multi-subject pre-training variant
    python -m scripts.duin_chain small --subject 001 002 003 --multi      # the README's measurement
    python -m scripts.duin_chain synthetic --subject 001 optim.epochs=20   # extra overrides apply to every stage

The stages are those of the grid ``duin.<GRID>`` (:func:`grids.duin.plan`) for each subject given: VQ-VAE, MAE, and
the classifiers without pre-training, from the VQ-VAE's encoder and from the MAE, and braindecode's EEGConformer
(no pre-training; needs ``pip install bm2[zoo]``) on the same trials (with ``--multi``: the VQ-VAE and
MAE pre-trained on all subjects, once, and each subject's classifier started from them). Each stage runs as
``dora run`` with the grid's overrides, so it is the same XP (signature) as ``dora grid duin.<GRID>`` signs: a
finished stage is not run again, a killed one resumes. ``--dry-run`` prints the signatures and commands only. XPs
go to ``$BM2_XP_DIR`` as usual.
"""

from __future__ import annotations

import argparse
import sys
import typing as tp
from pathlib import Path

from . import _local_chain


def stage_commands(grid: str, subjects: tp.Sequence[str], multi: bool = False, extra: tp.Sequence[str] = ()
                   ) -> list[tuple[str, str, list[str]]]:
    """``(stage key, signature, dora run argv)`` of each stage of ``subjects`` in the grid ``duin.<grid>``, parents
    first (with ``multi``, the multi-subject pre-training too); ``extra`` overrides are added to every stage (and
    so enter every signature).

    Raises ``ValueError`` when a subject is not one of the grid's subjects."""
    from grids.duin import ALL

    return _local_chain.stage_commands("duin", grid, subjects, extra, {"multi_subject": bool(multi)}, also=(ALL,))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="tiny or synthetic (grids/duin/<grid>.py)")
    parser.add_argument("--subject", required=True, nargs="+", help="subject id(s), e.g. 001")
    parser.add_argument("--multi", action="store_true", help="add the multi-subject pre-training variant")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every stage, e.g. optim.epochs=20")
    args = _local_chain.parse_args(parser, argv)
    try:
        stages = stage_commands(args.grid, args.subject, args.multi, args.overrides)
    except (ValueError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = _local_chain.run_stages(stages, args.dry_run)
    if code:
        return code
    if args.dry_run:
        return 0
    from bm2 import results as R
    from bm2.train import main as dora_main

    folders = [Path(dora_main.get_xp_from_sig(sig).folder) for key, sig, _ in stages if "/cls_" in key]
    table = R.chain_table(R.load_chain(folders))
    print(f"\nDu-IN chain of subject(s) {' '.join(args.subject)}: test top-1 / top-5 (%), mean ± s.e. over subjects, "
          "validation-only model selection\n")
    print(R.to_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
