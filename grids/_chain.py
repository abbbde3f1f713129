"""Chained stages in a grid: a child XP starts from its parent's best state, and runs after it on SLURM.

    from ._chain import stage
    pre = stage(launcher, {"loss.name": "clip"})                                   # parent: its signature
    stage(launcher, {"recipe": "word_classification"}, parent=pre, exclude=["head"])  # child of ``pre``
    stage(launcher, {"stack.bases": [a, b]}, after=[a, b])                         # waits for a and b

``after`` names stages a stage waits for without starting from their weights (a stacking XP reads its bases'
outputs): on SLURM its job depends on every one of them still pending or running (``afterok:J1:J2``).

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

# In this ``dora grid`` process: stage signature -> the signatures it waits for (its parent, or ``after``), and each
# stage's argv and Dora main.
_PARENTS: dict[str, list[str]] = {}
_STAGES: dict[str, tuple[tp.Any, list[str]]] = {}
# Job states after which a dependency can never be satisfied or is not needed.
_TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def stage(launcher: tp.Any, overrides: dict | None = None, parent: str | None = None,
          after: tp.Sequence[str] = (), **chain: tp.Any) -> str:
    """Schedule one stage with ``overrides``; with ``parent`` (a signature returned by an earlier ``stage``),
    start from it (``chain`` keys: ``modules``, ``exclude``, ``freeze``); ``after``: signatures of earlier stages
    to wait for on SLURM as well (no weights copied). Returns the stage's signature. Raises ``ValueError`` when
    ``parent`` or one of ``after`` is not an earlier stage of this grid."""
    sub = launcher.bind(overrides or {})
    if parent is not None:
        # Dora writes string values JSON-quoted, so an all-digit signature stays a string.
        sub = sub.bind({"chain.parent": parent, **{f"chain.{k}": v for k, v in chain.items()}})
    sub()
    main = sub._shepherd.main
    sig = str(main.get_xp(sub._argv).sig)
    _STAGES[sig] = (main, list(sub._argv))
    waits = ([parent] if parent is not None else []) + [str(s) for s in after]
    for other in waits:
        if other not in _STAGES:
            raise ValueError(f"stage {sig}: {other} (its parent or one it runs after) is not a stage of this grid; "
                             "schedule it first")
    if waits:
        _PARENTS[sig] = list(dict.fromkeys(waits))
        _install(type(sub._shepherd))
    return sig


def dependency_for(sig: str) -> str | None:
    """The SLURM dependency of stage ``sig`` (``afterok:J1[:J2...]``) on the jobs of its parent / ``after``
    stages that may still run, else None."""
    from dora.shep import Sheep

    jobs = []
    for other in _PARENTS.get(sig, []):
        main, argv = _STAGES[other]
        sheep = Sheep(main.get_xp(argv))  # reads the job file: a stage submitted just before is seen
        if sheep.job is None:
            continue
        try:
            state = sheep.state()
        except Exception:  # noqa: BLE001  (sacct unavailable: depend on the job, SLURM knows it)
            state = None
        if state not in _TERMINAL:
            jobs.append(str(sheep.job.job_id))
    return "afterok:" + ":".join(jobs) if jobs else None


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
            logger.info("%s waits for its parent(s): --dependency=%s", name, dependency)
        return executor

    _get_submitit_executor._bm2_chain = True  # type: ignore[attr-defined]
    shepherd_cls._get_submitit_executor = _get_submitit_executor
