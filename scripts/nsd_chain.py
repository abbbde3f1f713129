"""Run Neural Speech Decoding's chain for one participant (or several) locally, stage after stage, then print its
result table.

    python -m scripts.nsd_chain tiny --subject SY01                      # CPU, tiny sizes: seconds per stage
    python -m scripts.nsd_chain tiny --subject SY01 --decoders lstm --causal false   # a part of the chain
    python -m scripts.nsd_chain synthetic --subject SY01 optim.epochs=10  # extra overrides apply to every stage

The stages are those of the grid ``nsd.<GRID>`` (:func:`grids.nsd.plan`) for each participant given: a2a (speech
encoder + synthesizer) for each causal setting, then ECoG to audio with each decoder started from the a2a XP of the
same causal setting. Each stage runs as ``dora run`` with the grid's overrides, so it is the same XP (signature) as
``dora grid nsd.<GRID>`` signs: a finished stage is not run again, a killed one resumes. ``--dry-run`` prints the
signatures and commands only. XPs go to ``$BM2_XP_DIR`` as usual. Each stage is then evaluated in full
(``scripts.run_eval_probs``: ``<XP>/eval/`` gets the decoded test trials as WAV files and ``spectrograms.png``)
and the table gives each stage's test PCC (per bin, pooled; and per trial on the whole spectrogram) with the
trial-shuffled null, and STOI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _local_chain

COLUMNS = ("pcc", "pcc_null_mean", "pcc_trial", "pcc_trial_null_mean", "stoi", "n_windows")


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    from grids.nsd import DECODERS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid", help="tiny, small, synthetic or release (grids/nsd/<grid>.py)")
    parser.add_argument("--subject", required=True, nargs="+", help="participant id(s), e.g. SY01")
    parser.add_argument("--decoders", nargs="+", choices=DECODERS, default=None, help="only these ECoG decoders")
    parser.add_argument("--causal", nargs="+", type=_bool, default=None, help="only these causal settings")
    parser.add_argument("--dry-run", action="store_true", help="print the stages and commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every stage, e.g. optim.epochs=10")
    args = _local_chain.parse_args(parser, argv)
    updates = {k: v for k, v in (("decoders", args.decoders), ("causal", args.causal)) if v is not None}
    try:
        stages = _local_chain.stage_commands("nsd", args.grid, args.subject, args.overrides, updates)
    except (ValueError, KeyError, ModuleNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = _local_chain.run_stages(stages, args.dry_run)
    if code or args.dry_run:
        return code
    import pandas as pd

    from bm2 import results as R
    from bm2.train import main as dora_main

    from . import run_eval_probs

    # the full evaluation: the tables' metrics, WAV files and spectrogram figures in each XP's eval/ folder
    code = run_eval_probs.main([sig for _, sig, _ in stages])
    if code:
        return code

    rows = {}
    for key, sig, _ in stages:
        metrics = R.load_xp_results(Path(dora_main.get_xp_from_sig(sig).folder))["metrics"]
        rows[f"{key} ({sig})"] = {c: metrics.get(c, float("nan")) for c in COLUMNS}
    table = pd.DataFrame.from_dict(rows, orient="index").round(3)
    print(f"\nNeural Speech Decoding chain of participant(s) {' '.join(args.subject)}: test PCC (per bin, pooled; "
          "per trial, whole spectrogram) against the trial-shuffled null, STOI\n")
    print(R.to_markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
