"""End to end: train 2 configurations x 2 seeds (tiny), evaluate them, then the table / figure / report commands
and the notebooks must show exactly the numbers of the XPs' ``eval/summary.json``."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bm2 import results as R

from ..notebook_kernel import install_kernel
from ._cli import DORA, ROOT, TINY_ARGS

pytestmark = pytest.mark.slow

TINY = TINY_ARGS + ["optim.epochs=2"]
CONFIGS = [("clip", 0), ("clip", 1), ("mse", 0), ("mse", 1)]
LABELS = {"clip": "mel + contrastive", "mse": "mel regression"}
GRID = "tinygrid"


def _sig(stdout: str) -> str:
    match = re.search(r"Test results of XP (\w+)", stdout)
    assert match, stdout[-3000:]
    return match.group(1)


@pytest.fixture(scope="module")
def xps(tmp_path_factory):
    """Four trained and evaluated XPs, grouped in a grid folder as ``dora grid`` would."""
    base = tmp_path_factory.mktemp("tables")
    env = dict(os.environ, BM2_DATA=str(base / "data"), BM2_CACHE=str(base / "cache"),
               BM2_XP_DIR=str(base / "xps"), BM2_NO_PROGRESS="1", PYTHONUNBUFFERED="1")

    def dora(loss, seed):
        return [DORA, "run", *TINY, f"loss.name={loss}", f"seed={seed}"]

    # The first run generates the study and fills the cache; the others only read them, so they run in parallel.
    first = subprocess.run(dora(*CONFIGS[0]), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:]
    sigs = {CONFIGS[0]: _sig(first.stdout)}
    procs = {c: subprocess.Popen(dora(*c), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True) for c in CONFIGS[1:]}
    for config, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        sigs[config] = _sig(out)
    ev = subprocess.run([sys.executable, "-m", "scripts.run_eval_probs", *sigs.values()], cwd=ROOT, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert ev.returncode == 0, ev.stdout[-3000:]
    grid = base / "xps" / "grids" / GRID
    grid.mkdir(parents=True)
    for sig in sigs.values():
        (grid / sig).symlink_to(base / "xps" / "xps" / sig)
    summaries = {c: json.loads((base / "xps" / "xps" / s / "eval" / "summary.json").read_text())
                 for c, s in sigs.items()}
    return {"env": env, "base": base, "sigs": sigs, "summaries": summaries}


def _run(xps, module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=xps["env"], capture_output=True,
                          text=True, timeout=300)


def _expected_cells(xps, metric):
    """``{label: "mean ± sd"}`` computed by hand from the summaries (percent, sample sd over the two seeds)."""
    cells = {}
    for loss, label in LABELS.items():
        values = [100 * xps["summaries"][(loss, seed)]["metrics"][metric] for seed in (0, 1)]
        cells[label] = f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"
    chance = 100 * xps["summaries"][CONFIGS[0]]["metrics"][f"chance_{metric}"]
    cells["chance"] = f"{chance:.1f}"
    return cells


def test_make_tables_matches_the_summaries(xps):
    out = xps["base"] / "tables"
    proc = _run(xps, "scripts.make_tables", GRID, "--out", str(out), "--compare", LABELS["clip"], LABELS["mse"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = _expected_cells(xps, "top10_segment")
    table = R.parse_markdown((out / "table.md").read_text())
    assert table.columns.tolist() == ["synthetic"]
    assert table["synthetic"].to_dict() == expected
    tex = (out / "table.tex").read_text()
    for label, cell in expected.items():
        assert label + " & " + cell.replace("±", r"$\pm$") + r" \\" in tex
    csv = (out / "table.csv").read_text(encoding="utf-8").splitlines()
    assert f"{LABELS['clip']},{expected[LABELS['clip']]}" in csv
    # Wilcoxon: per-subject accuracy averaged over seeds, from the summaries' per-subject groups
    per_subject = {loss: {s: np.mean([100 * xps["summaries"][(loss, seed)]["groups"]["subject"][s]["top10_segment"]
                                      for seed in (0, 1)]) for s in ("01", "02")} for loss in LABELS}
    wil = R.parse_markdown((out / "wilcoxon.md").read_text().split("\n\n", 1)[1]).loc["synthetic"]
    assert wil["n subjects"] == "2"
    assert wil["mean A"] == f"{np.mean(list(per_subject['clip'].values())):.2f}"
    assert wil["mean B"] == f"{np.mean(list(per_subject['mse'].values())):.2f}"


def test_make_tables_without_eval_names_the_fix(xps):
    sig = xps["sigs"][CONFIGS[0]]
    copy = xps["base"] / "unevaluated" / sig
    shutil.copytree(xps["base"] / "xps" / "xps" / sig, copy, ignore=shutil.ignore_patterns("eval"))
    proc = _run(xps, "scripts.make_tables", str(copy), "--out", str(xps["base"] / "nothing"))
    assert proc.returncode == 2
    assert f"run `python -m scripts.run_eval_probs {sig}` first" in proc.stderr


def _check_png(data: bytes | Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(data) if isinstance(data, bytes) else data)
    assert img.shape[0] >= 300 and img.shape[1] >= 400
    rgb = img[..., :3]
    assert (rgb.min(axis=-1) < 0.9).mean() > 0.01  # drawn, not blank
    assert len(np.unique((rgb * 255).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1]))) > 10


def test_figures(xps):
    out = xps["base"] / "figures"
    proc = _run(xps, "scripts.figures", *xps["sigs"].values(), "--out", str(out))  # signatures as targets
    assert proc.returncode == 0, proc.stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["subjects_top10_segment.png", "topk_segment.png", "topk_word.png", "training.png"]
    for name in names:
        _check_png(out / name)


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.imgs: list[str] = []
        self._cell = False

    def handle_starttag(self, tag, attrs):
        self._cell = tag in ("td", "th")
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data.strip())


def test_report(xps):
    out = xps["base"] / "report.html"
    proc = _run(xps, "scripts.report", GRID, "--out", str(out), "--compare", LABELS["clip"], LABELS["mse"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    parser = _Html()
    parser.feed(out.read_text())
    for metric in ("top10_segment", "top1_segment", "top1_word", "top10_word"):
        for cell in _expected_cells(xps, metric).values():
            assert cell in parser.cells, (metric, cell)
    assert set(xps["sigs"].values()) <= set(parser.cells)
    n_candidates = xps["summaries"][CONFIGS[0]]["metrics"]["n_candidates"]
    assert f"{n_candidates:.0f}" in parser.cells
    assert len(parser.imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in parser.imgs)
    for src in parser.imgs:
        _check_png(base64.b64decode(src.split(",", 1)[1]))


@pytest.fixture
def kernel(xps, tmp_path, monkeypatch):
    """A kernelspec running this interpreter (the venv's ipykernel), and the notebooks' environment."""
    kernel = install_kernel(tmp_path, monkeypatch)
    for key in ("BM2_DATA", "BM2_CACHE", "BM2_XP_DIR", "BM2_NO_PROGRESS"):
        monkeypatch.setenv(key, xps["env"][key])
    monkeypatch.setenv("BM2_TARGETS", GRID)
    return kernel


def _execute(name: str, kernel: str, cwd: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebook_templates" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=180, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_notebooks(xps, kernel, tmp_path, monkeypatch):
    main = _stdout(_execute("main_table", kernel, tmp_path))
    table = R.parse_markdown(main.split("mean ± sd over seeds", 1)[1].split("Test sets", 1)[0])
    assert table["synthetic"].to_dict() == _expected_cells(xps, "top10_segment")

    nb = _execute("figures", kernel, tmp_path)
    pngs = [o.data["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(pngs) == 4
    for png in pngs:
        _check_png(base64.b64decode(png))

    stats_text = _stdout(_execute("dataset_statistics", kernel, tmp_path))
    stats = R.parse_markdown(stats_text[stats_text.index("| study"):]).loc["synthetic"]
    metrics = xps["summaries"][CONFIGS[0]]["metrics"]
    assert int(stats["subjects"]) == 2 and int(stats["recordings"]) == 2
    assert int(stats["test segments"]) == metrics["n_segments"]
    assert int(stats["test vocabulary"]) == metrics["n_words"]
    assert int(stats["vocabulary"]) >= int(stats["test vocabulary"])
    assert int(stats["train segments"]) > 0 and int(stats["channels"]) > 0 and float(stats["hours"]) > 0

    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("BM2_TARGETS")
    with pytest.raises(CellExecutionError, match="set \\$BM2_TARGETS"):
        _execute("main_table", kernel, tmp_path)
