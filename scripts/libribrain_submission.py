"""Write a LibriBrain 2025 submission file from a trained XP.

    python -m scripts.libribrain_submission SIG_OR_XP_FOLDER --out submission.csv
    python -m scripts.libribrain_submission SIG --out holdout.csv --split test --override 'dset.selections=[...]'

A phoneme XP (test.task=classification) gives ``segment_idx, phoneme_1..phoneme_39`` (probabilities in ARPABET
order, one row per segment of the split); a speech XP (test.task=detection) gives ``idx, speech_prob`` (one row per
sample of the split's recording). The logic lives in :mod:`bm2.tasks.submission`; this is its command line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bm2.tasks.submission import submission_from_xp


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("xp", help="an XP signature or an XP folder")
    parser.add_argument("--out", required=True, help="the CSV file to write")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--override", action="append", default=[], help="key=value applied to the XP's config")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--denoise", action="store_true", help="phonemes: wavelet-denoise the inputs (test.denoise)")
    parser.add_argument("--tta", action="store_true", help="phonemes: test-time augmentation (test.tta)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    xp: object = args.xp
    if not Path(args.xp).is_dir():
        from bm2.tasks.evaluate import find_xps

        xp = find_xps([args.xp])[0]
    table = submission_from_xp(xp, args.out, split=args.split, overrides=args.override, device=args.device,
                               batch_size=args.batch_size,
                               addons=[name for name in ("denoise", "tta") if getattr(args, name)])
    print(f"wrote {len(table)} rows x {table.shape[1]} columns to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
