"""List the registered studies and their metadata, or check one study's data on disk.

``python -m scripts.studies`` prints the table; ``python -m scripts.studies stats NAME [--root PATH]
[--option key=value ...] [--recordings]`` loads every recording of study NAME (headers and events, no signal)
and prints its channels, subjects, recordings, hours and events; ``--recordings`` adds one line per recording
with its event counts. Every recording's events are read and validated: a recording that cannot be read is
reported (file and reason) and the command exits with status 1, so a dataset that passes can be trained on.
"""

from __future__ import annotations

import argparse
import ast
import collections
import sys
import typing as tp

from bm2.studies import get_study_class, study_names, study_root

EVENT_KINDS = ("sound", "word", "phoneme", "block")


def table() -> str:
    """A markdown table of every registered study."""
    cols = ["name", "modality", "device", "language", "paradigm", "licence", "url"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name in study_names():
        meta = get_study_class(name).metadata()
        lines.append("| " + " | ".join(str(meta[c]) for c in cols) + " |")
    return "\n".join(lines)


def _value(text: str) -> tp.Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _option(item: str) -> tuple[list[str], tp.Any]:
    key, _, value = item.partition("=")
    return key.split("."), _value(value)


def parse_options(items: tp.Sequence[str]) -> dict[str, tp.Any]:
    """Study options from ``key=value`` items; dotted keys set nested options (``columns.sound=stim_file``)."""
    options: dict[str, tp.Any] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--option {item!r}: expected KEY=VALUE")
        keys, value = _option(item)
        node = options
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return options


def _describe(rec: tp.Any) -> str:
    where = getattr(rec, "bids_path", None) or getattr(rec, "path", None) or getattr(rec, "ds", None)
    name = getattr(where, "fpath", where)
    return f"sub-{rec.subject} ses-{rec.session} task-{rec.task}" + (f"  {getattr(name, 'name', name)}"
                                                                       if name is not None else "")


def stats(name: str, root: str | None = None, options: dict | None = None,
          recordings: bool = False) -> tuple[str, int]:
    """(report, number of recordings that failed) of study ``name``: channels (by type), subjects, recordings,
    hours and events; with ``recordings``, one line per recording with its event counts."""
    study = get_study_class(name)(study_root(name, override=root), **(options or {}))
    study.prepare()
    subjects, n_rec, seconds = set(), 0, 0.0
    channels: collections.Counter[str] = collections.Counter()
    events: collections.Counter[str] = collections.Counter()
    lines, failures = [], []
    for rec in study.iter_recordings():
        try:
            raw = rec.raw()
            ev = rec.events()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the command fails
            failures.append(f"  {_describe(rec)}: {type(exc).__name__}: {exc}")
            continue
        subjects.add(rec.subject)
        n_rec += 1
        duration = raw.n_times / raw.info["sfreq"]
        seconds += duration
        for kind, count in collections.Counter(raw.get_channel_types()).items():
            channels[kind] = max(channels[kind], count)
        counts = ev["kind"].value_counts()
        events.update({k: int(counts.get(k, 0)) for k in EVENT_KINDS})
        if recordings:
            per_kind = " ".join(f"{k}s={int(counts.get(k, 0))}" for k in EVENT_KINDS)
            lines.append(f"  {_describe(rec)}  {duration:.1f} s  bads={len(raw.info['bads'])}  {per_kind}")
    chans = ", ".join(f"{k} {v}" for k, v in sorted(channels.items()))
    report = [f"study {name} ({study.root})", f"channels: {chans}", f"subjects: {len(subjects)}",
              f"recordings: {n_rec}", f"hours: {seconds / 3600:.2f}",
              "events: " + ", ".join(f"{k} {events[k]}" for k in EVENT_KINDS)]
    if recordings:
        report += ["recordings (one per line):", *lines]
    if failures:
        report += [f"FAILED: {len(failures)} recording(s) cannot be read:", *failures]
    return "\n".join(report), len(failures)


def main(argv: list[str] | None = None) -> None:
    """Print the table, or the stats of one study (exit status 1 when a recording fails)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    st = sub.add_parser("stats", help="channels, subjects, recordings, hours and events of one study")
    st.add_argument("name")
    st.add_argument("--root", help="study root (default: $BM2_DATA/NAME)")
    st.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="study option, as in studies.NAME (dotted keys for nested ones: columns.sound=stim_file)")
    st.add_argument("--recordings", action="store_true", help="one line per recording with its event counts")
    args = parser.parse_args(argv)
    if args.command == "stats":
        report, failed = stats(args.name, args.root, parse_options(args.option), args.recordings)
        print(report)
        if failed:
            sys.exit(1)
    else:
        print(table())


if __name__ == "__main__":
    main()
