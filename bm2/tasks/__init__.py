"""Decoding tasks: what each needs of the data, how a trained model is scored, and what it writes.

Tasks are looked up by name (``test.task`` in the config, :data:`TASKS`): ``retrieval`` (brainmagick),
``classification`` (one class per window), ``detection`` (speech vs silence per sample) and
``reconstruction`` (dense speech features, and audio where it exists), ``pretraining`` (self-supervised stages
judged by their own objective).
"""

from __future__ import annotations

from .base import (DEFAULT_INPUTS, OUTPUT, Accumulator, QuickResult, Task, TaskResult, model_inputs, model_outputs,
                   run_model)
from .classification import ClassificationResult, ClassificationTask
from .detection import DetectionResult, DetectionTask
from .pretraining import PretrainingTask
from .reconstruction import ReconstructionResult, ReconstructionTask
from .retrieval import RetrievalResult, RetrievalTask

TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` under its ``name``."""
    TASKS[task.name] = task
    return task


for _task in (RetrievalTask(), ClassificationTask(), DetectionTask(), ReconstructionTask(), PretrainingTask()):
    register_task(_task)


def get_task(name: str) -> Task:
    """The task registered as ``name``; the error lists the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; valid tasks are {sorted(TASKS)}") from None


__all__ = ["Accumulator", "ClassificationResult", "ClassificationTask", "DEFAULT_INPUTS", "DetectionResult",
           "DetectionTask", "OUTPUT", "QuickResult", "ReconstructionResult", "ReconstructionTask", "RetrievalResult",
           "RetrievalTask", "TASKS", "Task", "TaskResult", "get_task", "model_inputs", "model_outputs",
           "register_task", "run_model"]
