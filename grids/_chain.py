"""Chained stages in a grid: a child XP starts from its parent's best state, and runs after it on SLURM.

    from ._chain import stage
    pre = stage(launcher, {"loss.name": "clip"})                                   # parent: its signature
    stage(launcher, {"recipe": "word_classification"}, parent=pre, exclude=["head"])  # child of ``pre``

The child gets ``chain.parent=<parent sig>`` (so the parent's signature enters the child's) and the other
``chain.*`` keys. When ``dora grid`` submits a child whose parent's job is still pending or running, the child's
job is submitted with the SLURM dependency ``afterok:<parent job id>``: it starts only once the parent finished
(and is cancelled if the parent fails: rerun the grid after fixing the parent). A parent that finished before is
not waited for; running the grid again picks up finished stages (Dora does not rerun completed XPs). Outside
SLURM (``--dry_run --init``), run the parent with ``dora run -f SIG`` first: a child started before its parent
finished fails with an error naming the parent.

Dora has no per-XP dependency setting, so this module wraps ``Shepherd._get_submitit_executor`` (a private Dora
method, checked against dora-search 0.1.13 by the SLURM integration test) to add the dependency at submission.
"""

from __future__ import annotations

import logging
import typing as tp

logger = logging.getLogger(__name__)

# In this ``dora grid`` process: child signature -> parent signature, and each stage's argv and Dora main.
_PARENTS: dict[str, str] = {}
_STAGES: dict[str, tuple[tp.Any, list[str]]] = {}
# Job states after which a dependency can never be satisfied or is not needed.
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def stage(launcher: tp.Any, overrides: dict | None = None, parent: str | None = None, **chain: tp.Any) -> str:
    """Schedule one stage with ``overrides``; with ``parent`` (a signature returned by an earlier ``stage``),
    start from it (``chain`` keys: ``modules``, ``exclude``, ``freeze``). Returns the stage's signature."""
    sub = launcher.bind(overrides or {})
    if parent is not None:
        # Dora writes string values JSON-quoted, so an all-digit signature stays a string.
        sub = sub.bind({"chain.parent": parent, **{f"chain.{k}": v for k, v in chain.items()}})
    sub()
    main = sub._shepherd.main
    sig = str(main.get_xp(sub._argv).sig)
    _STAGES[sig] = (main, list(sub._argv))
    if parent is not None:
        if parent not in _STAGES:
            raise ValueError(f"stage {sig}: parent {parent} is not a stage of this grid; schedule it first")
        _PARENTS[sig] = parent
        _install(type(sub._shepherd))
    return sig


def dependency_for(sig: str) -> str | None:
    """The SLURM dependency of stage ``sig`` (``afterok:JOBID``) while its parent's job may still run, else None."""
    from dora.shep import Sheep

    if sig not in _PARENTS:
        return None
    main, argv = _STAGES[_PARENTS[sig]]
    parent = Sheep(main.get_xp(argv))  # reads the job file: a parent submitted just before is seen
    if parent.job is None:
        return None
    try:
        state = parent.state()
    except Exception:  # noqa: BLE001  (sacct unavailable: depend on the job, SLURM knows it)
        state = None
    if state in _TERMINAL:
        return None
    return f"afterok:{parent.job.job_id}"


def _install(shepherd_cls: type) -> None:
    original = shepherd_cls._get_submitit_executor
    if getattr(original, "_bm2_chain", False):
        return

    def _get_submitit_executor(self: tp.Any, name: str, folder: tp.Any, slurm_config: tp.Any) -> tp.Any:
        executor = original(self, name, folder, slurm_config)
        dependency = dependency_for(name.rsplit("_", 1)[-1])
        if dependency is not None:
            extra = dict(executor.parameters.get("additional_parameters") or {})
            extra["dependency"] = dependency
            executor.update_parameters(additional_parameters=extra)
            logger.info("%s waits for its parent: --dependency=%s", name, dependency)
        return executor

    _get_submitit_executor._bm2_chain = True  # type: ignore[attr-defined]
    shepherd_cls._get_submitit_executor = _get_submitit_executor
