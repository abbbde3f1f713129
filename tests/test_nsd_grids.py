"""grids/nsd: the CPU-sized chain (``nsd.small``) plans a2a then each decoder, and its sizes build and run."""

from __future__ import annotations

import pytest
import torch

from bm2.models.nsd import NSDModel
from grids.nsd import DECODERS, plan
from grids.nsd import small


def test_small_plans_a2a_then_each_decoder_from_it():
    stages = plan(**small.CHAIN)
    assert [st.name for st in stages] == ["a2a"] + [f"e2a_{d}" for d in DECODERS]
    assert all(st.parent == "SY01/a2a" for st in stages[1:]) and stages[0].parent is None
    for st in stages[1:]:
        assert st.overrides["model.nsd.decoder_kwargs"] == small.SMALL_DECODERS[st.overrides["model.nsd.decoder"]]
        assert st.overrides["model.nsd.causal"] is False and st.overrides["recipe"] == "nsd_e2a"


def test_small_signs_distinct_xps_each_child_naming_its_parent():
    from scripts import _local_chain

    stages = _local_chain.stage_commands("nsd", "small", ["SY01"])
    sigs = [sig for _, sig, _ in stages]
    assert len(set(sigs)) == 4
    for _, _, argv in stages[1:]:
        assert any(a.startswith("chain.parent=") and sigs[0] in a for a in argv)


@pytest.mark.parametrize("decoder", DECODERS)
def test_small_sizes_build_and_decode(decoder):
    kwargs = {k.split(".")[-1]: v for k, v in small.SMALL_NSD.items() if k.startswith("model.nsd.")}
    model = NSDModel(stage="e2a", decoder=decoder, decoder_kwargs=small.SMALL_DECODERS[decoder], **kwargs)
    out = model(torch.rand(2, 256, 32) * 2 - 1, torch.randn(2, 64, 48))["output"]
    assert out.shape == (2, 256, 32) and torch.isfinite(out).all()


def test_small_background_profile_is_the_studys_baseline(tmp_path):
    # the grid gives the synthesizer the synthetic study's pre-trial baseline as its background profile: at the
    # study's defaults that baseline is the spectrogram's floor everywhere (the background lies under it)
    from bm2.studies.nsd_synthetic import NSDSynthetic

    study = NSDSynthetic(tmp_path, n_trials=60, n_words=2)
    study.prepare()
    (rec,) = list(study.iter_recordings())
    baseline = rec.optional("noisesample_re_alldataset").mean(axis=0)
    assert baseline.shape == (256,)
    assert torch.allclose(torch.as_tensor(baseline), torch.tensor(small.SMALL_NSD["model.nsd.noise_profile"]))
    # a2a alone is supervised by Praat's tracks; e2a does not read them
    a2a, *e2a = plan(**small.CHAIN)
    assert "praat" in a2a.overrides["dset.extra_targets"]
    assert all("dset.extra_targets" not in st.overrides for st in e2a)


@pytest.mark.parametrize("grid", ["tiny", "small", "synthetic", "release"])
def test_every_e2a_stage_accepts_its_a2a_parent(grid):
    # the encoder and synthesizer of an e2a XP are its parent's: settings of either given to one stage only would
    # stop the chain after the parent's whole training (model.nsd.f0_estimator once did)
    import importlib

    module = importlib.import_module(f"grids.nsd.{grid}")
    stages = {st.key: st for st in plan(**module.CHAIN)}

    def model_kwargs(st):
        merged = {**module.BASE, **st.overrides}
        return {k[len("model.nsd."):]: v for k, v in merged.items() if k.startswith("model.nsd.")}

    children = [st for st in stages.values() if st.parent]
    assert children
    for st in children:
        kwargs = model_kwargs(st)
        child = NSDModel(**{**kwargs, "stage": "e2a"})
        assert child.check_parent({"name": "nsd", "kwargs": model_kwargs(stages[st.parent])}) is None, st.key


def test_chain_scripts_take_overrides_after_the_subjects(capsys):
    # `--subject` takes several ids: an override after it must still be an override (it was read as a subject)
    from scripts import nsd_chain

    assert nsd_chain.main(["tiny", "--subject", "SY01", "optim.epochs=3", "--decoders", "lstm", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    commands = [line for line in printed.splitlines() if line.startswith("== ")]
    assert len(commands) == 4 and all("optim.epochs=3" in line for line in commands), printed
    assert nsd_chain.main(["tiny", "--subject", "SY01", "SY99", "--dry-run"]) == 2  # a real unknown subject
    # and the caller's override wins over the grid's own (the small grid's a2a sets optim.epochs=60)
    assert nsd_chain.main(["small", "--subject", "SY01", "optim.epochs=3", "--dry-run"]) == 0
    a2a = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("== SY01/a2a "))
    assert [t for t in a2a.split() if t.startswith("optim.epochs=")][-1] == "optim.epochs=3"
