"""List the registered studies and their metadata, or summarise one study's data on disk.

``python -m scripts.studies`` prints the table; ``python -m scripts.studies stats NAME [--root PATH]
[--option key=value ...]`` prints channels, subjects, recordings and hours of study NAME.
"""

from __future__ import annotations

import argparse
import ast
import collections

from bm2.studies import get_study_class, study_names, study_root


def table() -> str:
    """A markdown table of every registered study."""
    cols = ["name", "modality", "device", "language", "paradigm", "licence", "url"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name in study_names():
        meta = get_study_class(name).metadata()
        lines.append("| " + " | ".join(str(meta[c]) for c in cols) + " |")
    return "\n".join(lines)


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def stats(name: str, root: str | None = None, options: dict | None = None) -> str:
    """Channels (by type), subjects, recordings and hours of study ``name`` (headers only, no data loaded)."""
    study = get_study_class(name)(study_root(name, override=root), **(options or {}))
    study.prepare()
    subjects, n_rec, seconds = set(), 0, 0.0
    channels: collections.Counter[str] = collections.Counter()
    for rec in study.iter_recordings():
        raw = rec.raw()
        subjects.add(rec.subject)
        n_rec += 1
        seconds += raw.n_times / raw.info["sfreq"]
        for kind, count in collections.Counter(raw.get_channel_types()).items():
            channels[kind] = max(channels[kind], count)
    chans = ", ".join(f"{k} {v}" for k, v in sorted(channels.items()))
    return (f"study {name} ({study.root})\nchannels: {chans}\nsubjects: {len(subjects)}\n"
            f"recordings: {n_rec}\nhours: {seconds / 3600:.2f}")


def main(argv: list[str] | None = None) -> None:
    """Print the table, or the stats of one study."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    st = sub.add_parser("stats", help="channels, subjects, recordings and hours of one study")
    st.add_argument("name")
    st.add_argument("--root", help="study root (default: $BM2_DATA/NAME)")
    st.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="study option")
    args = parser.parse_args(argv)
    if args.command == "stats":
        options = dict(o.split("=", 1) for o in args.option)
        print(stats(args.name, args.root, {k: _value(v) for k, v in options.items()}))
    else:
        print(table())


if __name__ == "__main__":
    main()
