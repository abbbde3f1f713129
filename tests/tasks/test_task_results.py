"""Result tables, figures and the HTML report on evaluated XPs of the classification, detection and
reconstruction tasks (eval folders written by the tasks themselves on the fake datasets)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bm2 import results as R
from bm2.tasks import get_task

from . import test_classification, test_detection
from .fakes import Echo, FakeDataset, segments


def _xp(root: Path, sig: str, task: str, dataset, loss: str, seed: int = 0, **kwargs) -> Path:
    folder = root / "xps" / sig
    result = get_task(task).evaluate(Echo(), dataset, batch_size=4, **kwargs)
    meta = {"sig": sig, "argv": [f"test.task={task}"], "selections": ["toy"], "features": [], "loss": loss,
            "model": "simpleconv", "seed": seed, "epochs_trained": 2}
    result.save(folder / "eval", meta)
    (folder / "history.json").write_text(json.dumps([{"train": {"loss": 2.0}, "valid": {"loss": 2.5}},
                                                     {"train": {"loss": 1.5}, "valid": {"loss": 2.2}}]))
    return folder


@pytest.fixture
def xps(tmp_path) -> dict[str, Path]:
    targets = np.random.default_rng(0).standard_normal((8, 3, 10)).astype(np.float32)
    reconstruction = FakeDataset(list(targets), segments(8, subject=["01", "02"] * 4), targets={"features": targets})
    return {"classification": _xp(tmp_path, "cls0", "classification", test_classification._dataset(), "ce"),
            "detection": _xp(tmp_path, "det0", "detection", test_detection._dataset(), "bce"),
            "reconstruction": _xp(tmp_path, "rec0", "reconstruction", reconstruction, "mse", n_null=20)}


def test_load_and_collect_any_task(xps):
    results = R.load_all(list(xps.values()))
    assert [r["task"] for r in results] == ["classification", "detection", "reconstruction"]
    assert results[0]["items"]["subject"].tolist()[:4] == ["01", "01", "01", "02"]
    df = R.collect(results).set_index("sig")
    assert df.loc["cls0", "top1"] == pytest.approx(400 / 6) and df.loc["cls0", "chance_top1"] == pytest.approx(100 / 3)
    assert df.loc["det0", "f1_macro"] == pytest.approx(100 * (10 / 12 + 6 / 8) / 2)
    assert df.loc["rec0", "pcc"] == pytest.approx(1.0)  # correlations stay as they are, not in percent
    assert df.loc["cls0", "model"] == "classification (ce)" and df.loc["rec0", "task"] == "reconstruction"
    # F1-macro of classes and of speech samples share a column, each task with its own chance row
    table = R.aggregate(R.collect(results), metric="f1_macro")
    assert table.loc["classification (ce)", "toy"] == "47.2" and table.loc["detection (bce)", "toy"] == "79.2"
    assert table.loc["chance (classification)", "toy"] == "29.6" and table.loc["chance (detection)", "toy"] == "50.0"
    assert "rec0" not in R.collect(results).dropna(subset=["f1_macro"])["sig"].tolist()
    chance = R.chance_table(R.collect(results))
    assert chance.loc["toy (classification)", "chance_adjusted"] == "66.7"
    assert chance.loc["toy (reconstruction (mse))", "n_windows"] == "8"  # per model label (its own null)
    assert R.resolve_metric(results[1:]) == "f1_macro" and R.resolve_metric(results[2:]) == "pcc"
    with pytest.raises(R.ResultsError, match="available"):
        R.resolve_metric(results, "top10_segment")
    subjects = R.subject_table(results[:1], "top1").set_index("subject")["value"]  # from items.csv
    assert subjects.to_dict() == pytest.approx({"01": 100.0, "02": 100 / 3})
    f1 = R.subject_table(results[1:2], "f1_macro").set_index("subject")["value"]  # from the summary's groups
    assert f1["02"] == pytest.approx(100.0)


@pytest.mark.parametrize("task, cell, chance", [("classification", "66.7", "33.3"), ("detection", "79.2", "50.0"),
                                                ("reconstruction", "1.000", None)])
def test_make_tables_per_task(xps, tmp_path, task, cell, chance):
    from scripts import make_tables

    out = tmp_path / f"tables_{task}"
    assert make_tables.main([str(xps[task]), "--out", str(out)]) == 0
    table = R.parse_markdown((out / "table.md").read_text().split("\n\n", 1)[1])
    label = f"{task} ({ {'classification': 'ce', 'detection': 'bce', 'reconstruction': 'mse'}[task]})"
    assert table.loc[label, "toy"] == cell
    if chance is not None:
        assert table.loc["chance", "toy"] == chance
    else:  # the shuffled null's mean: near 0 for windows of independent noise
        assert abs(float(table.loc["chance", "toy"])) < 0.3
    assert ("(%)" in (out / "table.md").read_text()) == (task != "reconstruction")


def test_figures_and_report_of_all_tasks(xps, tmp_path):
    from scripts import figures, report

    targets = [str(f) for f in xps.values()]
    out = tmp_path / "figs"
    assert figures.main(targets + ["--out", str(out), "--metric", "f1_macro"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bins.png", "confusion.png", "spectrograms.png",
                                                     "subjects_f1_macro.png", "timelines.png", "training.png"]
    html_path = tmp_path / "report.html"
    assert report.main(targets + ["--out", str(html_path)]) == 0
    text = html_path.read_text()

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.headings, self.imgs, self._tag = [], [], 0, ""

        def handle_starttag(self, tag, attrs):
            self._tag = tag
            self.imgs += tag == "img"

        def handle_data(self, data):
            if self._tag in ("td", "th"):
                self.cells.append(data.strip())
            elif self._tag in ("h2", "h3"):
                self.headings.append(data.strip())

    parser = Cells()
    parser.feed(text)
    assert "Main table: top1" in parser.headings  # the first task's main metric
    for heading in ("f1_macro", "balanced_accuracy", "roc_auc", "pcc", "pcc_trial", "top5"):
        assert heading in parser.headings, heading
    # classification top-1 and chance, detection F1-macro and its chance, reconstruction r, balanced accuracy
    for value in ("66.7", "33.3", "79.2", "50.0", "1.000", "58.3", "cls0", "det0", "rec0", "classification",
                  "reconstruction"):
        assert value in parser.cells, value
    assert parser.imgs == 6  # subjects, confusion, timelines, bins, spectrograms, training
    assert "detection: chance_f1_macro a random guess" in text


def test_reconstruction_chance_rows_are_per_model(tmp_path):
    """Each reconstruction's null shuffles its own predictions: XPs of two models keep two chance rows (the NSD
    label names stage / decoder / causal from the XP's config)."""
    targets = np.random.default_rng(0).standard_normal((8, 3, 10)).astype(np.float32)
    data = FakeDataset(list(targets), segments(8, subject=["01", "02"] * 4), targets={"features": targets})
    folders = [_xp(tmp_path, "recA", "reconstruction", data, "nsd_a2a", n_null=20),
               _xp(tmp_path, "recB", "reconstruction", data, "nsd_e2a", n_null=20)]
    for folder, (stage, causal) in zip(folders, (("a2a", "false"), ("e2a", "true"))):
        summary = folder / "eval" / "summary.json"
        content = json.loads(summary.read_text())
        content["meta"].update(model="nsd", argv=[f"recipe=nsd_{stage}"])
        summary.write_text(json.dumps(content))
        (folder / ".hydra").mkdir()  # the config as Hydra saves it (the defaults are not on the command line)
        (folder / ".hydra" / "config.yaml").write_text(
            f"model:\n  name: nsd\n  nsd:\n    stage: {stage}\n    decoder: lstm\n    causal: {causal}\n")
    results = R.load_all(folders)
    df = R.collect(results)
    assert df["model"].tolist() == ["reconstruction (nsd_a2a) (nsd a2a)",
                                    "reconstruction (nsd_e2a) (nsd e2a lstm causal)"]
    df.loc[df.sig == "recB", "chance_pcc"] = 0.5  # another model's predictions: another null
    chance = R.chance_table(df)
    assert list(chance.index) == ["toy (reconstruction (nsd_a2a) (nsd a2a))",
                                  "toy (reconstruction (nsd_e2a) (nsd e2a lstm causal))"]
    assert chance.loc["toy (reconstruction (nsd_e2a) (nsd e2a lstm causal))", "chance_pcc"] == "0.500"
    assert chance.loc["toy (reconstruction (nsd_a2a) (nsd a2a))", "chance_pcc"] != "0.500"
