"""Neural Speech Decoding through the real CLI: the chained grids (participant x decoder x causal) sign with
``dora grid --dry_run --init``, and the tiny chain runs a2a then e2a locally (``scripts.nsd_chain``) on a tiny
synthetic ECoG study written in the release's HDF5 layout, evaluated in full (WAV files, spectrogram figures)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ._cli import DORA, ROOT, cli_env

pytestmark = pytest.mark.slow

#: stage keys of grids nsd.synthetic / nsd.tiny / nsd.release, in grid order (grids.nsd.plan: a2a before its e2a)
NAMES = ["a2a", "e2a_resnet", "e2a_lstm", "e2a_swin", "a2a_causal", "e2a_resnet_causal", "e2a_lstm_causal",
         "e2a_swin_causal"]


def _grid_rows(env: dict[str, str], grid: str) -> list[tuple[str, str]]:
    """``(name, sig)`` of each row of ``dora grid GRID --dry_run --init`` (which must succeed)."""
    proc = subprocess.run([DORA, "grid", grid, "--dry_run", "--init"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert proc.returncode == 0, out[-4000:]
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^\s*\d+\s+(.*?)\s+N/A\s+([0-9a-f]{8})\s", out, re.M)]


@pytest.mark.parametrize("grid, subject", [("nsd.synthetic", "SY01"), ("nsd.tiny", "SY01"), ("nsd.release", "HB02")])
def test_nsd_grids_sign_a2a_then_each_decoder_causal_or_not(tmp_path, grid, subject):
    env = cli_env(tmp_path)
    rows = _grid_rows(env, grid)
    assert len(rows) == len(NAMES) and len({sig for _, sig in rows}) == len(NAMES), rows
    name = dict(zip(NAMES, (n for n, _ in rows)))
    sig = dict(zip(NAMES, (s for _, s in rows)))
    for causal in ("", "_causal"):
        a2a = name[f"a2a{causal}"]
        assert a2a.startswith("recipe=nsd_a2a") and "cha.parent" not in a2a
        assert ("mod.nsd.causal" in a2a) == bool(causal)
        for decoder in ("resnet", "lstm", "swin"):
            e2a = name[f"e2a_{decoder}{causal}"]
            # each decoder starts from the a2a XP of its own causal setting: a causal decoder is never guided by a
            # non-causal speech encoder
            assert e2a.startswith("recipe=nsd_e2a") and f"cha.parent={sig[f'a2a{causal}']}" in e2a
            assert ("mod.nsd.decoder=" in e2a) == (decoder != "resnet")  # resnet is the model's default
    # one participant's file per XP (in the shared base name, or per row)
    proc = subprocess.run([DORA, "grid", grid, "--dry_run", "--init"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert f"subjects=['{subject}']" in re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)


def test_nsd_tiny_chain_runs_a2a_then_e2a_and_writes_audio_and_figures(tmp_path):
    """One participant's a2a (causal) and causal LSTM e2a at tiny sizes, run by the local chain command: the e2a
    XP starts from the a2a XP with the encoder and synthesizer frozen (their weights are the parent's, unchanged),
    and the full evaluation leaves WAV files and the spectrogram figure of decoded test trials."""
    import torch

    env = cli_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "scripts.nsd_chain", "tiny", "--subject", "SY01", "--decoders",
                           "lstm", "--causal", "true"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1200)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:]
    stages = re.findall(r"^== (\S+) \(XP ([0-9a-f]{8})\)", out, re.M)
    assert [k for k, _ in stages] == ["SY01/a2a_causal", "SY01/e2a_lstm_causal"], stages
    (_, a2a), (_, e2a) = stages
    folder = Path(env["BM2_XP_DIR"]) / "xps"
    assert f"started from parent XP {a2a}" in out
    parent = torch.load(folder / a2a / "checkpoint.th", weights_only=True)["best_state"]
    child = torch.load(folder / e2a / "checkpoint.th", weights_only=True)
    assert child["parent"]["sig"] == a2a and child["parent"]["freeze"] == ["encoder", "synth"]
    frozen = [k for k in parent if k.startswith(("encoder.", "synth."))]
    assert frozen and all(torch.equal(child["best_state"][k], parent[k]) for k in frozen)
    assert any(k.startswith("decoder.") for k in child["best_state"])
    for sig in (a2a, e2a):
        summary = json.loads((folder / sig / "eval" / "summary.json").read_text())
        metrics = summary["metrics"]
        assert summary["task"] == "reconstruction" and metrics["n_windows"] == 50  # the last 50 trials
        assert -1 <= metrics["pcc"] <= 1 and "pcc_null_mean" in metrics and 0 <= metrics["stoi"] <= 1
        audio = folder / sig / "eval" / "audio"
        assert len(list(audio.glob("*.true.wav"))) == 50 and len(list(audio.glob("*.wav"))) == 100  # decoded, true
        assert (folder / sig / "eval" / "spectrograms.png").stat().st_size > 0
    table = out.split("Neural Speech Decoding chain of participant(s) SY01")[1]
    assert f"| SY01/a2a_causal ({a2a}) |" in table and f"| SY01/e2a_lstm_causal ({e2a}) |" in table

    # e2a without its parent, or from a parent of another causal setting: a short error naming what to set
    from grids._tiny import as_overrides
    from grids.nsd.tiny import TINY_NSD

    base = [*as_overrides(TINY_NSD), "recipe=nsd_e2a", "model.nsd.decoder=lstm"]
    for extra, expected in (([], "set chain.parent=<the a2a XP's signature>"),
                            ([f"chain.parent={a2a}"], "model.nsd.causal=True (here False)")):
        proc = subprocess.run([DORA, "run", *base, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=600)
        assert proc.returncode != 0 and "bm2 stopped (ChainError)" in proc.stdout, proc.stdout[-3000:]
        assert expected in proc.stdout and "Traceback" not in proc.stdout
