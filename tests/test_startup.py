"""The warm start-up path (data all cached) imports no heavy module it does not need, and reads each input file's
fingerprint once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bm2.utils import fingerprint

ROOT = Path(__file__).resolve().parents[1]
TINY = ["studies.synthetic.n_subjects=2", "studies.synthetic.n_sessions=1", "studies.synthetic.n_sentences=30",
        "studies.synthetic.sentences_per_recording=20", "studies.synthetic.sfreq=200", "features.mel.n_mels=8"]
# modules that a cached start needs none of (the study generator's FFTs and filters, optional model zoos, plots)
HEAVY = ("scipy.fft", "scipy.signal", "sklearn", "transformers", "h5py", "braindecode", "matplotlib")

BUILD = """
import json, sys
from hydra import compose, initialize_config_dir
from bm2.builders import build_all_datasets
import pytest

from bm2.utils import fingerprint

calls = []
digest = fingerprint._content_digest
fingerprint._content_digest = lambda path, size: calls.append(str(path)) or digest(path, size)
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[2:])
datasets = build_all_datasets(cfg)
print(json.dumps({"modules": sorted(sys.modules), "digests": calls, "n_train": len(datasets.train)}))
"""


def _build(tmp_path: Path) -> dict:
    overrides = [*TINY, f"paths.data={tmp_path / 'data'}", f"paths.cache={tmp_path / 'cache'}"]
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, BM2_NO_PROGRESS="1", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-c", BUILD, str(ROOT / "conf"), *overrides], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_cached_start_imports_no_heavy_module(tmp_path):
    cold = _build(tmp_path)  # generates the study and fills the cache
    assert "scipy.fft" in cold["modules"] and "scipy.signal" in cold["modules"]  # the generator needs them
    warm = _build(tmp_path)
    assert warm["n_train"] == cold["n_train"] > 0
    assert [m for m in HEAVY if m in warm["modules"]] == []
    # every input file's content is read once, although each recording lists the study's sound files
    assert warm["digests"] and len(warm["digests"]) == len(set(warm["digests"]))
    # a whole cached `dora run` (an epoch of training, validation, test) never imports torch._dynamo (about 1 s of
    # the start: bm2.solvers.optim.eager_optimizer_class)
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, BM2_NO_PROGRESS="1", BM2_DATA=str(tmp_path / "data"), BM2_CACHE=str(tmp_path / "cache"),
               BM2_XP_DIR=str(tmp_path / "xps"), PYTHONPATH=path)
    overrides = [*TINY, "model.simpleconv.hidden=8", "model.simpleconv.depth=1", "optim.epochs=1",
                 "optim.max_batches=1", "optim.batch_size=8"]
    proc = subprocess.run([sys.executable, "-c", DORA_RUN, *overrides], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "dynamo imported: False", proc.stdout[-2000:]


DORA_RUN = """
import sys
from dora.__main__ import main
sys.argv = ["dora", "run", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    if exc.code:
        raise
print("dynamo imported:", "torch._dynamo" in sys.modules)
"""


def test_fingerprint_kept_per_process_until_the_file_changes(tmp_path, monkeypatch):
    reads = []
    digest = fingerprint._content_digest
    monkeypatch.setattr(fingerprint, "_content_digest", lambda path, size: reads.append(path) or digest(path, size))
    path = tmp_path / "a.wav"
    path.write_bytes(b"x" * 100)
    first = fingerprint.file_fingerprint(path)
    assert fingerprint.file_fingerprint(path) == first and len(reads) == 1
    path.write_bytes(b"y" * 100)  # same size, rewritten: a new modification time
    os.utime(path, ns=(0, 10**18))
    assert fingerprint.file_fingerprint(path) != first and len(reads) == 2


def test_dora_compositions_are_memoised_and_copied():
    from hydra.errors import ConfigCompositionException
    from omegaconf import OmegaConf

    from bm2.train import _short_config_errors

    calls = []

    def compose(overrides):
        calls.append(list(overrides))
        if "bad=1" in overrides:
            raise ConfigCompositionException("Could not override 'bad'")
        return OmegaConf.create({"optim": {"lr": 1.0}, "n": len(calls)})

    wrapped = _short_config_errors(compose)
    first = wrapped(["optim.lr=2"])
    first.optim.lr = 5.0  # callers may change their copy
    again = wrapped(["optim.lr=2"])
    assert calls == [["optim.lr=2"]] and again.optim.lr == 1.0 and again.n == 1
    assert wrapped([]).n == 2 and len(calls) == 2  # other overrides: composed
    for _ in range(2):  # errors are never memoised
        with pytest.raises(SystemExit, match="invalid overrides"):
            wrapped(["bad=1"])
    assert len(calls) == 4



def test_a_boolean_key_set_to_anything_but_true_or_false_stops_with_the_fix(monkeypatch):
    from omegaconf import OmegaConf

    from bm2 import train

    monkeypatch.setattr(train.main, "_base_cfg", OmegaConf.create({"optim": {"amp_cpu": False, "epochs": 12}}),
                        raising=False)
    train._check_booleans(OmegaConf.create({"optim": {"amp_cpu": True, "epochs": 3}}),
                          ["optim.amp_cpu=true", "optim.epochs=3"])  # fine
    for value in ("no", "tru", "0"):
        cfg = OmegaConf.create({"optim": {"amp_cpu": value if value != "0" else 0, "epochs": 12}})
        with pytest.raises(SystemExit, match="optim.amp_cpu is true or false.*set optim.amp_cpu=true"):
            train._check_booleans(cfg, [f"optim.amp_cpu={value}"])


def test_a_device_that_torch_does_not_know_names_the_valid_settings():
    from bm2.builders import resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="device=auto.*device=cuda:N"):
        resolve_device("gpu")
