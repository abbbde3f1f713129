"""Results of evaluated XPs as pandas tables: loading, labels, aggregation over seeds, statistics and plots.

Shared by ``scripts/make_tables.py``, ``scripts/figures.py``, ``scripts/report.py`` and the notebooks of
``notebook_templates/``. Everything starts from the ``eval/`` folder that ``python -m scripts.run_eval_probs``
writes in each XP folder (``summary.json`` and the task's per-item files: ``segments.csv`` for retrieval,
``items.csv`` for classification, detection and reconstruction) and from the XP's ``history.json``::

    xps = load_all(["synthetic"])                 # grid names, signatures or XP folders
    df = collect(xps)                             # one row per XP, metrics in percent
    table = aggregate(df, "model", "study", "top10_segment")   # "mean ± sd" over seeds
    print(to_markdown(table))

Accuracies are stored as fractions in ``summary.json``; every table of this module shows them in percent
(correlations, STOI, p-values and counts as they are: :func:`is_percent`). Each XP's summary names its task;
the default metric of a table is that task's main metric (retrieval: ``top10_segment``).
"""

from __future__ import annotations

from .load import (Result, Labeler, KNOWN_LABELS, CHANCE_ROW, MISSING, STANDARD_METRICS, ResultsError, MissingEvalError,
                   load_xp_results, resolve_folders, load_all, targets_from_env, require_env, headline_metrics,
                   main_metric, is_percent, resolve_metric)
from .labels import argv_value, config_value, is_random, default_label, xp_config, label_from_keys, order_labels
from .tables import (collect, aggregate_stats, format_mean_sd, aggregate, to_markdown, parse_markdown, latex_escape,
                     to_latex, to_csv, to_html, chance_table, pooled_folds)
from .stats import (parse_metric, subject_table, wilcoxon_paired, wilcoxon_table, wilcoxon_markdown, compare,
                    topk_curve, chance_curve, prior_curve)
from .plots import (plot_topk, plot_subjects, plot_training, plot_confusion, plot_timelines, plot_bins, make_figures,
                    figure_png)
from .datasets import dataset_statistics, study_statistics
from .chain import load_chain, chain_rows, chain_table, optimistic_top1, stage_label

__all__ = [
    "Result", "Labeler", "KNOWN_LABELS", "CHANCE_ROW", "MISSING", "STANDARD_METRICS", "ResultsError",
    "MissingEvalError", "load_xp_results", "resolve_folders", "load_all", "targets_from_env", "require_env",
    "headline_metrics", "main_metric", "is_percent", "resolve_metric", "config_value",
    "argv_value", "is_random", "default_label", "xp_config", "label_from_keys", "order_labels", "collect",
    "aggregate_stats", "format_mean_sd", "aggregate", "to_markdown", "parse_markdown", "latex_escape", "to_latex",
    "to_csv", "to_html", "chance_table", "pooled_folds", "parse_metric", "subject_table", "wilcoxon_paired",
    "wilcoxon_table",
    "wilcoxon_markdown", "compare", "topk_curve", "chance_curve", "prior_curve", "plot_topk", "plot_subjects",
    "plot_training", "plot_confusion", "plot_timelines", "plot_bins", "make_figures", "figure_png",
    "dataset_statistics", "study_statistics", "load_chain", "chain_rows", "chain_table", "optimistic_top1",
    "stage_label",
]
