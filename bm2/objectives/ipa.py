"""Binary phonological features of the 39 ARPABET classes (39 x 14), the targets of DeMEGa's auxiliary IPA head.

Source: bm2's own encoding of textbook distinctive-feature values for General American English (Chomsky & Halle,
*The Sound Pattern of English*, 1968; Hayes, *Introductory Phonology*, 2009, ch. 4 feature charts), reduced to
the 14 binary features DeMEGa's description lists, in its order; "-" and unspecified are both 0. It is NOT the
original project's table (CC BY-NC code, never read), whose values are known only through a description that
says it maps the 39 classes to 27 vectors.

Coding choices (the features cannot separate everything):
- vowels are [-consonantal, +syllabic, +sonorant, +voice, +continuant, +dorsal]; rounded vowels are also
  [+labial]; the rhotic vowel ER is [+coronal]; diphthongs (AW AY EY OW OY) take their nucleus' values and
  [+diphthong]; AY's nucleus is front [a], AW's back [ɑ]; AO and OY's nucleus [ɔ] count as [+low];
- postalveolars (CH JH SH ZH) are [+coronal, +high]; affricates are [-continuant];
- glides W Y, R and HH are [-consonantal]; L is [+consonantal, +sonorant, +continuant].
Without a tense or strident feature 4 pairs share a vector: {IH, IY}, {UH, UW}, {TH, S}, {DH, Z} (35 distinct
vectors for 39 classes).
"""

from __future__ import annotations

import numpy as np

IPA_FEATURES = ("consonantal", "syllabic", "sonorant", "voice", "nasal", "continuant", "labial", "coronal",
                "dorsal", "high", "low", "back", "round", "diphthong")

# class: the 14 features above, in order (1 = +).
_TABLE = """
AA 0 1 1 1 0 1 0 0 1 0 1 1 0 0
AE 0 1 1 1 0 1 0 0 1 0 1 0 0 0
AH 0 1 1 1 0 1 0 0 1 0 0 1 0 0
AO 0 1 1 1 0 1 1 0 1 0 1 1 1 0
AW 0 1 1 1 0 1 0 0 1 0 1 1 0 1
AY 0 1 1 1 0 1 0 0 1 0 1 0 0 1
B  1 0 0 1 0 0 1 0 0 0 0 0 0 0
CH 1 0 0 0 0 0 0 1 0 1 0 0 0 0
D  1 0 0 1 0 0 0 1 0 0 0 0 0 0
DH 1 0 0 1 0 1 0 1 0 0 0 0 0 0
EH 0 1 1 1 0 1 0 0 1 0 0 0 0 0
ER 0 1 1 1 0 1 0 1 1 0 0 0 0 0
EY 0 1 1 1 0 1 0 0 1 0 0 0 0 1
F  1 0 0 0 0 1 1 0 0 0 0 0 0 0
G  1 0 0 1 0 0 0 0 1 1 0 1 0 0
HH 0 0 0 0 0 1 0 0 0 0 0 0 0 0
IH 0 1 1 1 0 1 0 0 1 1 0 0 0 0
IY 0 1 1 1 0 1 0 0 1 1 0 0 0 0
JH 1 0 0 1 0 0 0 1 0 1 0 0 0 0
K  1 0 0 0 0 0 0 0 1 1 0 1 0 0
L  1 0 1 1 0 1 0 1 0 0 0 0 0 0
M  1 0 1 1 1 0 1 0 0 0 0 0 0 0
N  1 0 1 1 1 0 0 1 0 0 0 0 0 0
NG 1 0 1 1 1 0 0 0 1 1 0 1 0 0
OW 0 1 1 1 0 1 1 0 1 0 0 1 1 1
OY 0 1 1 1 0 1 1 0 1 0 1 1 1 1
P  1 0 0 0 0 0 1 0 0 0 0 0 0 0
R  0 0 1 1 0 1 0 1 0 0 0 0 0 0
S  1 0 0 0 0 1 0 1 0 0 0 0 0 0
SH 1 0 0 0 0 1 0 1 0 1 0 0 0 0
T  1 0 0 0 0 0 0 1 0 0 0 0 0 0
TH 1 0 0 0 0 1 0 1 0 0 0 0 0 0
UH 0 1 1 1 0 1 1 0 1 1 0 1 1 0
UW 0 1 1 1 0 1 1 0 1 1 0 1 1 0
V  1 0 0 1 0 1 1 0 0 0 0 0 0 0
W  0 0 1 1 0 1 1 0 1 1 0 1 1 0
Y  0 0 1 1 0 1 0 0 1 1 0 0 0 0
Z  1 0 0 1 0 1 0 1 0 0 0 0 0 0
ZH 1 0 0 1 0 1 0 1 0 1 0 0 0 0
"""


def _parse() -> tuple[tuple[str, ...], np.ndarray]:
    rows = [line.split() for line in _TABLE.strip().splitlines()]
    return tuple(r[0] for r in rows), np.array([[int(v) for v in r[1:]] for r in rows], dtype=np.float32)


IPA_CLASSES, IPA_TABLE = _parse()  # 39 ARPABET classes (bm2.events.ARPABET order), [39, 14] float32


def ipa_targets(classes: list[str] | tuple[str, ...]) -> np.ndarray:
    """``[len(classes), 14]`` feature rows of ARPABET ``classes`` (case-insensitive, e.g. a label vocabulary).

    Raises ``ValueError`` naming the classes that are not among the 39.
    """
    index = {name: i for i, name in enumerate(IPA_CLASSES)}
    unknown = [c for c in classes if str(c).upper() not in index]
    if unknown:
        raise ValueError(f"no IPA features for class(es) {unknown}: the table covers the 39 ARPABET classes "
                         f"{list(IPA_CLASSES)}")
    return IPA_TABLE[[index[str(c).upper()] for c in classes]]
