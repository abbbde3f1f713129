"""Configuration mistakes caught by the builders before any data is prepared."""

import pytest

from bm2.builders import check_best_metric, check_model_task
from bm2.objectives import build_objective
from bm2.tasks import get_task


def test_window_classifiers_are_refused_for_per_sample_tasks():
    pytest.importorskip("braindecode")
    for task in ("retrieval", "detection", "reconstruction"):
        with pytest.raises(ValueError, match=r"model=eegnet outputs one vector per window.*test.task=classification"):
            check_model_task("eegnet", get_task(task))
    check_model_task("eegnet", get_task("classification"))
    check_model_task("simpleconv", get_task("detection"))


def test_best_metric_typos_are_caught_with_the_valid_names():
    ce = build_objective("cross_entropy")
    check_best_metric("f1_macro", ce, get_task("classification"), (1, 5))
    check_best_metric("cross_entropy", ce, get_task("classification"), (1, 5))
    check_best_metric(None, ce, get_task("classification"), (1, 5))
    with pytest.raises(KeyError, match=r"'f1_macr'.*valid names.*balanced_accuracy"):
        check_best_metric("f1_macr", ce, get_task("classification"), (1, 5))
    clip = build_objective("clip")
    check_best_metric("top10_segment", clip, get_task("retrieval"), (1, 10))
    with pytest.raises(KeyError, match="top5_segment"):
        check_best_metric("top5_segment", clip, get_task("retrieval"), (1, 10))
    check_best_metric("roc_auc", build_objective("bce"), get_task("detection"), (1,))
