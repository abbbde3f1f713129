"""Datasets of brain / speech windows: splits, segments, scaling and batching."""

from .dataset import Datasets, LazyArray, NormParams, PreparedRecording, SegmentDataset, build_datasets, collate
from .segments import SPLITS, SplitParams, WindowParams, assign_split, make_segments, segment_uid

__all__ = ["Datasets", "LazyArray", "NormParams", "PreparedRecording", "SPLITS", "SegmentDataset", "SplitParams",
           "WindowParams", "assign_split", "build_datasets", "collate", "make_segments", "segment_uid"]
