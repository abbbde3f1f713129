"""Window datasets for every task: windows and anchors, split strategies, targets, scaling and batching."""

from .build import build_datasets
from .crops import CropParams
from .dataset import (TARGETS, AugmentParams, Datasets, LazyArray, NormParams, PreparedRecording, SegmentDataset,
                      collate)
from .segments import WindowParams, make_segments, segment_uid
from .splits import SPLITS, STRATEGIES, SplitParams, assign_split

__all__ = ["AugmentParams", "CropParams", "Datasets", "LazyArray", "NormParams", "PreparedRecording", "SPLITS",
           "STRATEGIES", "SegmentDataset", "SplitParams", "TARGETS", "WindowParams", "assign_split", "build_datasets",
           "collate", "make_segments", "segment_uid"]
