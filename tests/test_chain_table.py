"""The result table of chained XPs from hand-made XP folders (history.json + .hydra/config.yaml): rows by how the
classifier was started, mean ± s.e. over subjects (seeds averaged first), validation-only selection next to the
optimistic rule, chance; and the same table through make_tables --chain and the report's section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from bm2 import results as R

from .notebook_kernel import install_kernel

CHANCE1, CHANCE5 = 1 / 61, 5 / 61


def _xp(root: Path, sig: str, loss: str, subjects: list[str] | None, parent: str | None = None,
        history: list[dict] | None = None, task: str = "classification", seed: int = 0, model: str = "duin") -> Path:
    folder = root / sig
    (folder / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "model": {"name": model}, "loss": {"name": loss}, "dset": {"subjects": subjects},
           "chain": {"parent": parent}, "test": {"task": task},
           "optim": {"best_metric": "top1" if task == "classification" else "loss",
                     "best_mode": "max" if task == "classification" else "min"}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    history = history or [{"train": {"loss": 1.0}, "valid": {"loss": 1.0}, "test": {"reconstruction": 0.5}}]
    (folder / "history.json").write_text(json.dumps(history))
    return folder


def _cls_history(valid: list[float], test_epoch: list[float] | None, top1: float, top5: float) -> list[dict]:
    """Epochs with these validation top-1 (and per-epoch test top-1); the last holds the final test metrics."""
    history = [{"train": {"loss": 1.0}, "valid": {"top1": v}} for v in valid]
    for h, t in zip(history, test_epoch or []):
        h["test_epoch"] = {"top1": t}
    history[-1]["test"] = {"top1": top1, "top5": top5, "chance_top1": CHANCE1, "chance_top5": CHANCE5,
                           "n_items": 61}
    return history


@pytest.fixture
def chain(tmp_path):
    """Two subjects' chains (VQ-VAE, MAE; classifiers from scratch, from the VQ-VAE, from the MAE) and a
    multi-subject pre-training with one classifier per subject, and braindecode's EEGConformer per subject (no
    parent); subject 001's scratch classifier has two seeds."""
    xps = tmp_path / "xps"
    _xp(xps, "vqall", "duin_vqvae", None, task="pretraining")
    _xp(xps, "maeall", "duin_mae", None, "vqall", task="pretraining")
    cls = []
    values = {  # subject -> ablation -> (top1, top5); validation ties let the optimistic rule pick a later epoch
        "001": {"scratch": (0.30, 0.60), "vq": (0.40, 0.70), "mae": (0.50, 0.80), "multi": (0.20, 0.50)},
        "002": {"scratch": (0.50, 0.80), "vq": (0.40, 0.90), "mae": (0.70, 1.00), "multi": (0.40, 0.70)},
    }
    for s, vals in values.items():
        _xp(xps, f"vq{s}", "duin_vqvae", [s], task="pretraining")
        _xp(xps, f"mae{s}", "duin_mae", [s], f"vq{s}", task="pretraining")
        for name, parent in (("scratch", None), ("vq", f"vq{s}"), ("mae", f"mae{s}"), ("multi", "maeall")):
            top1, top5 = vals[name]
            # epochs 2 and 3 tie on validation; the test top-1 of epoch 3 is 10 points above the selected one
            history = _cls_history([0.1, 0.6, 0.6], [0.0, top1, top1 + 0.1], top1, top5)
            cls.append(_xp(xps, f"cls_{name}{s}", "cross_entropy", [s], parent, history))
    for s, top1 in (("001", 0.10), ("002", 0.20)):  # the baseline model: a row of its own, not "no pre-training"
        cls.append(_xp(xps, f"cls_conformer{s}", "cross_entropy", [s], None, _cls_history([0.5], None, top1, 0.5),
                       model="eegconformer"))
    # a second seed of 001's scratch classifier: the subject's value is the mean of its seeds
    cls.append(_xp(xps, "cls_scratch001s1", "cross_entropy", ["001"], None,
                   _cls_history([0.5], None, 0.50, 0.60), seed=1))
    return xps, cls


def test_chain_table_values(chain):
    xps, cls = chain
    records = R.load_chain([*cls, xps / "vq001", xps / "maeall"])  # pre-training XPs are left out
    assert len(records) == 11
    rows = R.chain_rows(records).set_index("sig")
    assert rows.loc["cls_scratch001", "stage"] == "no pre-training"
    assert rows.loc["cls_vq002", "stage"] == "VQ-VAE"
    assert rows.loc["cls_mae002", "stage"] == "VQ-VAE → MAE"
    assert rows.loc["cls_multi001", "stage"] == "VQ-VAE → MAE, multi-subject pre-training"
    assert rows.loc["cls_conformer001", "stage"] == "EEGConformer (braindecode), no pre-training"
    assert rows.loc["cls_mae001", "optimistic_top1"] == pytest.approx(60.0)   # tie broken by the test accuracy
    assert rows.loc["cls_mae001", "top1"] == pytest.approx(50.0)              # validation only: the first best epoch
    assert rows.loc["cls_scratch001s1", "optimistic_top1"] != rows.loc["cls_scratch001s1", "optimistic_top1"]  # NaN

    table = R.chain_table(records)
    assert list(table.index) == ["no pre-training", "EEGConformer (braindecode), no pre-training", "VQ-VAE",
                                 "VQ-VAE → MAE", "VQ-VAE → MAE, multi-subject pre-training", "chance"]
    assert table.loc["EEGConformer (braindecode), no pre-training", "top-1 %"] == "15.0 ± 5.0"
    # no pre-training: subject 001 = mean(30, 50) = 40 over its seeds, 002 = 50 -> 45 ± sd(40, 50) / sqrt(2) = 5
    assert table.loc["no pre-training", "top-1 %"] == "45.0 ± 5.0"
    assert table.loc["no pre-training", "top-5 %"] == "70.0 ± 10.0"      # 001: mean(60, 60), 002: 80
    # optimistic: 001 = seed 0 only (seed 1 has no per-epoch test) = 40, 002 = 60 -> 50 ± 10
    assert table.loc["no pre-training", "optimistic top-1 %"] == "50.0 ± 10.0"
    assert table.loc["VQ-VAE", "top-1 %"] == "40.0 ± 0.0"
    assert table.loc["VQ-VAE → MAE", "top-1 %"] == "60.0 ± 10.0"
    assert table.loc["VQ-VAE → MAE", "optimistic top-1 %"] == "70.0 ± 10.0"
    assert table.loc["VQ-VAE → MAE, multi-subject pre-training", "top-1 %"] == "30.0 ± 10.0"
    assert table.loc["VQ-VAE → MAE", "subjects"] == "2"
    assert table.loc["chance", "top-1 %"] == f"{100 / 61:.1f}" and table.loc["chance", "top-5 %"] == f"{500 / 61:.1f}"


def test_one_subject_has_no_standard_error_and_errors_name_what_to_run(chain, tmp_path):
    xps, cls = chain
    table = R.chain_table(R.load_chain([xps / "cls_mae001"]))
    assert table.loc["VQ-VAE → MAE", "top-1 %"] == "50.0" and table.loc["VQ-VAE → MAE", "subjects"] == "1"
    half = _xp(xps, "half", "cross_entropy", ["001"], None, [{"train": {}, "valid": {"top1": 0.1}}])
    with pytest.raises(R.ResultsError, match="half has not finished.*dora run -f half"):
        R.load_chain([half])
    orphan = _xp(xps, "orphan", "cross_entropy", ["001"], "gone", _cls_history([0.1], None, 0.1, 0.2))
    with pytest.raises(R.ResultsError, match="parent gone is not in"):
        R.load_chain([orphan])
    with pytest.raises(R.ResultsError, match="no classification XP"):
        R.load_chain([xps / "vq001"])


def test_optimistic_rule_on_a_hand_made_history():
    history = _cls_history([0.2, 0.4, 0.4, 0.3], [0.9, 0.1, 0.3, 0.8], 0.1, 0.5)
    assert R.optimistic_top1(history) == pytest.approx(0.3)           # best validation 0.4 (epochs 2, 3) -> max test
    assert R.optimistic_top1(history, "top1", "min") == pytest.approx(0.9)
    assert math.isnan(R.optimistic_top1(_cls_history([0.2], None, 0.1, 0.5)))  # no per-epoch test metrics
    assert math.isnan(R.optimistic_top1([]))


def test_make_tables_chain_and_report_section(chain, tmp_path):
    from scripts.make_tables import main
    from scripts.report import chain_section

    xps, cls = chain
    out = tmp_path / "tables"
    assert main([*map(str, cls), "--chain", "--out", str(out)]) == 0
    text = (out / "chain.md").read_text(encoding="utf-8")
    table = R.parse_markdown(text[text.index("|"):])
    assert table.loc["VQ-VAE → MAE", "top-1 %"] == "60.0 ± 10.0" and table.loc["chance", "top-1 %"] == "1.6"
    assert {"chain.csv", "chain.tex", "chain_xps.csv"} <= {p.name for p in out.iterdir()}
    # the report's section (results as load_all gives them: task, folder and the argv of the summary's meta)
    def result(folder: Path) -> dict:
        parent = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text())["chain"]["parent"]
        return {"task": "classification", "folder": folder,
                "meta": {"argv": ["recipe=duin_classifier"] + ([f"chain.parent={parent}"] if parent else [])}}

    html = chain_section([result(f) for f in cls])
    assert "Chained XPs" in html and "60.0 ± 10.0" in html and "optimistic" in html
    assert chain_section([result(xps / "cls_scratch002")]) == ""  # no parent: no section
    # a classifier without config (e.g. evaluated elsewhere) and no parent: no section, no error
    assert chain_section([{"task": "classification", "folder": tmp_path / "nowhere", "meta": {"argv": []}}]) == ""


@pytest.mark.slow
def test_chain_notebook_shows_the_table(chain, tmp_path, monkeypatch):
    """notebook_templates/chain_table.ipynb, executed top to bottom, prints the same table as chain_table."""
    import nbformat
    from nbclient import NotebookClient

    xps, cls = chain
    kernel = install_kernel(tmp_path, monkeypatch)
    monkeypatch.setenv("BM2_TARGETS", " ".join(map(str, cls)))
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", str(root))
    nb = nbformat.read(root / "notebook_templates" / "chain_table.ipynb", as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")
    table = R.parse_markdown(text[text.index("| stage"):])
    assert table.to_dict() == R.chain_table(R.load_chain(cls)).to_dict()
    assert table.loc["VQ-VAE → MAE", "top-1 %"] == "60.0 ± 10.0"
