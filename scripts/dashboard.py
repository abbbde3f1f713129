"""Write a static HiPlot dashboard (one HTML file) of a grid or of XP signatures.

    python -m scripts.dashboard synthetic -o dashboard.html
    python -m scripts.dashboard 1a2b3c4d 5e6f7a8b --explorer ClipHP
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def build(targets: list[str], explorer: str = "ClipHP"):
    """The ``hiplot.Experiment`` of ``targets`` (grid names or signatures), as ``dora.hiplot.load`` builds it."""
    os.environ.setdefault("DORA_PACKAGE", "bm2")
    from dora.hiplot import load

    return load(" ".join(targets + [f"explorer={explorer}"]))


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the experiment and write the HTML file."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", help="grid names and/or XP signatures")
    parser.add_argument("-o", "--output", default="dashboard.html", help="HTML file to write")
    parser.add_argument("--explorer", default="ClipHP", help="class in grids/_hiplot.py")
    args = parser.parse_args(argv)
    exp = build(args.targets, args.explorer)
    if not exp.datapoints:
        raise SystemExit(f"no XP found for {args.targets}: a grid name works once `dora grid NAME` has scheduled its "
                         "XPs (a `--dry_run --init` links none: pass the signatures it printed instead); check the "
                         "signatures with `dora info -f SIG`")
    out = Path(args.output)
    exp.to_html(str(out))
    print(f"wrote {out} ({len(exp.datapoints)} points)")


if __name__ == "__main__":
    main()
