"""gwilliams2022 (MEG-MASC) on its published raw format: KIT/Yokogawa ``.con`` files written by
:mod:`tests.studies.fixtures_kit` (mne reads KIT but cannot write it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bm2.cache import Cache
from bm2.preprocessing import PreprocessParams, pick_channels, preprocess
from bm2.studies.base import layout_positions
from bm2.studies.gwilliams2022 import Gwilliams2022

from .fixtures import GWILLIAMS_RECORDINGS
from .fixtures_kit import N_GRAD, N_REF, N_TRIG, SYSTEM_ID, write_gwilliams_kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("gwilliams2022_kit")
    return root, write_gwilliams_kit(root)


def _con(root: Path, sub: str, ses: str, task: str) -> Path:
    return root / f"sub-{sub}" / f"ses-{ses}" / "meg" / f"sub-{sub}_ses-{ses}_task-{task}_meg.con"


def test_con_file_reads_with_mne(kit):
    import mne
    from mne.io.constants import FIFF

    root, out = kit
    key = GWILLIAMS_RECORDINGS[0]
    written = out["written"][key]
    raw = mne.io.read_raw_kit(_con(root, *key), verbose="error")
    assert raw.info["sfreq"] == 1000.0 and raw.info["kit_system_id"] == SYSTEM_ID
    assert raw.n_times == written["counts"].shape[1] and raw.n_times > 30_000
    assert len(raw.ch_names) == N_GRAD + N_REF + N_TRIG + 1  # + the synthesised STI 014
    chs = raw.info["chs"]
    grads = [c for c in chs if c["kind"] == FIFF.FIFFV_MEG_CH]
    assert len(grads) == N_GRAD and {c["coil_type"] for c in grads} == {FIFF.FIFFV_COIL_KIT_GRAD}
    assert [c["ch_name"] for c in grads] == [f"MEG {i:03d}" for i in range(1, 209)]
    refs = [c for c in chs if c["kind"] == FIFF.FIFFV_REF_MEG_CH]
    assert len(refs) == N_REF and {c["coil_type"] for c in refs} == {FIFF.FIFFV_COIL_KIT_REF_MAG}
    locs = np.array([c["loc"][:3] for c in grads])
    assert np.allclose(np.linalg.norm(locs - [0, 0, 0.04], axis=1), 0.12)  # the 12 cm helmet sphere
    normals = np.array([c["loc"][9:12] for c in grads])
    assert (np.einsum("ij,ij->i", normals, locs - [0, 0, 0.04]) > 0).all()  # coil normals point outwards
    assert raw.info["lowpass"] == 200.0 and raw.info["highpass"] == 0.0

    data = raw.get_data(picks=list(range(N_GRAD + N_REF + N_TRIG)))
    expected = written["counts"].astype(float) * written["scale"][:, None]
    np.testing.assert_allclose(data, expected, rtol=1e-12, atol=0)
    head = written["source_head"]  # the FIF signal: equal up to half an int16 step of each channel
    err = np.abs(data[:N_GRAD, : head.shape[1]] - head)
    assert (err <= written["scale"][:N_GRAD, None] / 2 * (1 + 1e-9)).all()
    assert np.corrcoef(data[0, :2000], head[0])[0, 1] > 0.999

    events = mne.find_events(raw, "STI 014", verbose="error")  # trigger line 0 pulses at each word onset
    assert len(events) == written["n_words"] and set(events[:, 2]) == {1}


def test_study_enumerates_con_recordings(kit):
    root, _ = kit
    assert not list(root.glob("sub-*/ses-*/meg/*_meg.fif"))
    recs = list(Gwilliams2022(root).iter_recordings())
    assert [(r.subject, r.session, r.task) for r in recs] == list(GWILLIAMS_RECORDINGS)
    assert all(r.path.suffix == ".con" for r in recs)
    ev = recs[0].events()
    assert (ev.kind == "word").sum() == 84 and (ev.kind == "block").sum() == 12


def test_raw_picks_positions(kit):
    from mne.io.kit.kit import RawKIT

    root, _ = kit
    rec = next(iter(Gwilliams2022(root).iter_recordings()))
    raw = rec.raw()
    assert isinstance(raw, RawKIT) and raw.info["sfreq"] == 1000.0
    names = pick_channels(raw, ("meg",))
    assert names == [f"MEG {i:03d}" for i in range(1, 209)]  # axial gradiometers only, references excluded
    pos = rec.sensor_positions(names)
    assert pos.shape == (208, 2) and pos.min() >= 0 and pos.max() <= 1
    assert len(np.unique(pos.round(4), axis=0)) == 208
    np.testing.assert_allclose(pos, layout_positions(raw.info, names))  # mne's KIT-AD layout, not a fallback


def test_preprocess_kit(kit, tmp_path):
    root, _ = kit
    rec = next(iter(Gwilliams2022(root).iter_recordings()))
    entry = preprocess(rec, Cache(tmp_path), PreprocessParams(sample_rate=120.0, picks=("meg",)))
    brain = entry["brain"]
    assert brain.shape[0] == 208 and entry["positions"].shape == (208, 2)
    assert abs(brain.shape[1] - rec.raw().n_times * 120 / 1000) <= 1
    assert np.isfinite(np.asarray(brain)).all()
