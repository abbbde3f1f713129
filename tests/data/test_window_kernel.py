"""The compiled window kernel (bm2/data/_windows.c through bm2.data.window_kernel): the torch path's numbers, bit for
bit, wherever the loader uses it; clear errors and a fallback elsewhere."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest
import torch

from bm2.cache import Cache
from bm2.data import AugmentParams, NormParams, SplitParams, WindowParams, build_datasets
from bm2.data import window_kernel
from bm2.data.loader import BufferPool
from bm2.features import FeatureStack, MelSpectrum, WordOnset
from bm2.preprocessing import PreprocessParams

needs_kernel = pytest.mark.skipif(not window_kernel.available(), reason="the window kernel is not built here")


def test_kernel_is_built_where_a_c_compiler_is():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the install could not build the kernel")
    assert window_kernel.library_path() is not None, "reinstall bm2 (make install / pip install -e .) to build it"
    assert window_kernel.available()


def _torch_reference(array, starts, first, n_out, n_pre, centre, multiply=None, divide=None, max_scale=None):
    """The torch path's operations, written out per window (numpy's float32 mean, then sub, scale, clamp)."""
    out = torch.empty(len(starts), *array.shape[:-1], n_out)
    for w, s in enumerate(starts):
        if n_pre:
            shift = np.add.reduce(np.ascontiguousarray(array[..., s:s + n_pre]), axis=-1, dtype=np.float32)
            np.divide(shift, np.intp(n_pre), out=shift, casting="unsafe")
            shift += centre
        else:
            shift = centre.copy()
        torch.sub(torch.from_numpy(array).narrow(-1, s + first, n_out), torch.from_numpy(shift[..., None]),
                  out=out[w])
        if multiply is not None:
            out[w].mul_(torch.from_numpy(multiply[..., None]))
        if divide is not None:
            out[w].div_(torch.from_numpy(divide[..., None]))
        if max_scale is not None:
            out[w].clamp_(-max_scale, max_scale)
    return out


@needs_kernel
@pytest.mark.parametrize("n_pre", [0, 1, 7, 8, 60, 128, 129, 1000])  # numpy's pairwise sum: < 8, blocks, halves
@pytest.mark.parametrize("shape", [(5,), (3, 4)])  # (C, T) and time-frequency (C, F, T)
def test_same_numbers_as_torch(n_pre, shape):
    rng = np.random.default_rng(n_pre)
    array = (rng.standard_normal((*shape, 3000)) * 1e3 + 17).astype(np.float32)
    array[0, ..., 1500] = np.nan  # propagates as in torch's clamp
    starts = rng.integers(0, 3000 - max(n_pre, 60) - 5, 9)
    centre = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 30, shape).astype(np.float32)
    for kwargs in [dict(multiply=1 / scale, max_scale=3.0), dict(divide=scale), dict(max_scale=20.0), {}]:
        out = torch.full((9, *shape, 50), 7.0)
        order = np.argsort(starts)
        assert window_kernel.normalised_windows(array, starts[order], order, 2, 50, n_pre, centre, out, **kwargs)
        ref = _torch_reference(array, starts, 2, 50, n_pre, centre, **kwargs)
        assert torch.equal(torch.nan_to_num(out, nan=1e9), torch.nan_to_num(ref, nan=1e9)), kwargs
        assert out.isnan().any() == ref.isnan().any()


def _datasets(array_recording, tmp_path, norm, window, features=None, augment=None):
    recs = [array_recording(seed=s, subject=f"0{s + 1}") for s in range(2)]
    return build_datasets(recs, Cache(tmp_path), PreprocessParams(sample_rate=100.0),
                          FeatureStack([features or WordOnset()]), window, SplitParams(0.0, 0.0), norm,
                          augment=augment).train


WINDOW = WindowParams(tmin=-0.5, tmax=1.5, stride=0.25, offset_ms=100)


@needs_kernel
@pytest.mark.parametrize("case", ["default", "no_baseline", "no_scaler_no_clamp", "lead", "mel_features", "augment"])
def test_loader_batches_equal_the_torch_path(array_recording, tmp_path, monkeypatch, case):
    import dataclasses

    norm, window, features, augment = NormParams(max_scale=3.0), WINDOW, None, None
    if case == "no_baseline":
        norm = dataclasses.replace(norm, baseline=False)
    if case == "no_scaler_no_clamp":
        norm = dataclasses.replace(norm, robust=False, max_scale=None)
    if case == "lead":
        window = dataclasses.replace(window, lead_ms=50.0)
    if case == "mel_features":
        features = MelSpectrum(n_mels=8)
    if case == "augment":
        augment = AugmentParams(shift=0.2)
    ds = _datasets(array_recording, tmp_path, norm, window, features, augment)
    calls = []
    kernel = window_kernel.normalised_windows
    def spy(*args, **kwargs):
        written = kernel(*args, **kwargs)
        assert written, "the kernel refused a layout of the loader"  # else torch would rewrite the batch unseen
        calls.append(args[0].shape)
        return written

    monkeypatch.setattr(window_kernel, "normalised_windows", spy)
    indices = np.random.default_rng(0).permutation(len(ds))[:11].tolist()  # both recordings, shuffled
    assert len({int(ds._rec[i]) for i in indices}) == 2
    fast = ds.batch(indices, BufferPool().take)  # the solver's loader: batch buffers from a pool
    n_channels = ds.recordings[0].brain.array.shape[0]
    # one call per recording for the brain windows and one per recording for the feature windows
    assert sorted(shape[0] == n_channels for shape in calls) == [False, False, True, True]
    item = ds[indices[3]]  # its brain window by the kernel, its features per item by numpy
    assert len(calls) == 5
    assert ds.brain_window_path() == "compiled window kernel"  # what the solver logs
    monkeypatch.setenv(window_kernel.ENV, "0")
    assert not window_kernel.available() and ds.brain_window_path() == f"torch path ({window_kernel.ENV}=0)"
    slow = ds.batch(indices, BufferPool().take)
    assert len(calls) == 5  # the torch path ran
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
    assert torch.equal(item["brain"], slow["brain"][3])


@needs_kernel
def test_errors_and_fallbacks():
    array = np.arange(40, dtype=np.float32).reshape(2, 20)
    centre = np.zeros(2, dtype=np.float32)
    out = torch.full((2, 2, 5), -1.0)
    with pytest.raises(IndexError, match="reaches outside the recording's 20 samples"):
        window_kernel.normalised_windows(array, np.array([0, 16]), np.array([0, 1]), 0, 5, 0, centre, out)
    with pytest.raises(IndexError, match="baseline"):
        window_kernel.normalised_windows(array, np.array([2]), np.array([0]), -3, 5, 2, centre, out)
    assert torch.all(out == -1)  # nothing written
    with pytest.raises(IndexError, match="outside a batch of 2"):
        window_kernel.normalised_windows(array, np.array([0]), np.array([2]), 0, 5, 0, centre, out)
    with pytest.raises(ValueError, match="one length"):
        window_kernel.normalised_windows(array, np.array([0, 1]), np.array([0]), 0, 5, 0, centre, out)
    with pytest.raises(ValueError, match="not both"):
        window_kernel.normalised_windows(array, np.array([0]), np.array([0]), 0, 5, 0, centre, out,
                                         multiply=centre, divide=centre)
    # layouts it does not handle: the caller's torch path runs
    assert not window_kernel.normalised_windows(array.astype(np.float64), np.array([0]), np.array([0]), 0, 5, 0,
                                                 centre, out)
    assert not window_kernel.normalised_windows(array, np.array([0]), np.array([0]), 0, 5, 0, centre,
                                                torch.zeros(2, 5, 2).transpose(1, 2))
    assert not window_kernel.normalised_windows(array[:, ::2], np.array([0]), np.array([0]), 0, 5, 0, centre, out)
    # rows 82 bytes apart (20 floats + 2 bytes): contiguous rows of 4-byte steps, but unaligned
    fields = np.zeros(2, dtype=[("x", np.float32, (20,)), ("pad", np.int16)])["x"]
    assert fields.strides == (82, 4) and not fields.flags.aligned
    assert not window_kernel.normalised_windows(fields, np.array([0]), np.array([0]), 0, 5, 0, centre, out)
    assert torch.all(out == -1)
    assert window_kernel.normalised_windows(array, np.array([15, 1]), np.array([1, 0]), 0, 5, 0, centre, out)
    assert torch.equal(out[0, 1], torch.arange(21.0, 26.0)) and torch.equal(out[1, 0], torch.arange(15.0, 20.0))


def test_a_library_of_another_interface_is_not_called(tmp_path, monkeypatch, caplog):
    """A library left by an older checkout (another ABI number, or none) falls back to torch with a warning."""
    import subprocess

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip("no C compiler")
    source = tmp_path / "old.c"
    source.write_text("int bm2_windows_abi(void) { return 999; }\n")
    library = tmp_path / "old.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    assert window_kernel._open(library) is None
    assert "another bm2 version" in caplog.text
    built = window_kernel.library_path()
    if built is not None:
        assert window_kernel._open(built) is not None
