"""Crops of continuous recordings for self-supervised pre-training (``dset.crops``).

Du-IN pre-trains its VQ-VAE and MAE on 4-s crops (4000 samples at 1 kHz, 40 tokens of 100 samples) cut from
continuous sEEG, not on the 3-s word epochs its classifier reads (``model_params.seq_len = 4000``,
``train/duin/run_{vqvae,mae}.py``). With ``dset.crops.length`` set, the builder asks every selected study for the
continuous recordings of the selected subjects (:meth:`bm2.studies.base.Study.iter_continuous`) and, when each of
them has some, trains on crops of ``length`` seconds every ``stride`` seconds inside the recordings' blocks, the
blocks split by hash (``valid`` / ``test`` fractions, ``dset.split.seed``). Otherwise it says so in the log and
falls back to the windows of ``dset.window`` (the epochs). The original draws each crop at a random offset;
bm2 takes overlapping crops on a fixed grid (``stride``, 1 s by default) so that an epoch is deterministic.
"""

from __future__ import annotations

import dataclasses

from .segments import STRIDE, WindowParams
from .splits import SplitParams


@dataclasses.dataclass(frozen=True)
class CropParams:
    """``dset.crops``: crops of ``length`` s every ``stride`` s (None: ``length``) of continuous recordings,
    split by blocks with ``valid`` / ``test`` fractions; ``length`` None (the default) is off."""

    length: float | None = None
    stride: float | None = 1.0
    valid: float = 0.1
    test: float = 0.1

    def __post_init__(self) -> None:
        if self.length is not None and self.length <= 0:
            raise ValueError(f"dset.crops.length must be > 0 seconds (or null: off), got {self.length}")
        if self.stride is not None and self.stride <= 0:
            raise ValueError(f"dset.crops.stride must be > 0 seconds (or null: the crop length), got {self.stride}")

    @property
    def active(self) -> bool:
        return self.length is not None

    def window(self) -> WindowParams:
        """Windows ``[0, length]`` s strided every ``stride`` s in every split (no brain offset)."""
        if self.length is None:
            raise ValueError("dset.crops.length is null: crops are off")
        return WindowParams(tmin=0.0, tmax=float(self.length), stride=float(self.stride or self.length),
                            offset_ms=0.0, anchor=STRIDE)

    def split(self, seed: int = 0) -> SplitParams:
        """Blocks of the continuous recordings to train / valid / test by hash, seeded."""
        return SplitParams(strategy="hash", test=self.test, valid=self.valid, seed=seed)


__all__ = ["CropParams"]
