"""sEEG / iEEG contacts: shaft and contact number from a name, bipolar re-referencing between neighbouring
contacts of a shaft, and the modality (sEEG or ECoG) an iEEG recording's channel types say.

Contact names are ``<shaft><number>`` (``A1``, ``LA10``, ``TI'3``, ``A01``: shaft ``A``, contact 1); the shaft is
the name without its trailing digits (spaces stripped). **Bipolar pairing** (:func:`bipolar_pairs`): on each
shaft, contacts ``n`` and ``n + 1`` that are both present form the channel ``<shaft><n>-<shaft><n+1>`` (anode
``n``, cathode ``n + 1``: ``A1-A2`` = A1 minus A2), as in Du-IN's release and most sEEG work (e.g. Mercier et al.
2022, NeuroImage). Contacts are only paired with a **direct** neighbour: when contact ``n + 1`` is missing or bad,
``n`` and ``n + 2`` are not paired (they are twice as far apart). A contact in no pair (the only good contact of a
shaft, or one isolated by bad neighbours), and a name without a contact number, gives no channel: it is dropped,
and the log names it. Each contact but a shaft's ends is in two channels, so the channels are not independent.
"""

from __future__ import annotations

import collections
import logging
import re
import typing as tp

import numpy as np

if tp.TYPE_CHECKING:
    import mne

logger = logging.getLogger(__name__)

_CONTACT = re.compile(r"^(.*?)\s*(\d+)$")
#: BIDS channels.tsv types of iEEG and the bm2 modality each one means
IEEG_TYPES = {"SEEG": "seeg", "DBS": "seeg", "ECOG": "ecog"}


def parse_contact(name: str) -> tuple[str, int] | None:
    """``(shaft, number)`` of a contact name (``"LA10"`` -> ``("LA", 10)``), None without a shaft or number."""
    match = _CONTACT.match(str(name).strip())
    if match is None or not match.group(1).strip():
        return None
    return match.group(1).strip(), int(match.group(2))


def bipolar_pairs(ch_names: tp.Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(anodes, cathodes, unpaired)``: every pair of direct neighbours ``n``, ``n + 1`` on one shaft among
    ``ch_names`` (the good contacts to re-reference), shafts in order of first appearance and contacts by
    number; ``unpaired`` the names in no pair (see the module docstring). Two names for one contact (``A1`` and
    ``A01``): the first is used, the other is unpaired."""
    shafts: dict[str, dict[int, str]] = {}
    unpaired: list[str] = []
    for name in ch_names:
        parsed = parse_contact(name)
        if parsed is None or parsed[1] in shafts.get(parsed[0], {}):
            unpaired.append(name)
            continue
        shafts.setdefault(parsed[0], {})[parsed[1]] = name
    anodes: list[str] = []
    cathodes: list[str] = []
    used: set[str] = set()
    for contacts in shafts.values():
        for number in sorted(contacts):
            if number + 1 in contacts:
                anodes.append(contacts[number])
                cathodes.append(contacts[number + 1])
                used.update((contacts[number], contacts[number + 1]))
    unpaired += [name for contacts in shafts.values() for name in contacts.values() if name not in used]
    return anodes, cathodes, [n for n in ch_names if n in set(unpaired)]


def set_bipolar(raw: mne.io.BaseRaw, source: str = "the recording") -> mne.io.BaseRaw:
    """``raw`` (loaded in memory) with its good sEEG contacts replaced by bipolar channels of neighbours
    (:func:`bipolar_pairs`) through :func:`mne.set_bipolar_reference`; each channel's location is the midpoint
    of its two contacts (when both have one). Other channel types are left as they are; bad sEEG contacts and
    unpaired ones are dropped (logged). Raises ``ValueError`` naming ``source`` when no pair is found."""
    import mne

    seeg = [raw.ch_names[i] for i in mne.pick_types(raw.info, seeg=True, dbs=True, exclude=[])]
    good = [c for c in seeg if c not in raw.info["bads"]]
    anodes, cathodes, unpaired = bipolar_pairs(good)
    if not anodes:
        raise ValueError(f"{source}: bipolar re-referencing (studies.bids.bipolar=true) found no two neighbouring "
                         f"sEEG contacts (names <shaft><number>, e.g. A1 and A2) among the good sEEG channels "
                         f"{good[:20]}; set studies.bids.bipolar=false")
    index = {c: i for i, c in enumerate(raw.ch_names)}
    infos = []
    for a, c in zip(anodes, cathodes):
        loc = np.array(raw.info["chs"][index[a]]["loc"], dtype=float)
        other = np.array(raw.info["chs"][index[c]]["loc"][:3], dtype=float)
        if np.isfinite(loc[:3]).all() and np.isfinite(other).all() and np.abs(loc[:3]).sum() and np.abs(other).sum():
            loc[:3] = (loc[:3] + other) / 2
        infos.append({"loc": loc})
    raw.load_data()
    raw = mne.set_bipolar_reference(raw, anodes, cathodes, ch_info=infos, drop_refs=True, copy=False,
                                    on_bad="ignore", verbose="error")
    dropped = [c for c in seeg if c in raw.ch_names]  # unpaired and bad contacts, still monopolar
    if dropped:
        raw.drop_channels(dropped)
    pairs = [f"{a}-{c}" for a, c in zip(anodes, cathodes)]
    logger.info("%s: %d bipolar sEEG channels (%s%s); contacts without a neighbour or bad, dropped: %s", source,
                len(pairs), ", ".join(pairs[:3]), " ..." if len(pairs) > 3 else "", dropped or "none")
    if unpaired:
        logger.info("%s: unpaired sEEG contacts (no direct neighbour on their shaft): %s", source, unpaired)
    return raw


def ieeg_modality(types: tp.Iterable[str]) -> str | None:
    """``seeg`` or ``ecog``: the modality most of the iEEG channel ``types`` (BIDS channels.tsv ``type``: SEEG,
    DBS, ECOG) say; None when there is none. Ties go to ``seeg``."""
    counts = collections.Counter(IEEG_TYPES[t] for t in (str(t).strip().upper() for t in types) if t in IEEG_TYPES)
    if not counts:
        return None
    return "seeg" if counts["seeg"] >= counts["ecog"] else "ecog"


__all__ = ["IEEG_TYPES", "bipolar_pairs", "ieeg_modality", "parse_contact", "set_bipolar"]
