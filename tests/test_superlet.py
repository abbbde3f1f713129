"""The superlet transform: parity with the authors' reference code, closed-form checks, errors.

Parity: every case of ``superlet_ref.npz`` (3 signals x 5 settings, outputs of the reference
``superlets(data[None], fs, foi, c1, ord)``, stored as float32) matches with rtol = REFERENCE_RTOL = 1e-6;
the largest relative error observed is 6e-8, i.e. the float32 rounding of the stored outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bm2.superlet import REFERENCE_RTOL, foi_from_config, morlet, superlet, wavelet_length

FIXTURE_DIRS = [Path(__file__).parent / "fixtures", Path(os.environ.get("BM2_SHARED", "/work/shared")) / "fixtures"]


def _fixture() -> tuple[dict, dict]:
    for d in FIXTURE_DIRS:
        if (d / "superlet_ref.npz").exists():
            data = np.load(d / "superlet_ref.npz")
            return {k: data[k] for k in data.files}, json.loads((d / "superlet_ref.json").read_text())
    pytest.skip(f"superlet_ref.npz not found in {FIXTURE_DIRS}")


SIGNALS = ["tones", "sine10", "noise"]
CASES = ["faslt_c3_o1_30", "slt_c3_o5", "cwt_c3_o1", "faslt_c2_o1_10", "faslt_c3_o1p5_7p5"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("sig", SIGNALS)
def test_matches_the_reference_implementation(sig: str, case: str) -> None:
    data, desc = _fixture()
    assert set(desc["cases"]) == set(CASES) and set(desc["signals"]) == set(SIGNALS)
    settings = desc["cases"][case]
    ref = data[f"{sig}__{case}"]
    out = superlet(data[f"x_{sig}"], desc["fs"], data["foi"], settings["c1"], settings["order_range"],
                   dtype=np.float64)
    assert out.shape == ref.shape == (50, desc["n_times"])
    np.testing.assert_allclose(out, ref, rtol=REFERENCE_RTOL, atol=1e-9 * ref.max())
    rel = np.abs(out - ref) / np.maximum(np.abs(ref), 1e-300)
    assert rel[ref > 1e-6 * ref.max()].max() < 2e-7  # observed: 6e-8 (float32 storage)


def test_per_trial_and_leading_axes_are_kept() -> None:
    data, desc = _fixture()
    x = np.stack([data["x_tones"], data["x_noise"]])[None]  # [1, 2, T]
    out = superlet(x, desc["fs"], data["foi"], 3, (1, 30))
    assert out.shape == (1, 2, 50, 512) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1], data["noise__faslt_c3_o1_30"], rtol=1e-5, atol=1e-9)
    # the reference averages over trials; bm2 keeps them: the mean gives the reference back
    both = (data["tones__faslt_c3_o1_30"] + data["noise__faslt_c3_o1_30"]) / 2
    np.testing.assert_allclose(out[0].mean(0), both, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("order", [1, 5, (1, 30)])
def test_unit_sinusoid_gives_half_at_its_frequency(order) -> None:
    fs = 256.0
    t = np.arange(int(4 * fs)) / fs
    p = superlet(np.sin(2 * np.pi * 20 * t), fs, [20.0], 3, order, dtype=np.float64)[0]
    interior = p[300:-300]  # away from the zero-padded edges (the longest wavelet here is ~1.2 s)
    np.testing.assert_allclose(interior, 0.5, atol=1e-3)  # observed within 6.2e-4 (order 1), 5e-5 (order 5)
    assert abs(interior.mean() - 0.5) < 1e-4


def test_two_tones_4hz_apart_are_resolved_by_a_superlet_not_by_a_cwt() -> None:
    fs = 256.0
    t = np.arange(int(4 * fs)) / fs
    x = np.sin(2 * np.pi * 20 * t) + np.sin(2 * np.pi * 24 * t)
    foi = np.arange(14.0, 31.0)
    i20, i22, i24 = (int(np.flatnonzero(foi == f)[0]) for f in (20, 22, 24))
    slt = superlet(x, fs, foi, 3, 5, dtype=np.float64)[:, 300:-300].mean(-1)
    cwt = superlet(x, fs, foi, 3, 1, dtype=np.float64)[:, 300:-300].mean(-1)
    # superlet (c1 = 3, order 5): peaks at 20 and 24 Hz, a dip at 22 Hz (observed 0.29 vs 0.54 / 0.56)
    assert slt[i22] < 0.6 * min(slt[i20], slt[i24])
    assert {int(np.argmax(slt[:i22])), i22 + int(np.argmax(slt[i22:]))} == {i20, i24}
    # plain CWT with the same base cycles: one blurred hump, its maximum between the tones (observed at 22 Hz)
    assert cwt[i22] > max(cwt[i20], cwt[i24])
    assert i20 < int(np.argmax(cwt)) < i24


def test_phase_of_a_cosine_and_additive_rule() -> None:
    fs = 256.0
    t = np.arange(int(4 * fs)) / fs
    power, phase = superlet(np.cos(2 * np.pi * 20 * t), fs, [20.0], 3, (3, 3), phase=True)
    assert power.shape == phase.shape == (1, t.size)
    err = np.angle(np.exp(1j * (phase[0].astype(np.float64) - 2 * np.pi * 20 * t)))[300:-300]
    assert np.abs(err).max() < 1e-3
    # additive cycles c1 + i: order 2 with c1 = 3 uses 4 and 5 cycles, the product of those two CWTs
    x = np.random.default_rng(0).standard_normal(512)
    add = superlet(x, fs, [30.0], 3, 2, rule="additive", dtype=np.float64)
    c4 = superlet(x, fs, [30.0], 4, 1, dtype=np.float64)
    c5 = superlet(x, fs, [30.0], 5, 1, dtype=np.float64)
    np.testing.assert_allclose(add, np.sqrt(c4 * c5), rtol=1e-10)
    # fractional order: 1.5 -> (P1 * P2^0.5)^(1/1.5) with multiplicative cycles 3 and 6
    c3 = superlet(x, fs, [30.0], 3, 1, dtype=np.float64)
    c6 = superlet(x, fs, [30.0], 6, 1, dtype=np.float64)
    np.testing.assert_allclose(superlet(x, fs, [30.0], 3, 1.5, dtype=np.float64), (c3 * c6 ** 0.5) ** (1 / 1.5),
                               rtol=1e-10)


def test_wavelet_width_and_l1_norm() -> None:
    w = morlet(10.0, 3, 256.0)
    assert len(w) == wavelet_length(10.0, 3, 256.0) == 2 * int(np.round(0.06 * 256 * 6) // 2) + 1 == 93
    assert abs(np.abs(w).sum() - 1) < 1e-12


def test_errors() -> None:
    x = np.zeros(64)
    with pytest.raises(ValueError, match="fs/2"):
        superlet(x, 100.0, [60.0])
    with pytest.raises(ValueError, match=">= 1"):
        superlet(x, 100.0, [10.0], order=(0.5, 2))
    with pytest.raises(ValueError, match="n_times"):
        superlet(np.zeros((2, 0)), 100.0, [10.0])
    with pytest.raises(ValueError, match="rule"):
        superlet(x, 100.0, [10.0], rule="geometric")  # type: ignore[arg-type]
    np.testing.assert_allclose(foi_from_config({"fmin": 2, "fmax": 10, "n": 5}), [2, 4, 6, 8, 10])
    with pytest.raises(ValueError, match="fmin"):
        foi_from_config({"fmin": 2})


def test_out_array_receives_the_power() -> None:
    x = np.random.default_rng(1).standard_normal((2, 300))
    out = np.zeros((2, 4, 300), dtype=np.float32)
    got = superlet(x, 100.0, [5.0, 10.0, 20.0, 40.0], 3, (1, 4), out=out)
    assert got is out
    np.testing.assert_allclose(out, superlet(x, 100.0, [5.0, 10.0, 20.0, 40.0], 3, (1, 4)), rtol=1e-6)
    with pytest.raises(ValueError, match="out has shape"):
        superlet(x, 100.0, [5.0], out=out)
