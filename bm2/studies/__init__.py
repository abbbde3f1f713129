"""Studies: registered sources of brain recordings (see :mod:`bm2.studies.base`)."""

from .base import (Recording, Study, StudyError, UnknownStudyError, get_study_class, layout_positions,
                   study_names, study_root)

__all__ = ["Recording", "Study", "StudyError", "UnknownStudyError", "get_study_class", "layout_positions",
           "study_names", "study_root"]
