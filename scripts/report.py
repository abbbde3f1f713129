"""Write one self-contained HTML report of evaluated XPs (a grid, or signatures / XP folders).

    python -m scripts.report synthetic --out report.html
    python -m scripts.report synthetic --out report.html --compare "mel + contrastive" "mel regression"

The report holds the main table (``--metric``, default the main metric of the XPs' task; mean ± sd over
seeds, fractions in percent) and the other headline metrics of each task present (retrieval, classification,
detection, reconstruction), the table of chained XPs when classifiers were started from pre-trained parents
(:mod:`bm2.results.chain`: mean ± s.e. over subjects), the test-set sizes and chance levels per study, the
optional paired Wilcoxon test, the figures of ``scripts.figures`` embedded as base64 PNG data URIs (no file next
to it is needed), and the list of XPs with their signatures and folders. XPs must have been evaluated first
(``python -m scripts.run_eval_probs``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window

from bm2 import results as R  # noqa: E402
from scripts.make_tables import add_common_arguments  # noqa: E402

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
thead th, tbody th { background: #f4f4f4; text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f4f4f4; padding: 0 0.2em; }
.note { color: #666; font-size: 0.9em; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


CHANCE_NOTES = {
    "retrieval": "retrieval: chance is uniform over the unique candidates (segment level) or words (word level); "
                 "prior: always answering the most frequent test words.",
    "classification": "classification: chance_top&lt;k&gt; uniform over the K classes; chance_balanced_accuracy "
                      "1 / classes present; chance_f1_macro uniform guessing; chance_majority always the most "
                      "frequent training class; chance_adjusted the binomial bound at p &lt; 0.05 (Combrisson "
                      "&amp; Jerbi 2015).",
    "detection": "detection: chance_f1_macro a random guess at the speech prior; chance_majority_f1_macro the "
                 "majority class everywhere.",
    "reconstruction": "reconstruction: chance_pcc is the mean of the trial-shuffled null (predictions paired with "
                      "other windows' targets); see pcc_null_p95 for its 95th percentile.",
}


def chain_section(results: list[R.Result]) -> str:
    """The HTML section of the chained classifiers among ``results`` (:mod:`bm2.results.chain`), or "" when no
    classification XP was started from a parent (``chain.parent`` in the argv of its summary)."""
    classifiers = [r for r in results if r.get("task") == "classification"]
    if not any(R.argv_value((r.get("meta") or {}).get("argv") or [], "chain.parent") for r in classifiers):
        return ""
    records = R.load_chain([r["folder"] for r in classifiers])
    return ("<h2>Chained XPs: pre-training ablations</h2><p class='note'>Test top-1 / top-5 (%) of each classifier "
            "by how it was started, mean ± s.e. over subjects (each subject averaged over seeds), model selected "
            "on validation only; <i>optimistic top-1</i> applies the original Du-IN rule (best validation epoch, "
            "ties broken by the highest test accuracy) and is not a fair estimate; chance = 1 / K and 5 / K.</p>"
            + R.to_html(R.chain_table(records), "chain"))


def build_report(results: list[R.Result], targets: list[str], metric: str | None = None,
                 label: list[str] | None = None, compare: tuple[str, str] | None = None, kmax: int = 50,
                 title: str | None = None) -> str:
    """The HTML text of the report."""
    esc = html.escape
    metric = R.resolve_metric(results, metric)
    df = R.collect(results, label)
    tasks = list(dict.fromkeys(str(r.get("task", "retrieval")) for r in results))
    title = title or f"bm2 results: {' '.join(targets)}"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
             f"<p class='note'>{len(df)} XPs ({esc(', '.join(tasks))}), generated "
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}. Accuracies, F1 and AUC in percent, correlations and STOI "
             "as they are; mean ± sd over seeds (sample sd; a single seed shows the mean only).</p>"]
    parts.append(f"<h2>Main table: {esc(metric)}</h2>")
    parts.append(R.to_html(R.aggregate(df, "model", "study", metric), "main"))
    headline = [m for t in tasks for m in (R.headline_metrics(t) or (R.STANDARD_METRICS if t == "retrieval" else ()))]
    others = [m for m in dict.fromkeys(headline) if m != metric and m in df.columns and df[m].notna().any()]
    if others:
        parts.append("<h2>Other metrics</h2>")
        for other in others:
            parts.append(f"<h3>{esc(other)}</h3>" + R.to_html(R.aggregate(df, "model", "study", other)))
    chained = chain_section(results)
    if chained:
        parts.append(chained)
    notes = " ".join(CHANCE_NOTES[t] for t in tasks if t in CHANCE_NOTES)
    parts.append(f"<h2>Test sets and chance levels</h2><p class='note'>{notes}</p>")
    parts.append(R.to_html(R.chance_table(df), "chance"))
    if compare:
        scored = [r for r in results if metric in r["metrics"]]
        table = R.wilcoxon_table(R.compare(R.subject_table(scored, metric, label), *compare))
        parts.append(f"<h2>Paired Wilcoxon test across subjects ({esc(metric)})</h2>"
                     f"<p>A = <b>{esc(compare[0])}</b>, B = <b>{esc(compare[1])}</b>; per-subject value "
                     "averaged over seeds.</p>" + R.to_html(table, "wilcoxon"))
    parts.append("<h2>Figures</h2>")
    captions = {"topk_segment": "Top-k accuracy (segment level) against chance",
                "topk_word": "Top-k accuracy (word level) against chance and the word-frequency prior",
                f"subjects_{metric}": f"Per-subject {metric} (mean ± sd over seeds)",
                "confusion": "Classification: confusion matrices (rows normalised to the true class)",
                "timelines": "Detection: speech probability (windows averaged) against the truth",
                "bins": "Reconstruction: Pearson r per feature bin against the shuffled null's 95th percentile",
                "spectrograms": "Reconstruction: true and decoded features of the first test window",
                "training": "Training curves (train solid, valid dashed)"}
    for name, fig in R.make_figures(results, metric, kmax, label).items():
        parts.append(_img(R.figure_png(fig), captions.get(name, name)))
    parts.append("<h2>XPs</h2>")
    cols = [c for c in ("sig", "task", "model", "study", "seed", "loss", "features", "architecture",
                        "epochs_trained", metric, f"chance_{metric}", "n_segments", "n_candidates", "n_scored",
                        "n_samples", "n_windows", "folder") if c in df.columns]
    xps = df[cols].copy()
    digits = 1 if R.is_percent(metric) else 3
    for c in (metric, f"chance_{metric}"):
        if c in xps:
            xps[c] = xps[c].map(lambda v: R.MISSING if v != v else f"{v:.{digits}f}")
    for c in ("n_segments", "n_candidates", "n_scored", "n_samples", "n_windows"):
        if c in xps:
            xps[c] = xps[c].map(lambda v: R.MISSING if v != v else f"{v:.0f}")
    parts.append(R.to_html(xps.set_index("sig"), "xps"))
    parts.append("<p class='note'>Rebuild: <code>python -m scripts.run_eval_probs SIG</code> then "
                 f"<code>python -m scripts.report {esc(' '.join(targets))}</code>.</p></body></html>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--out", default="report.html", help="HTML file to write (default ./report.html)")
    parser.add_argument("--compare", nargs=2, metavar=("LABEL_A", "LABEL_B"),
                        help="add a paired Wilcoxon test across subjects between two labels")
    parser.add_argument("--kmax", type=int, default=50)
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        results = R.load_all(args.targets)
        text = build_report(results, args.targets, args.metric, args.label, args.compare, args.kmax, args.title)
    except R.ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({len(results)} XPs, {len(text) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
