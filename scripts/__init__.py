"""Command-line scripts of bm2 (``python -m scripts.NAME``)."""
