"""A Jupyter kernelspec for the notebook tests: this interpreter (the venv's ipykernel) under a temporary
JUPYTER_PATH, so that executing ``notebook_templates/`` never depends on the user's Jupyter set-up."""

from __future__ import annotations

import json
import sys
from pathlib import Path

KERNEL = "bm2-test"


def install_kernel(tmp_path: Path, monkeypatch) -> str:
    """Write the kernelspec under ``tmp_path`` and point Jupyter at it; returns the kernel name."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bm2 test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return KERNEL
