"""The TextGrid parser of bm2.studies._common (forced-alignment files of MOUS and other studies)."""

from __future__ import annotations

import pytest

from bm2.studies import StudyError
from bm2.studies._common import read_textgrid

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 3
        intervals [1]:
            xmin = 0
            xmax = 0.4
            text = ""
        intervals [2]:
            xmin = 0.4
            xmax = 0.9
            text = "Het"
        intervals [3]:
            xmin = 0.9
            xmax = 1.5
            text = "zei ""hoi"""
    item [2]:
        class = "TextTier"
        name = "marks"
        xmin = 0
        xmax = 1.5
        points: size = 1
        points [1]:
            number = 0.5
            mark = "x"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
1.5
<exists>
1
"IntervalTier"
"phones"
0
1.5
2
0
0.7
"h"
0.7
1.5
"@"
'''


def test_textgrid_long_format_utf16(tmp_path):
    path = tmp_path / "a.TextGrid"
    path.write_text(LONG, encoding="utf-16")
    tiers = read_textgrid(path)
    assert list(tiers) == ["words"]
    assert tiers["words"] == [(0.0, 0.4, ""), (0.4, 0.9, "Het"), (0.9, 1.5, 'zei "hoi"')]


def test_textgrid_short_format(tmp_path):
    path = tmp_path / "b.TextGrid"
    path.write_text(SHORT)
    assert read_textgrid(path) == {"phones": [(0.0, 0.7, "h"), (0.7, 1.5, "@")]}


def test_not_a_textgrid(tmp_path):
    path = tmp_path / "c.TextGrid"
    path.write_text('File type = "ooTextFile"\nObject class = "Sound"\n')
    with pytest.raises(StudyError, match="not a Praat TextGrid"):
        read_textgrid(path)
