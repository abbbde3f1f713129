"""Download the files of a study: ``python -m scripts.download NAME [--root DIR] [--force] [key=value ...]``.

The sources come from the ``download:`` section of ``conf/config.yaml``; ``key=value`` arguments override it
(e.g. ``workers=8`` or ``gwilliams2022.projects=[ag3kj]``). The root defaults to ``$BM2_DATA/NAME`` (``./data/NAME``
when ``BM2_DATA`` is unset), the folder training reads. Interrupted downloads resume when run again; a complete
study returns at once. MOUS (``schoffelen2019``) reads its credentials from ``BM2_MOUS_USER`` /
``BM2_MOUS_PASSWORD``; LibriBrain (``libribrain2025``, from the Hugging Face hub) an optional token from ``HF_TOKEN``
(e.g. ``python -m scripts.download libribrain2025 'libribrain2025.books=[Sherlock1]' 'libribrain2025.grouped=[100]'``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing as tp
from pathlib import Path

from bm2.download import NOTHING_TO_DOWNLOAD, DownloadError, download_study, downloadable_studies

CONFIG = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"


def load_options(config: str | Path = CONFIG, overrides: tp.Sequence[str] = ()) -> dict[str, tp.Any]:
    """The ``download:`` section of ``config`` (empty if absent) with ``key=value`` overrides applied."""
    from omegaconf import OmegaConf

    section: tp.Any = OmegaConf.create({})
    path = Path(config)
    if path.exists():
        loaded = OmegaConf.load(path)
        if "download" in loaded:
            section = loaded.download
    elif Path(config) != CONFIG:
        raise FileNotFoundError(f"config file {config} does not exist")
    if overrides:
        section = OmegaConf.merge(section, OmegaConf.from_dotlist(list(overrides)))
    return tp.cast(dict, OmegaConf.to_container(section, resolve=True))


def default_root(name: str) -> Path:
    """``$BM2_DATA/name`` (``./data/name`` without ``BM2_DATA``), as in ``paths.data`` of the config."""
    return (Path(os.environ.get("BM2_DATA") or "data").expanduser() / name).resolve()


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and download; returns the exit status (errors are printed, not raised)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="NAME | key=value",
                        help=f"study names ({', '.join(downloadable_studies())}) and config overrides")
    parser.add_argument("--root", help="destination folder (only with one study); default $BM2_DATA/NAME")
    parser.add_argument("--config", default=str(CONFIG), help="config file holding the `download:` section")
    parser.add_argument("--force", action="store_true", help="check every file again even if marked complete")
    parser.add_argument("--list", action="store_true", help="list the studies that can be downloaded")
    parser.add_argument("-v", "--verbose", action="store_true")
    ns = parser.parse_intermixed_args(argv)  # names and key=value around the options
    names = [a for a in ns.args if "=" not in a]
    overrides = [a for a in ns.args if "=" in a]
    if ns.list:
        print("\n".join(downloadable_studies() + [f"{n} (nothing to download)" for n in NOTHING_TO_DOWNLOAD]))
        return 0
    if not names:
        parser.error(f"name a study: one of {downloadable_studies()}")
    if ns.root and len(names) > 1:
        parser.error("--root needs exactly one study")
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="[%(asctime)s][%(name)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    try:
        options = load_options(ns.config, overrides)
        for name in names:
            root = Path(ns.root).expanduser().resolve() if ns.root else default_root(name)
            download_study(name, root, options, force=ns.force)
            print(f"{name}: ready in {root}")
    except (DownloadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
