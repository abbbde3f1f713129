"""The NSD formant synthesizer (bm2/models/formant_synth.py): peaks, cut-off, shapes, gradients, ranges."""

import pytest
import torch

from bm2.features import nsd_spec
from bm2.models import formant_synth as fs
from bm2.models.formant_synth import FormantSynthesizer, formant_bandwidth, synthesize


def params(b=1, t=24, f0=150.0, formants=(700, 1800, 2800, 3900, 5200, 6400), amps=(0.6, 0.4, 0, 0, 0, 0),
           voicing=1.0, loudness=2e-3, noise_hz=6000.0, noise_amp=0.0):
    full = lambda v: torch.full((b, t), float(v))  # noqa: E731
    return {"f0_hz": full(f0), "loudness": full(loudness), "voicing": full(voicing),
            "formant_hz": torch.tensor(formants, dtype=torch.float32).expand(b, t, 6).clone(),
            "formant_amp": torch.tensor(amps, dtype=torch.float32).expand(b, t, 6).clone(),
            "noise_formant_hz": full(noise_hz), "noise_formant_bw_hz": full(1500.0), "noise_amp": full(noise_amp)}


def mean_db(synth, p, seed=0):
    with torch.no_grad():
        out = synth(p, waveform=False, generator=torch.Generator().manual_seed(seed))
    return nsd_spec.power_to_db(out["power"][0, :, 2:-2].mean(dim=-1))  # [256], edge frames left out


@pytest.mark.parametrize("learned_mask", [True, False])
def test_peaks_at_harmonics_and_formants(learned_mask):
    synth = FormantSynthesizer(learned_mask=learned_mask)
    f0 = 150.0
    db = mean_db(synth, params(f0=f0))
    freqs = nsd_spec.bin_frequencies()
    # local maxima well above the background (-35 dB) sit on harmonics of f0
    peaks = [i for i in range(1, 255) if db[i] > db[i - 1] and db[i] >= db[i + 1] and db[i] > -10]
    assert len(peaks) >= 4
    for i in peaks:
        k = round(float(freqs[i]) / f0)
        assert abs(float(freqs[i]) - k * f0) < 31.4, (float(freqs[i]), k)
    # the strongest harmonic of each band is the one nearest its formant (700 Hz, 1800 Hz)
    for lo, hi, formant in ((300, 1200, 700), (1300, 2400, 1800)):
        band = (freqs >= lo) & (freqs <= hi)
        top = float(freqs[band][db[band].argmax()])
        assert abs(top - formant) <= f0 / 2 + 31.4, (top, formant)
    # nothing voiced above F2's reach: the spectrum there is background
    assert float(db[(freqs > 3000) & (freqs < 4000)].max()) < -20


def test_noise_formant_peak():
    synth = FormantSynthesizer()
    p = params(voicing=0.0, noise_amp=1.0, noise_hz=5000.0, loudness=1e-2)
    db = mean_db(synth, p)
    freqs = nsd_spec.bin_frequencies()
    smooth = torch.nn.functional.avg_pool1d(db.view(1, 1, -1), 9, 1, 4).view(-1)
    assert abs(float(freqs[smooth.argmax()]) - 5000.0) < 200.0


def test_harmonics_at_or_above_cutoff_are_absent(monkeypatch):
    # f0 = 195 Hz: harmonic 39 at 7605 Hz is kept, harmonic 40 at exactly 7800 Hz is zeroed
    synth = FormantSynthesizer()
    f0 = torch.full((1, 40), 195.0)
    power = nsd_spec.power_spectrogram(synth.harmonic_source(f0))[0, :, 5:-5].mean(-1)
    bin_39, bin_40 = round(7605 * 511 / 16000), round(7800 * 511 / 16000)
    assert power[bin_40] < 1e-4 * power[bin_39]
    monkeypatch.setattr(fs, "HARMONIC_CUTOFF_HZ", 1e9)  # the same source without the cut-off has that harmonic
    uncut = nsd_spec.power_spectrogram(synth.harmonic_source(f0))[0, :, 5:-5].mean(-1)
    assert uncut[bin_40] > 0.3 * uncut[bin_39]


def test_stft_is_the_release_stft():
    synth = FormantSynthesizer()
    wave = torch.randn(2, 4000)
    spec = synth.stft(wave)
    torch.testing.assert_close(spec.abs().square(), nsd_spec.power_spectrogram(wave), rtol=1e-4, atol=1e-3)


def test_learned_shape_half_power_width_is_the_bandwidth():
    synth = FormantSynthesizer()
    with torch.no_grad():
        synth.shape_logits.copy_(torch.randn(synth.shape_logits.shape, generator=torch.Generator().manual_seed(3)))
    centre = torch.full((1, 1, 1), 3000.0)
    for bandwidth in (300.0, 1000.0):
        with torch.no_grad():
            mask = synth.filters(centre, torch.full((1, 1, 1), bandwidth), torch.tensor([2]))[0, 0, :, 0]
        assert float(mask.max()) <= 1.0 + 1e-5
        # the span of bins at or above half power, within one bin spacing on each side
        above = nsd_spec.bin_frequencies()[mask >= 0.5]
        span = float(above.max() - above.min())
        assert abs(span - bandwidth) < 2 * 31.4, (span, bandwidth)


def test_gradients_reach_every_parameter_and_input():
    torch.manual_seed(0)
    for learned_mask in (True, False):
        synth = FormantSynthesizer(learned_mask=learned_mask, n_filter_samples=20)
        p = params(b=2, t=16, amps=(0.3, 0.25, 0.2, 0.1, 0.1, 0.05), voicing=0.6, noise_amp=0.3, loudness=1e-3)
        p["formant_amp_noise"] = torch.full((2, 16, 6), 0.7 / 6)
        for v in p.values():
            v.requires_grad_(True)
        out = synth(p, waveform=False, generator=torch.Generator().manual_seed(0))
        (out["output"] * torch.randn_like(out["output"])).sum().backward()
        for name, v in p.items():
            assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0, name
        for name, w in synth.named_parameters():
            if name == "shape_logits" and not learned_mask:
                assert w.grad is None  # the Gaussian fallback has no shapes
                continue
            assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0, name


def test_ranges_by_sex():
    assert fs.F0_RANGES["female"] == (180.0, 300.0) and fs.F0_RANGES["male"] == (80.0, 200.0)
    assert fs.F0_RANGES["unified"] == (80.0, 300.0)
    assert fs.FORMANT_RANGES["female"][0] == (300.0, 950.0) and fs.FORMANT_RANGES["male"][5] == (4500.0, 7500.0)
    for sex in fs.SEXES:
        for (lo, hi), (ulo, uhi) in zip(fs.FORMANT_RANGES[sex], fs.FORMANT_RANGES["unified"]):
            assert ulo <= lo < hi <= uhi
    f = torch.tensor([500.0, 2000.0])
    torch.testing.assert_close(formant_bandwidth(f, "female"), 0.65 * (0.00625 * f + 375))
    torch.testing.assert_close(formant_bandwidth(f, "male"), 0.55 * 0.65 * (0.00625 * f + 300))
    with pytest.raises(ValueError, match="sex must be one of"):
        formant_bandwidth(f, "other")


def test_synthesize_untrained_is_reproducible_and_checks_inputs():
    p = params(b=2, t=20, voicing=0.7, noise_amp=0.2)
    wave = synthesize(p, seed=1)
    assert wave.shape == (2, 20 * nsd_spec.HOP) and wave.dtype == torch.float32 and torch.isfinite(wave).all()
    torch.testing.assert_close(synthesize(p, seed=1), wave)
    assert not torch.allclose(synthesize(p, seed=2), wave)
    # its spectrogram follows the parameters: the harmonic bands are loud, the background is not
    spec = nsd_spec.release_spectrogram(wave)[0][0, :, 2:-2].mean(-1)
    freqs = nsd_spec.bin_frequencies()
    assert spec[(freqs > 600) & (freqs < 800)].max() > spec[(freqs > 3000) & (freqs < 4000)].mean() + 0.3
    bad = dict(p)
    del bad["noise_amp"]
    with pytest.raises(KeyError, match="noise_amp"):
        synthesize(bad)
    bad = dict(p, formant_hz=p["formant_hz"][..., :5])
    with pytest.raises(ValueError, match="formant_hz"):
        synthesize(bad)


def test_noise_profile_sets_the_background():
    synth = FormantSynthesizer()
    profile = torch.linspace(-0.9, -0.2, 256)  # baseline frames in [-1, 1] units
    synth.set_noise_profile(profile.expand(5, 256))
    db = mean_db(synth, params(loudness=0.0))  # background only
    expected = nsd_spec.norm_to_db(profile)
    assert (db - expected).abs()[5:-5].mean() < 1.5  # white noise averaged over 20 frames: about 1 dB
    with pytest.raises(ValueError, match="baseline frames"):
        synth.set_noise_profile(torch.zeros(3, 100))


def test_expected_noise_is_the_mean_of_the_draws():
    synth = FormantSynthesizer()
    p = params(t=16, voicing=0.0, noise_amp=1.0, noise_hz=5000.0, loudness=1e-2)
    with torch.no_grad():
        draws = torch.stack([synth(p, waveform=False, generator=torch.Generator().manual_seed(s))["power"]
                             for s in range(40)])
        expected = [synth(p, waveform=False, generator=torch.Generator().manual_seed(s), expected_noise=True)
                    for s in (0, 1)]
    # deterministic up to the background's sample variance (one draw of 2048 samples per window)
    torch.testing.assert_close(expected[0]["power"], expected[1]["power"], rtol=0.1, atol=0)
    band = (nsd_spec.bin_frequencies() > 4500) & (nsd_spec.bin_frequencies() < 5500)
    ratio = draws.mean(0)[:, band, 2:-2].mean() / expected[0]["power"][:, band, 2:-2].mean()
    assert abs(float(ratio) - 1.0) < 0.1
    # one draw fluctuates by several dB per bin, the expectation does not
    db = nsd_spec.power_to_db
    assert db(draws[0][:, band]).std() > 3 * db(expected[0]["power"][:, band]).std()


def test_background_without_mlp_is_white_noise_at_the_same_level():
    plain, full = FormantSynthesizer(background_mlp=False), FormantSynthesizer()
    assert not any(name.startswith("background.") for name, _ in plain.named_parameters())
    quiet = params(t=40, loudness=0.0)
    for synth in (plain, full):
        db = mean_db(synth, quiet)
        assert abs(float(db[5:-5].mean()) - (-35.0)) < 1.0  # the default flat profile, white
