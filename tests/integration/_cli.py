"""What the integration tests share to drive the real CLI: paths and the tiny overrides of ``grids/_tiny.py``."""

from __future__ import annotations

import sys
from pathlib import Path

from grids._tiny import TINY, TINY_MODEL, as_overrides

ROOT = Path(__file__).resolve().parents[2]
DORA = str(Path(sys.executable).parent / "dora")
TINY_ARGS = as_overrides(TINY)              # tiny synthetic study + tiny model
TINY_MODEL_ARGS = as_overrides(TINY_MODEL)  # tiny model only (fixtures of the real studies)
