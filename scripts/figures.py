"""Draw the standard figures of evaluated XPs as PNG files.

    python -m scripts.figures synthetic --out figures
    python -m scripts.figures SIG1 SIG2 --metric top1_segment --kmax 20

Writes to ``--out``: for retrieval XPs ``topk_segment.png`` and ``topk_word.png`` (top-k accuracy for
k = 1..kmax of every XP, one panel per study, against chance k / n_candidates and the word-frequency prior);
``subjects_<metric>.png`` (per-subject ``--metric``, default the main metric of the XPs' task, mean ± sd over
seeds per configuration); ``confusion.png`` (classification: row-normalised confusion matrices),
``timelines.png`` (detection: speech probability against the truth) and ``bins.png`` (reconstruction: r per
feature bin against the shuffled null); and ``training.png`` (train / valid loss per epoch, one panel per
configuration). XPs must have been evaluated first (``python -m scripts.run_eval_probs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window

from bm2 import results as R  # noqa: E402

from scripts.make_tables import add_common_arguments  # noqa: E402


def write_figures(results: list[R.Result], out: Path, metric: str | None = None, kmax: int = 50,
                  label: list[str] | None = None, dpi: int = 100) -> dict[str, Path]:
    """Save :func:`bm2.results.make_figures` as ``<out>/<name>.png``; returns the paths by name."""
    metric = R.resolve_metric(results, metric)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, fig in R.make_figures(results, metric, kmax, label).items():
        paths[name] = out / f"{name}.png"
        paths[name].write_bytes(R.figure_png(fig, dpi))
    return paths


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default="figures", help="output folder (default ./figures)")
    parser.add_argument("--kmax", type=int, default=50, help="largest k of the top-k curves")
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args(argv)
    try:
        paths = write_figures(R.load_all(args.targets), Path(args.out), args.metric, args.kmax, args.label,
                              args.dpi)
    except R.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
