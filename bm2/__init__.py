"""bm2: decoding speech from brain recordings (MEG, EEG, ECoG, sEEG) on one experiment-grid platform."""

__version__ = "0.1.0"
