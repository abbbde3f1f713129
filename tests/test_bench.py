"""``python -m scripts.bench``: every number is produced, finite and positive, and bench.json / bench.md agree.

Speed is never asserted here: the benchmark reports ratios and targets, the tests only check the report.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bm2.utils.precision import cpu_has_native_bf16
from scripts.bench import SECTIONS, format_row, markdown, row, run

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_SECTION = {"preprocessing": 2, "dataloading": 11, "training": 8, "evaluation": 3, "cache_reuse": 4,
                    "superlet": 1, "libribrain": 1}


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _finite_numbers(obj: object, where: str = "details") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite_numbers(v, f"{where}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), f"{where} is {obj}"


def _check_report(out: Path, sections: tuple[str, ...]) -> dict:
    result = json.loads((out / "bench.json").read_text())
    rows = result["rows"]
    assert rows, "no measure in bench.json"
    for r in rows:
        assert _positive(r["value"]), r
        for key in ("baseline", "ratio"):
            assert r[key] is None or _positive(r[key]), (key, r)
        if r["baseline"] is not None:
            assert r["ratio"] is not None and r["baseline_label"], r
        if r["target"] is not None:  # judged at full sizes only
            assert (r["met"] is None) == result["quick"] and r["target"]["op"] in (">=", ">", "<", "<="), r
        else:
            assert r["met"] is None
    counts = {s: sum(r["section"] == s for r in rows) for s in sections}
    for s in sections:
        expected = ROWS_PER_SECTION[s] * (len(result["details"]["training"]["devices"]) if s == "training" else 1)
        if s == "training" and cpu_has_native_bf16():
            expected += 1  # bf16 autocast vs fp32 at the paper size, where the CPU has native bf16
        if s == "training" and not result["quick"]:
            expected += 1  # torch.compile vs eager at the paper size, on CPU (not in --quick)
        if s == "dataloading" and result["details"]["dataloading"]["window_kernel"]:
            expected += 2  # the loader's torch path, and the kernel against it
        if s == "dataloading" and "training" not in sections:
            expected -= 1  # the loader-vs-training row needs both sections
        assert counts[s] == expected, (s, counts)
    assert set(result["details"]) == set(sections) and set(result["section_seconds"]) == set(sections)
    assert all(_positive(v) for v in result["section_seconds"].values())
    _finite_numbers(result["details"])
    # the markdown table is exactly the rendering of the JSON rows, in the same order
    md = (out / "bench.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| measure | value | baseline | ratio | target | met? |"
    assert table[1:] == ["| " + " | ".join(format_row(r)) + " |" for r in rows]
    assert markdown(rows) in md
    for line, r in zip(table[1:], rows):
        met = line.rsplit("|", 2)[-2].strip()
        unjudged = "—" if r["target"] is None else "not judged (quick)"
        assert met == {None: unjudged, True: "yes", False: "**no**"}[r["met"]]
    return result


def test_rows_targets_and_table():
    rows = [row("evaluation", "time", 1.5, "s", target=("value", "<", 2.0)),
            row("dataloading", "bandwidth", 100.0, "MB/s", baseline=1000.0, baseline_label="copy", ratio=0.1,
                ratio_label="of copy", target=("ratio", ">=", 0.5)),
            row("training", "speed", 30.0, "samples/s")]
    assert [r["met"] for r in rows] == [True, False, None]
    cells = [format_row(r) for r in rows]
    assert cells[0] == ["time", "1.5 s", "—", "—", "value < 2 s", "yes"]
    assert cells[1] == ["bandwidth", "100 MB/s", "1,000 MB/s (copy)", "0.10x of copy", "ratio >= 0.5x", "**no**"]
    assert cells[2][2:] == ["—", "—", "—", "—"]
    assert markdown(rows).count("\n") == 1 + len(rows)
    slower = row("training", "bf16", 8.0, "samples/s", baseline=10.0, baseline_label="fp32", ratio=0.8,
                 ratio_label="faster")
    assert format_row(slower)[3] == "0.80x (1.25x slower)"


def test_quick_evaluation_and_training_in_process(tmp_path):
    sections = ("training", "evaluation")
    result = run(tmp_path, quick=True, only=sections, workdir=tmp_path)
    assert result["quick"] is True
    assert all(r["met"] is None for r in result["rows"])  # tiny sizes: nothing judged
    _check_report(tmp_path, sections)
    assert not list(tmp_path.glob("bm2-bench-*")), "the temporary folder was not removed"


def test_quick_superlet_section(tmp_path):
    result = run(tmp_path, quick=True, only=("superlet",), workdir=tmp_path)
    _check_report(tmp_path, ("superlet",))
    details = result["details"]["superlet"]
    assert details["bm2_wavelets"] > details["mne_wavelets"] == 50
    assert "tfr_array_morlet" in result["rows"][0]["baseline_label"]


def test_quick_libribrain_grouping_loader(tmp_path):
    result = run(tmp_path, quick=True, only=("libribrain",), workdir=tmp_path)
    _check_report(tmp_path, ("libribrain",))
    (r,) = result["rows"]
    assert "grouping K=10" in r["measure"] and r["baseline_label"] == "plain h5 slice read"
    details = result["details"]["libribrain"]
    assert details["windows"] == details["train_windows"] and details["groups"] < details["windows"]
    assert details["grouped_read"].startswith("the solver's loader (BatchLoader")  # the path training uses


@pytest.mark.slow
def test_quick_benchmark_cli_produces_every_number(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "scripts.bench", "--quick", "--out", str(out),
                           "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _check_report(out, SECTIONS)
    assert markdown(result["rows"]) in proc.stdout  # the table is printed too
    measures = " ".join(r["measure"] for r in result["rows"])
    for w in ("0 threads", "1 thread,", "2 threads"):
        assert f"training loader (BatchLoader), {w}" in measures
    assert "torch DataLoader (before), 2 worker processes" in measures
    assert "per worker" in measures and "per thread" in measures
    assert "training loader (BatchLoader), 2 threads vs a bare gather" in measures
    if result["details"]["dataloading"]["window_kernel"]:
        assert "training loader (BatchLoader), 2 threads vs the same loader's torch path" in measures
    assert "paper size" in measures and "small default" in measures
    for model in ("DeMEGa", "Du-IN classifier", "Du-IN VQ-VAE", "ECoG 3-D ResNet decoder", "ECoG LSTM decoder",
                  "ECoG 3-D Swin decoder"):
        assert f"train step {model} paper size" in measures
    assert {r["target"]["on"] for r in result["rows"] if r["target"]} == {"value", "ratio"}
    assert [p.name for p in tmp_path.iterdir()] == ["results"]  # the work folder is cleaned up
