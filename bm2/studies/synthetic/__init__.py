"""The embedded synthetic study: a simulated MEG listening experiment generated locally (no download).

Importing this package registers :class:`SyntheticStudy` under the name ``"synthetic"``.
"""

from .study import GEN_VERSION, SyntheticRecording, SyntheticStudy

__all__ = ["GEN_VERSION", "SyntheticRecording", "SyntheticStudy"]
