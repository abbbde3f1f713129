"""List the registered studies and their metadata: ``python -m scripts.studies``."""

from __future__ import annotations

import argparse

from bm2.studies import get_study_class, study_names


def table() -> str:
    """A markdown table of every registered study."""
    cols = ["name", "modality", "device", "language", "paradigm", "licence", "url"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name in study_names():
        meta = get_study_class(name).metadata()
        lines.append("| " + " | ".join(str(meta[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    argparse.ArgumentParser(description=__doc__).parse_args(argv)
    print(table())


if __name__ == "__main__":
    main()
