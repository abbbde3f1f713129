"""Unit tests of bm2.results and the table / figure / report scripts on hand-made eval folders (fast)."""

from __future__ import annotations

import base64
import io
import json
import math
import statistics
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bm2 import results as R
from bm2.metrics import Ranks


def make_xp(root: Path, sig: str, loss: str = "clip", seed: int = 0, study: str = "alpha", top10: float = 0.5,
            features: tuple[str, ...] = ("mel",), argv: tuple[str, ...] = (), epochs: int = 3,
            subjects: dict[str, list[int]] | None = None, n_candidates: int = 20, model: str = "simpleconv",
            hydra: str | None = None) -> Path:
    """An XP folder with eval/summary.json, eval/segments.csv and history.json.

    ``subjects`` maps a subject to the ``better_segment`` rank of each of its segments (no ties).
    """
    folder = root / "xps" / sig
    (folder / "eval").mkdir(parents=True)
    subjects = subjects or {"01": [0, 3, 12], "02": [1, 15]}
    rows = []
    for subject, ranks in subjects.items():
        for i, better in enumerate(ranks):
            rows.append({"study": study, "subject": subject, "word": f"w{(i + len(subject)) % 4}",
                         "segment_uid": f"{subject}-{i}", "better_segment": better, "ties_segment": 0,
                         "better_word": better // 2, "ties_word": 0})
    pd.DataFrame(rows).to_csv(folder / "eval" / "segments.csv", index=False)
    metrics = {"top1_segment": top10 / 4, "top10_segment": top10, "top1_word": top10 / 3, "top10_word": top10,
               "chance_top10_segment": 10 / n_candidates, "chance_top1_segment": 1 / n_candidates,
               "chance_top1_word": 0.25, "chance_top10_word": 1.0, "prior_top1_word": 0.4, "prior_top10_word": 1.0,
               "n_segments": float(len(rows)), "n_candidates": float(n_candidates), "n_words": 4.0}
    meta = {"sig": sig, "argv": list(argv), "selections": study.split("+"), "features": list(features),
            "loss": loss, "model": model, "seed": seed, "epochs_trained": epochs}
    summary = {"task": "retrieval", "meta": meta, "metrics": metrics,
               "groups": {"subject": {s: {"top10_segment": 0.5} for s in subjects}}}
    (folder / "eval" / "summary.json").write_text(json.dumps(summary))
    history = [{"train": {"loss": 3.0 - e}, "valid": {"loss": 3.2 - e}} for e in range(epochs)]
    (folder / "history.json").write_text(json.dumps(history))
    if hydra is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "config.yaml").write_text(hydra)
    return folder


@pytest.fixture
def grid(tmp_path) -> list[Path]:
    """2 models x 2 studies x 2 seeds, with one missing cell (mse on beta has one seed)."""
    values = {("clip", "alpha"): (0.40, 0.50), ("mse", "alpha"): (0.20, 0.26), ("clip", "beta"): (0.70, 0.60),
              ("mse", "beta"): (0.30,)}
    folders = []
    for (loss, study), tops in values.items():
        for seed, top in enumerate(tops):
            subjects = {"01": [0, 9, 30], "02": [2, 10]} if loss == "clip" else {"01": [20, 5, 30], "02": [22, 40]}
            folders.append(make_xp(tmp_path, f"{loss}{study}{seed}", loss, seed, study, top, subjects=subjects,
                                   n_candidates=20 if study == "alpha" else 50))
    return folders


def test_load_xp_results_and_collect_in_percent(grid):
    res = R.load_xp_results(grid[0])
    assert res["sig"] == "clipalpha0" and res["meta"]["loss"] == "clip" and len(res["history"]) == 3
    assert res["segments"]["subject"].tolist() == ["01", "01", "01", "02", "02"]  # "01" stays a string
    assert R.load_xp_results(grid[0] / "eval")["sig"] == "clipalpha0"  # the eval folder works too
    df = R.collect(grid)
    assert len(df) == 7 and set(df.model) == {"mel + contrastive", "mel regression"}
    row = df.set_index("sig").loc["msealpha0"]
    assert row.top10_segment == pytest.approx(20.0) and row.chance_top10_segment == pytest.approx(50.0)
    assert row.n_candidates == 20 and row.study == "alpha" and row.seed == 0 and row.loss == "mse"


def test_missing_eval_names_the_fix(tmp_path):
    (tmp_path / "abc123").mkdir()
    with pytest.raises(R.ResultsError, match=r"run `python -m scripts.run_eval_probs abc123` first"):
        R.load_xp_results(tmp_path / "abc123")
    (tmp_path / "def456").mkdir()
    with pytest.raises(R.ResultsError, match=r"XPs abc123 def456 .*scripts.run_eval_probs abc123 def456` first"):
        R.load_all([tmp_path / "abc123", tmp_path / "def456"])
    with pytest.raises(R.ResultsError, match="does not exist"):
        R.resolve_folders([str(tmp_path / "nope")])


def test_default_labels(tmp_path):
    def label(**kw):
        return R.default_label(R.load_xp_results(make_xp(tmp_path, f"x{len(list(tmp_path.rglob('summary.json')))}",
                                                         **kw)))

    assert label(loss="mse") == "mel regression"
    assert label(loss="clip") == "mel + contrastive"
    assert label(loss="clip", features=("wav2vec2",)) == "wav2vec 2.0 + contrastive"
    assert label(loss="clip", argv=("optim.max_batches=0",)) == "random"
    assert label(loss="mse", epochs=0) == "random"
    assert label(loss="clip", model="transformer") == "mel + contrastive (transformer)"
    assert R.order_labels(["zeta", "chance", "mel + contrastive", "random"]) == [
        "random", "mel + contrastive", "zeta", "chance"]


def test_label_from_keys_reads_meta_argv_and_config(tmp_path):
    folder = make_xp(tmp_path, "k1", argv=("optim.lr=0.001",), hydra="optim:\n  lr: 0.001\n  batch_size: 64\n")
    res = R.load_xp_results(folder)
    assert R.label_from_keys(["loss", "optim.lr", "optim.batch_size"])(res) == \
        "loss=clip, optim.lr=0.001, optim.batch_size=64"
    assert R.collect([res], ["seed"]).model.tolist() == ["seed=0"]
    with pytest.raises(R.ResultsError, match="label key 'optim.nope'"):
        R.label_from_keys(["optim.nope"])(res)


def test_aggregate_mean_sd_over_seeds(grid):
    df = R.collect(grid)
    table = R.aggregate(df, "model", "study", "top10_segment")
    assert table.index.tolist() == ["mel regression", "mel + contrastive", "chance"]
    assert table.columns.tolist() == ["alpha", "beta"]
    sd = statistics.stdev([40.0, 50.0])  # 7.07: sample sd over the two seeds
    assert table.loc["mel + contrastive", "alpha"] == f"45.0 ± {sd:.1f}" == "45.0 ± 7.1"
    assert table.loc["mel + contrastive", "beta"] == "65.0 ± 7.1"
    assert table.loc["mel regression", "alpha"] == "23.0 ± 4.2"
    assert table.loc["mel regression", "beta"] == "30.0"  # one seed: no sd
    assert table.loc["chance", "alpha"] == "50.0" and table.loc["chance", "beta"] == "20.0"
    stats = R.aggregate_stats(df, "model", "study", "top10_segment").set_index(["model", "study"])
    assert stats.loc[("mel + contrastive", "alpha"), "n"] == 2
    assert stats.loc[("mel + contrastive", "alpha"), "sd"] == pytest.approx(math.sqrt(50))
    assert R.aggregate(df, chance=False).index.tolist() == ["mel regression", "mel + contrastive"]


def test_aggregate_refuses_to_mix_configurations(tmp_path):
    make_xp(tmp_path, "a", seed=0, argv=("optim.lr=0.1",))
    make_xp(tmp_path, "b", seed=0, argv=("optim.lr=0.2",))
    df = R.collect(sorted((tmp_path / "xps").iterdir()))
    with pytest.raises(R.ResultsError, match="--label"):
        R.aggregate(df)
    assert len(R.aggregate(R.collect(sorted((tmp_path / "xps").iterdir()), ["optim.lr"]))) == 3


def test_markdown_latex_csv_html(grid, tmp_path):
    table = R.aggregate(R.collect(grid))
    md = R.to_markdown(table)
    lines = md.strip().splitlines()
    assert lines[0] == "| model | alpha | beta |" and lines[1] == "|:---|---:|---:|"
    assert lines[3] == "| mel + contrastive | 45.0 ± 7.1 | 65.0 ± 7.1 |"
    pd.testing.assert_frame_equal(R.parse_markdown(md), table, check_names=False, check_dtype=False)
    tex = R.to_latex(table, caption="top10_segment (%)")
    assert r"\caption{top10\_segment (\%)}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"mel + contrastive & 45.0 $\pm$ 7.1 & 65.0 $\pm$ 7.1 \\" in tex
    assert r"\begin{tabular}{lrr}" in tex and "±" not in tex
    back = pd.read_csv(R.to_csv(table, tmp_path / "t.csv"), index_col=0, dtype=str, keep_default_na=False)
    assert back.loc["mel regression", "beta"] == "30.0" and back.loc["mel + contrastive", "alpha"] == "45.0 ± 7.1"
    html = R.to_html(table)
    assert "<th>mel + contrastive</th><td>45.0 ± 7.1</td>" in html
    assert R.latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
    odd = pd.DataFrame({"x|y": ["a|b"]}, index=pd.Index(["r"], name="n"))
    assert R.parse_markdown(R.to_markdown(odd)).loc["r", "x|y"] == "a|b"


def test_wilcoxon_against_hand_computation():
    # Per-subject differences A - B (after averaging two seeds of A): 1, 2, -3, 4, 5.
    # |d| ranks 1..5; W+ = 1 + 2 + 4 + 5 = 12, W- = 3 -> W = min = 3. Exact two-sided p: subsets of
    # {1..5} with rank sum <= 3 are {}, {1}, {2}, {3}, {1, 2}: p = 2 * 5 / 32.
    b_vals = [50.0, 40.0, 60.0, 30.0, 20.0]
    diffs = [1.0, 2.0, -3.0, 4.0, 5.0]
    subj = [f"s{i}" for i in range(5)]
    a = pd.DataFrame({"study": "x", "subject": subj * 2, "seed": [0] * 5 + [1] * 5,
                      "value": [b + d - 1 for b, d in zip(b_vals, diffs)] + [b + d + 1 for b, d in zip(b_vals, diffs)]})
    b = pd.DataFrame({"study": "x", "subject": subj + ["only_b"], "seed": 0, "value": b_vals + [99.0]})
    out = R.wilcoxon_paired(a, b)
    assert out["n"] == 5  # "only_b" has no pair
    assert out["statistic"] == pytest.approx(3.0)
    assert out["pvalue"] == pytest.approx(10 / 32)
    assert out["mean_diff"] == pytest.approx(np.mean(diffs))
    assert out["mean_a"] - out["mean_b"] == pytest.approx(out["mean_diff"])
    same = R.wilcoxon_paired(b, b)
    assert same["pvalue"] == 1.0 and same["note"] == "all differences are zero"
    md = R.wilcoxon_markdown({"x": out}, "A", "B", "top10_segment")
    row = R.parse_markdown(md.split("\n\n", 1)[1]).loc["x"]
    assert row["n subjects"] == "5" and row["W"] == "3.0" and row["p-value"] == "0.3125" and row["A - B"] == "+1.80"


def test_subject_table_and_compare_from_segments(grid):
    subjects = R.subject_table(grid, "top10_segment")
    one = subjects[(subjects.sig == "clipalpha0")].set_index("subject")["value"]
    # ranks [0, 9, 30] and [2, 10]: 9 strictly better candidates is still a top-10 hit, 10 is not
    assert one.to_dict() == pytest.approx({"01": 200 / 3, "02": 50.0})
    mse = subjects[(subjects.sig == "msealpha0")].set_index("subject")["value"]
    assert mse.to_dict() == pytest.approx({"01": 100 / 3, "02": 0.0})
    tests = R.compare(subjects, "mel + contrastive", "mel regression")
    assert set(tests) == {"alpha", "beta", "all"}
    assert tests["alpha"]["n"] == 2 and tests["all"]["n"] == 4  # subjects of two studies never mix
    assert tests["alpha"]["mean_diff"] == pytest.approx((100 / 3 + 50) / 2)
    with pytest.raises(R.ResultsError, match="no XP labelled 'nope'"):
        R.compare(subjects, "nope", "mel regression")
    with pytest.raises(R.ResultsError, match="top<k>"):
        R.parse_metric("accuracy")


def test_topk_curve_is_monotone_and_reaches_one():
    rng = np.random.default_rng(0)
    n_cand = 30
    better = rng.integers(0, n_cand, size=200)
    ties = np.minimum(rng.integers(0, 3, size=200), n_cand - 1 - better)
    seg = pd.DataFrame({"better_segment": better, "ties_segment": ties})
    curve = R.topk_curve(seg, "segment", kmax=50)
    assert curve.index.tolist() == list(range(1, 51))
    assert np.all(np.diff(curve.to_numpy()) >= -1e-12)
    assert curve.loc[n_cand] == pytest.approx(1.0) and curve.loc[50] == pytest.approx(1.0)
    assert curve.loc[5] == pytest.approx(Ranks(better, ties).hits(5).mean())
    hand = R.topk_curve(pd.DataFrame({"better_word": [0, 1, 3], "ties_word": [0, 0, 0]}), "word", kmax=5)
    assert hand.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert R.chance_curve(4, 6).tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    prior = R.prior_curve(pd.DataFrame({"word": ["a", "a", "a", "b", "c"]}), 4)
    assert prior.tolist() == pytest.approx([0.6, 0.8, 1.0, 1.0])


def _check_png(data: bytes | Path, min_size=(250, 350)):
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(data) if isinstance(data, bytes) else data)
    assert img.shape[0] >= min_size[0] and img.shape[1] >= min_size[1]
    rgb = img[..., :3]
    assert (rgb.min(axis=-1) < 0.9).mean() > 0.01  # ink, not a blank canvas
    packed = (rgb * 255).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    assert len(np.unique(packed)) > 10  # lines in several colours


def test_make_tables_cli(grid, tmp_path, capsys):
    from scripts import make_tables

    out = tmp_path / "tables"
    argv = [str(f) for f in grid] + ["--out", str(out), "--compare", "mel + contrastive", "mel regression"]
    assert make_tables.main(argv) == 0
    table = R.parse_markdown((out / "table.md").read_text())
    assert table.loc["mel + contrastive", "alpha"] == "45.0 ± 7.1" and table.loc["chance", "beta"] == "20.0"
    assert r"45.0 $\pm$ 7.1" in (out / "table.tex").read_text()
    assert pd.read_csv(out / "table.csv", index_col=0).loc["mel regression", "alpha"] == "23.0 ± 4.2"
    assert len(pd.read_csv(out / "xps.csv")) == 7
    wil = (out / "wilcoxon.md").read_text()
    assert "A = mel + contrastive, B = mel regression" in wil and "| all | 4 |" in wil
    capsys.readouterr()
    (tmp_path / "raw").mkdir()
    assert make_tables.main([str(tmp_path / "raw"), "--out", str(out)]) == 2
    assert "run `python -m scripts.run_eval_probs raw` first" in capsys.readouterr().err


def test_figures_and_report(grid, tmp_path):
    from scripts import figures, report

    out = tmp_path / "figs"
    assert figures.main([str(f) for f in grid] + ["--out", str(out), "--kmax", "30"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["subjects_top10_segment.png", "topk_segment.png", "topk_word.png", "training.png"]
    for name in names:
        _check_png(out / name)
    html_path = tmp_path / "report.html"
    assert report.main([str(f) for f in grid] + ["--out", str(html_path), "--compare", "mel + contrastive",
                                                 "mel regression"]) == 0
    text = html_path.read_text()

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.imgs, self._in = [], [], False

        def handle_starttag(self, tag, attrs):
            self._in = tag in ("td", "th")
            if tag == "img":
                self.imgs.append(dict(attrs)["src"])

        def handle_data(self, data):
            if self._in:
                self.cells.append(data.strip())

    parser = Cells()
    parser.feed(text)
    for value in ("45.0 ± 7.1", "65.0 ± 7.1", "23.0 ± 4.2", "30.0", "clipalpha0", "msebeta0", "50.0", "20.0"):
        assert value in parser.cells, value
    assert len(parser.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in parser.imgs)
    for src in parser.imgs:
        _check_png(base64.b64decode(src.split(",", 1)[1]))
    assert "src=\"http" not in text and "href=" not in text  # self-contained
