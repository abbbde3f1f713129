"""Where the test predictions of lee2024's triplet words land: correct, the synonym (semantic), the phonological
neighbour, the third word of the triplet, or outside (:func:`bm2.studies.lee2024.triplet_confusion`).

    python -m scripts.run_eval_probs SIG          # writes SIG's eval/items.csv first
    python -m scripts.lee2024_triplets SIG [SIG ...]   # one table, the XPs' test trials pooled (e.g. the 10 folds)
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from bm2 import results as R
from bm2.studies.lee2024 import triplet_confusion


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="grid names, XP signatures and / or XP folders (evaluated)")
    args = parser.parse_args(argv)
    try:
        results = R.load_all(args.targets)
    except R.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = [r["items"] for r in results if r.get("items") is not None and "prediction_name" in r["items"]]
    if not items:
        print("error: no classification items.csv among these XPs (run scripts.run_eval_probs first)", file=sys.stderr)
        return 2
    pooled = pd.concat(items)
    table = triplet_confusion(pooled["label_name"].tolist(), pooled["prediction_name"].tolist())
    print(table.to_markdown())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
