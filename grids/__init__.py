"""Dora grid files of bm2 (``dora grid NAME``); modules starting with ``_`` hold explorers."""
