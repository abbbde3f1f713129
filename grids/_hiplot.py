"""HiPlot explorers for bm2 metrics.

Serve a dashboard:  ``python -m hiplot dora.hiplot.load --host 127.0.0.1 --port 5005`` then type
``GRID_OR_SIGS explorer=ClipHP`` in the page; or write a static file with ``python -m scripts.dashboard``.
"""

from __future__ import annotations

import typing as tp

from dora.hiplot import HiPlotExplorer, roundf

TEST_KEYS = ("top1_segment", "top10_segment", "top1_word", "top10_word", "chance_top10_segment")


class ClipHP(HiPlotExplorer):
    """Speech retrieval: train / valid loss per epoch and, on the last epoch, test top-k in percent."""

    def process_metrics(self, xp: tp.Any, metrics: dict[str, tp.Any]) -> dict[str, tp.Any]:
        out: dict[str, tp.Any] = {}
        for stage in ("train", "valid"):
            if "loss" in metrics.get(stage, {}):
                out[f"{stage}_loss"] = roundf(metrics[stage]["loss"])
        for key in TEST_KEYS:
            if key in metrics.get("test", {}):
                out[f"test_{key}"] = roundf(100 * metrics["test"][key], 2)
        return out
