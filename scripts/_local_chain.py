"""Run a chained grid's stages locally, parents first, each as ``dora run`` with the grid's overrides (so each is the
same XP, same signature, as ``dora grid`` signs: a finished stage is not run again, a killed one resumes).

Used by :mod:`scripts.duin_chain` and :mod:`scripts.nsd_chain`. A chained grid package (``grids/<package>/``) has
``plan(**CHAIN)`` returning stages (``key``, ``subject``, ``overrides``, ``parent`` and optionally ``chain``, the
other ``chain.*`` keys) and grid modules ``grids/<package>/<grid>.py`` with ``BASE`` (overrides of every XP) and
``CHAIN`` (``plan``'s arguments, with ``subjects``).
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
import typing as tp
from pathlib import Path


def parse_args(parser: tp.Any, argv: tp.Sequence[str] | None) -> tp.Any:
    """``parser.parse_args`` with every ``key=value`` argument taken as an override wherever it stands, so that
    ``--subject SY01 optim.epochs=10`` works (``--subject`` takes several ids and would swallow it otherwise). The
    parser must have a positional ``overrides`` (``nargs="*"``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = list(args.overrides) + overrides
    return args


def stage_commands(package: str, grid: str, subjects: tp.Sequence[str], extra: tp.Sequence[str] = (),
                   chain_updates: tp.Mapping[str, tp.Any] | None = None, also: tp.Sequence[str] = ()
                   ) -> list[tuple[str, str, list[str]]]:
    """``(stage key, signature, dora run argv)`` of each stage of ``subjects`` (and of the pseudo-subjects
    ``also``, e.g. Du-IN's ``all``) in the grid ``<package>.<grid>``, parents first; ``chain_updates`` replace
    arguments of the grid's ``CHAIN``; ``extra`` overrides are added to every stage, after the grid's own (so they
    win, and enter every signature).

    Raises ``ValueError`` for an unknown grid or a subject that is not one of the grid's subjects."""
    from bm2.train import main

    folder = Path(__file__).resolve().parents[1] / "grids" / package
    grids = sorted(f.stem for f in folder.glob("[a-z]*.py"))
    if grid not in grids:
        raise ValueError(f"unknown {package} grid {grid!r}; the grids are {grids} (grids/{package}/<grid>.py)")
    module = importlib.import_module(f"grids.{package}.{grid}")
    plan = importlib.import_module(f"grids.{package}").plan
    chain = {**module.CHAIN, **(chain_updates or {})}
    known = [str(s) for s in chain["subjects"]]
    unknown = [s for s in subjects if s not in known]
    if unknown:
        raise ValueError(f"subjects {unknown} are not in grid {package}.{grid}; its subjects are {known}")
    base = main.value_to_argv(dict(module.BASE))
    sigs: dict[str, str] = {}
    out = []
    for st in plan(**chain):
        if st.subject not in (*subjects, *also):
            continue
        # the caller's overrides last: given explicitly, they must win over the grid's (a stage's own optim.epochs
        # once silently replaced a user's)
        argv = base + main.value_to_argv(st.overrides) + list(extra)
        if st.parent is not None:
            argv += main.value_to_argv({"chain.parent": sigs[st.parent],
                                        **{f"chain.{k}": v for k, v in getattr(st, "chain", {}).items()}})
        sigs[st.key] = str(main.get_xp(argv).sig)
        out.append((st.key, sigs[st.key], argv))
    return out


def run_stages(stages: tp.Sequence[tuple[str, str, list[str]]], dry_run: bool = False) -> int:
    """Print each stage's command and run it with ``dora run`` unless ``dry_run``; stops at the first failure and
    returns its exit code (0 when all ran)."""
    dora = str(Path(sys.executable).parent / "dora")
    for key, sig, argv in stages:
        print(f"== {key} (XP {sig}): dora run {shlex.join(argv)}", flush=True)  # quoted: pastes into a shell
        if dry_run:
            continue
        proc = subprocess.run([dora, "run", *argv])
        if proc.returncode != 0:
            print(f"error: stage {key} (XP {sig}) failed; rerun this command to resume it", file=sys.stderr)
            return proc.returncode
    return 0


__all__ = ["run_stages", "stage_commands"]
