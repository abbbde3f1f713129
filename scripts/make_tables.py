"""Write the main results table (paper Table 2 layout) of evaluated XPs: markdown, CSV and LaTeX.

    python -m scripts.make_tables synthetic --out tables
    python -m scripts.make_tables SIG1 SIG2 ... --metric top1_word --compare "mel + contrastive" "mel regression"
    python -m scripts.make_tables synthetic --label loss optim.lr      # rows labelled by these keys
    python -m scripts.make_tables lee2024 --folds                       # mean ± sd over cross-validation folds
                                                                        # (+ pooled.md: top-k of all folds' tests)

Rows are the model / objective (``--rows``, default the label of each XP), columns the study (``--cols``), and
cells the mean ± sd over seeds of ``--metric`` (fractions in percent; correlations and STOI as they are), with a
last row of chance levels. The default metric is the main one of the XPs' task (retrieval ``top10_segment``,
classification ``top1``, detection ``f1_macro``, reconstruction ``pcc``); XPs without the metric (another
task) are left out. Every XP must have been evaluated first (``python -m scripts.run_eval_probs SIG``).
Writes ``table.md``, ``table.csv``, ``table.tex`` and ``xps.csv`` (one row per XP, every metric) to
``--out``; with ``--folds`` on classification XPs also ``pooled.md`` / ``pooled.csv`` (top-k of every fold's test
predictions together, each trial once); with ``--compare A B`` also ``wilcoxon.md``: a paired Wilcoxon
signed-rank test across subjects between the XPs labelled A and B.

``--chain`` writes the table of chained XPs instead (``chain.md``, ``chain.csv``, ``chain.tex``,
``chain_xps.csv``; :mod:`bm2.results.chain`): rows = how each classifier was started (no pre-training, VQ-VAE,
VQ-VAE → MAE, multi-subject pre-training), test top-1 / top-5 as mean ± s.e. over subjects with validation-only
selection, the original's optimistic top-1 apart, and chance. It reads ``history.json`` and the configs: no
evaluation step is needed.

    python -m scripts.make_tables CLS_SIG1 CLS_SIG2 ... --chain --out tables
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bm2 import results as R

logger = logging.getLogger("scripts.make_tables")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by make_tables, figures and report."""
    parser.add_argument("targets", nargs="+", help="grid names, XP signatures and / or XP folders")
    parser.add_argument("--metric", default=None,
                        help="a metric of the XPs' summaries, e.g. top10_segment, top1, f1_macro, pcc (default: the "
                             "main metric of their task)")
    parser.add_argument("--label", nargs="+", default=None, metavar="KEY",
                        help="label XPs by these summary / config keys (e.g. loss optim.lr) instead of the "
                             "model / objective name")


def write_tables(df, out: Path, metric: str, rows: str = "model", cols: str = "study", decimals: int | None = None,
                 chance: bool = True, over: str = "seed") -> dict[str, Path]:
    """Write table.md / table.csv / table.tex / xps.csv of the collected ``df`` to ``out`` (mean ± sd over the
    ``over`` column: ``seed``, or ``fold`` for cross-validation)."""
    out.mkdir(parents=True, exist_ok=True)
    table = R.aggregate(df, rows, cols, metric, decimals=decimals, chance=chance, over=over)
    caption = f"{metric}{' (%)' if R.is_percent(metric) else ''}, mean ± sd over {over}s"
    paths = {"md": out / "table.md", "csv": out / "table.csv", "tex": out / "table.tex", "xps": out / "xps.csv"}
    paths["md"].write_text(f"{caption}\n\n{R.to_markdown(table)}", encoding="utf-8")
    R.to_csv(table, paths["csv"])
    paths["tex"].write_text(R.to_latex(table, caption=caption, label=f"tab:{metric}"), encoding="utf-8")
    df.to_csv(paths["xps"], index=False)
    return paths


def write_pooled(results, out: Path, rows: str = "model", cols: str = "study", label=None,
                 decimals: int | None = None) -> str:
    """Write pooled.md / pooled.csv: top-k over the test predictions of every fold together (each trial once;
    :func:`bm2.results.pooled_folds`); returns the markdown."""
    pooled = R.pooled_folds(results, rows, cols, label)
    out.mkdir(parents=True, exist_ok=True)
    pooled.to_csv(out / "pooled.csv", index=False)
    shown = pooled.copy()
    for column in shown.columns:
        if column.startswith(("top", "chance_top")):
            shown[column] = [f"{v:.{1 if decimals is None else decimals}f}" for v in shown[column]]
    caption = "top-k (%) pooled over the test predictions of every fold (each trial once)"
    text = f"{caption}\n\n{R.to_markdown(shown.set_index(rows))}"
    (out / "pooled.md").write_text(text, encoding="utf-8")
    return text


def write_chain_table(targets: list[str], out: Path) -> Path:
    """Write chain.md / chain.csv / chain.tex / chain_xps.csv of the chained classifier XPs of ``targets``."""
    records = R.load_chain(targets)
    table = R.chain_table(records)
    out.mkdir(parents=True, exist_ok=True)
    caption = "Test top-1 / top-5 (%), mean ± s.e. over subjects, validation-only model selection"
    (out / "chain.md").write_text(f"{caption}\n\n{R.to_markdown(table)}", encoding="utf-8")
    R.to_csv(table, out / "chain.csv")
    (out / "chain.tex").write_text(R.to_latex(table, caption=caption, label="tab:chain"), encoding="utf-8")
    R.chain_rows(records).to_csv(out / "chain_xps.csv", index=False)
    return out / "chain.md"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--rows", default="model", help="column of the XP table for rows (default model)")
    parser.add_argument("--cols", default="study", help="column of the XP table for columns (default study)")
    parser.add_argument("--out", default="tables", help="output folder (default ./tables)")
    parser.add_argument("--decimals", type=int, default=None, help="default 1 for percentages, 3 otherwise")
    parser.add_argument("--no-chance", action="store_true", help="leave out the chance row")
    parser.add_argument("--folds", action="store_true",
                        help="XPs are cross-validation folds (dset.split.fold): mean ± sd over folds, not seeds")
    parser.add_argument("--compare", nargs=2, metavar=("LABEL_A", "LABEL_B"),
                        help="paired Wilcoxon test across subjects between two labels (-> wilcoxon.md)")
    parser.add_argument("--chain", action="store_true",
                        help="the table of chained XPs (pre-training ablations) instead (-> chain.md ...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    if args.chain:
        try:
            print(write_chain_table(args.targets, out).read_text(encoding="utf-8"))
        except R.ResultsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        results = R.load_all(args.targets)
        metric = R.resolve_metric(results, args.metric)
        left_out = [r["sig"] for r in results if metric not in r["metrics"]]
        if left_out:
            logger.warning("left out %d XP(s) without the metric %s (another task, or not evaluated with the "
                           "add-on it names): %s; tabulate them with --metric NAME (a metric of their "
                           "eval/summary.json)", len(left_out), metric, " ".join(left_out))
        df = R.collect(results, args.label, {"fold": "dset.split.fold"} if args.folds else None)
        paths = write_tables(df, out, metric, args.rows, args.cols, args.decimals, not args.no_chance,
                             "fold" if args.folds else "seed")
        print(paths["md"].read_text(encoding="utf-8"))
        if args.folds and {r.get("task") for r in results} == {"classification"}:
            print(write_pooled(results, out, args.rows, args.cols, args.label, args.decimals))
        if args.compare:
            label_a, label_b = args.compare
            scored = [r for r in results if metric in r["metrics"]]
            tests = R.compare(R.subject_table(scored, metric, args.label), label_a, label_b)
            text = R.wilcoxon_markdown(tests, label_a, label_b, metric)
            (out / "wilcoxon.md").write_text(text, encoding="utf-8")
            print(text)
    except R.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger.info("wrote %s (%d XPs in the table)", ", ".join(sorted(p.name for p in out.iterdir())),
                len(results) - len(left_out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
