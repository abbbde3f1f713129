"""Neural Speech Decoding's objectives on hand-made batches (bm2/objectives/nsd.py)."""

import pytest
import torch

from bm2.features import nsd_spec
from bm2.objectives import OBJECTIVES, build_objective
from bm2.objectives.nsd import FLOODS, NSDA2AObjective, NSDE2AObjective, amplitude, mel_bank, wide_mask

B, T = 2, 12


def params(prefix="param_", f0=200.0, loud=1e-3, formants=(500, 1500, 2500, 3500, 4500, 6500.0),
           amps=(0.4, 0.3, 0.15, 0.1, 0.03, 0.02)):
    full = lambda v: torch.full((B, T), float(v))  # noqa: E731
    out = {"f0_hz": full(f0), "loudness": full(loud), "voicing": full(0.8),
           "formant_hz": torch.tensor(formants).expand(B, T, 6).clone(),
           "formant_amp": torch.tensor(amps).expand(B, T, 6).clone(),
           "formant_amp_noise": torch.full((B, T, 6), 0.1), "noise_amp": full(0.4),
           "noise_formant_hz": full(6000.0), "noise_formant_bw_hz": full(1500.0)}
    return {prefix + k: v for k, v in out.items()}


def spec(value=0.0):
    return torch.full((B, 256, T), float(value))


def test_registered():
    assert OBJECTIVES["nsd_a2a"] is NSDA2AObjective and OBJECTIVES["nsd_e2a"] is NSDE2AObjective
    a2a = build_objective("nsd_a2a")
    assert a2a.weights["linear_amp"] == 8 and a2a.weights["linear_db"] == 4 and a2a.weights["mel_db"] == 4
    assert a2a.weights["silence"] == 2e6 and a2a.weights["amp_order"] == 30
    assert build_objective("nsd_a2a", silence_twice=False).weights["silence"] == 1e6
    e2a = build_objective("nsd_e2a")
    assert e2a.weights["linear_amp"] == 80 and e2a.weights["mel_db"] == 80
    assert e2a.weights["guide_formant_hz"] == 4 and e2a.weights["guide_f0_hz"] == 1


def test_spectral_terms_by_hand():
    objective = NSDA2AObjective()
    out = {"output": spec(0.5), **params()}
    terms = objective({"features": spec(0.0)}, out)
    assert float(terms["linear_db"]) == pytest.approx(0.5)
    # amplitudes by hand, relative to the 22.5 dB ceiling
    db_hi, db_lo = float(nsd_spec.norm_to_db(torch.tensor(0.5))), float(nsd_spec.norm_to_db(torch.tensor(0.0)))
    expected = 10 ** ((db_hi - 22.5) / 20) - 10 ** ((db_lo - 22.5) / 20)
    assert float(terms["linear_amp"]) == pytest.approx(expected, rel=1e-4)
    # a flat spectrogram gives flat mel bands (weighted means): every band is off by the same 0.5
    assert float(terms["mel_db"]) == pytest.approx(0.5, rel=1e-4)
    same = objective({"features": spec(0.5)}, out)
    assert float(same["linear_db"]) == 0 and float(same["linear_amp"]) == 0 and float(same["mel_db"]) < 1e-6
    assert amplitude(torch.tensor(1.0)) == pytest.approx(1.0)


def test_mel_bank_and_width_weights():
    bank, weights = mel_bank()
    assert bank.shape[0] == 256 and 100 < bank.shape[1] <= 128
    torch.testing.assert_close(bank.sum(0), torch.ones(bank.shape[1]))
    assert weights.mean() == pytest.approx(1.0) and weights[-1] > 5 * weights[0]  # high bands are wider
    # the mel error of a single high band counts more than that of a single low band
    objective = NSDA2AObjective()
    freqs = nsd_spec.bin_frequencies()
    low, high = spec(0.0), spec(0.0)
    low[:, (freqs > 300) & (freqs < 400)] = 0.5
    high[:, (freqs > 6000) & (freqs < 6100)] = 0.5
    p = params()
    mel_low = objective({"features": spec(0.0)}, {"output": low, **p})["mel_db"]
    mel_high = objective({"features": spec(0.0)}, {"output": high, **p})["mel_db"]
    assert mel_high > mel_low


def test_silence_on_the_widened_mask():
    objective = NSDA2AObjective()
    speech = torch.zeros(B, T)
    speech[:, 5] = 1.0
    assert wide_mask(speech)[0].tolist() == [1.0] * 11 + [0.0]  # frames 0-10 are within 5 of frame 5
    p = params(loud=0.0)
    p["param_loudness"][:, 11] = 1.0  # loud outside the wide mask: counted
    terms = objective({"features": spec(), "speech": speech}, {"output": spec(), **p})
    assert float(terms["silence"]) == pytest.approx(1.0 / T)
    p["param_loudness"][:, 11] = 0.0
    p["param_loudness"][:, 10] = 1.0  # inside it: not counted
    terms = objective({"features": spec(), "speech": speech}, {"output": spec(), **p})
    assert float(terms["silence"]) == 0.0
    assert float(objective({"features": spec()}, {"output": spec(), **p})["silence"]) == 0.0  # no mask: off


def test_order_and_smoothness_terms():
    objective = NSDA2AObjective()
    calm = objective({"features": spec()}, {"output": spec(), **params()})
    assert float(calm["formant_order"]) == 0 and float(calm["amp_order"]) == 0 and float(calm["smoothness"]) == 0
    crossed = params(formants=(500, 1500, 1400, 3500, 4500, 6500.0), amps=(0.1, 0.5, 0.2, 0.1, 0.05, 0.05))
    terms = objective({"features": spec()}, {"output": spec(), **crossed})
    assert float(terms["formant_order"]) == pytest.approx(0.1 / 5)  # one pair crossed by 100 Hz, in kHz
    assert float(terms["amp_order"]) == pytest.approx(0.4 / 3)  # A2 - A1 = 0.4 among 3 pairs of the first 4
    jumpy = params()
    jumpy["param_f0_hz"][:, ::2] = 300.0
    assert float(objective({"features": spec()}, {"output": spec(), **jumpy})["smoothness"]) > 0


def test_praat_supervision_and_its_decay():
    objective = NSDA2AObjective()
    praat = torch.full((B, 4, T), float("nan"))
    praat[:, 0, :6] = 210.0  # f0 known on the first half only, 10 Hz off
    praat[:, 1] = 600.0  # F1 100 Hz off everywhere; F2, F3 unknown
    batch = {"features": spec(), "praat": praat, "speech": torch.ones(B, T)}
    terms = objective(batch, {"output": spec(), **params()})
    assert float(terms["praat_f0"]) == pytest.approx(100.0)
    assert float(terms["praat_formant"]) == pytest.approx(6 * 100.0 ** 2)
    assert float(objective({"features": spec()}, {"output": spec(), **params()})["praat_f0"]) == 0.0
    objective.set_epoch(10)
    assert objective.weights["praat_f0"] == pytest.approx(4e-4)
    objective.set_epoch(30)
    assert objective.weights["praat_f0"] == pytest.approx(2e-4)
    assert objective.weights["praat_formant"] == pytest.approx(1.5e-6)
    objective.set_epoch(45)
    assert objective.weights["praat_f0"] == 0.0


def test_e2a_guidance_weights_and_flooding():
    objective = NSDE2AObjective()
    guide = params("guide_", loud=1e-2)  # -20 dB: weight (−20 + 70) / 50 = 1
    pred = params(formants=(520, 1500, 2500, 3500, 4500, 6500.0))  # F1 20 Hz off: 0.02 kHz
    out = {"output": spec(), **pred, **guide}
    terms = objective({"features": spec()}, out)
    # formant error 0.02^2 / 6 per frame, below the flood 0.0025: |L - b| + b = 2b - L
    error = 0.02 ** 2 / 6
    assert float(terms["guide_formant_hz"]) == pytest.approx(2 * FLOODS["formant_hz"] - error)
    plain = NSDE2AObjective(flood=False)({"features": spec()}, out)
    assert float(plain["guide_formant_hz"]) == pytest.approx(error, rel=1e-4)
    assert float(terms["guide_f0_hz"]) == 0.0  # same f0, no floor
    # loudness in dB / 50: 1e-3 (−30 dB) against 1e-2 (−20 dB) -> (10 / 50)^2 = 0.04, above its 0.01 floor
    assert float(terms["guide_loudness"]) == pytest.approx(0.04, rel=1e-4)
    # frames where the guidance is silent (<= -70 dB) or off-stage do not count
    quiet = params("guide_", loud=1e-2)
    quiet["guide_loudness"][:, :6] = 1e-9
    shifted = params(f0=250.0)
    shifted["param_f0_hz"][:, 6:] = 200.0  # f0 wrong only where the guidance is silent
    terms = NSDE2AObjective(flood=False)({"features": spec()}, {"output": spec(), **shifted, **quiet})
    assert float(terms["guide_f0_hz"]) == 0.0
    speech = torch.ones(B, T)
    speech[:, 6:] = 0.0
    wrong_late = params(f0=200.0)
    wrong_late["param_f0_hz"][:, 6:] = 250.0
    batch = {"features": spec(), "speech": speech}
    assert float(NSDE2AObjective(flood=False)(batch, {"output": spec(), **wrong_late, **guide})["guide_f0_hz"]) == 0
    with pytest.raises(KeyError, match="guide_loudness"):
        objective({"features": spec()}, {"output": spec(), **pred})


def test_bad_shapes():
    with pytest.raises(ValueError, match="256, T"):
        NSDA2AObjective()({"features": torch.zeros(B, 80, T)}, {"output": spec(), **params()})


def test_pitch_cycle_term():
    objective = NSDA2AObjective()
    assert objective.weights["pitch_cycle"] == pytest.approx(4e-4)
    stage = torch.zeros(B, T)
    stage[0, :4] = 1.0  # the cycle holds windows 0, 2 ...: window 1's mask must not count
    stage[1, 4:] = 1.0
    cycle = {"cycle_f0_hz": torch.full((1, T), 200.0), "cycle_target_f0_hz": torch.full((1, T), 230.0)}
    cycle["cycle_f0_hz"][:, 4:] = 0.0  # off-stage frames do not count
    batch = {"features": spec(), "speech": stage}
    terms = objective(batch, {"output": spec(), **params(), **cycle})
    assert float(terms["pitch_cycle"]) == pytest.approx(30.0 ** 2)
    assert float(objective(batch, {"output": spec(), **params()})["pitch_cycle"]) == 0.0  # no augmentation
    objective.set_epoch(45)  # the Praat decay leaves it alone
    assert objective.weights["pitch_cycle"] == pytest.approx(4e-4)
