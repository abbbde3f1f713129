"""Compatibility module: retrieval evaluation moved to :mod:`bm2.tasks.retrieval`, the registry to
:mod:`bm2.tasks`. Kept so that existing scripts and notebooks importing ``bm2.evaluation`` keep working."""

from .tasks import TASKS, Task, get_task
from .tasks.retrieval import (RetrievalResult, RetrievalTask, candidate_table, clip_scores, evaluate_model,
                              evaluate_retrieval, results_table, retrieval_from_scores, retrieval_metrics)

__all__ = ["RetrievalResult", "RetrievalTask", "TASKS", "Task", "candidate_table", "clip_scores", "evaluate_model",
           "evaluate_retrieval", "get_task", "results_table", "retrieval_from_scores", "retrieval_metrics"]
