"""Grids reproducing Défossez et al. (2023), "Decoding speech perception from non-invasive brain recordings"."""
