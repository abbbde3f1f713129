"""BatchLoader (threads + recycled buffers) yields exactly the batches of torch's DataLoader, in the same order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bm2.cache import Cache
from bm2.data import NormParams, SplitParams, WindowParams, build_datasets, collate
from bm2.data.dataset import LazyArray
from bm2.data.loader import BatchLoader, BufferPool
from bm2.features import FeatureStack, WordOnset
from bm2.preprocessing import PreprocessParams, RobustScaler


def _train(array_recording, tmp_path, n_recordings=2):
    recs = [array_recording(seed=s, subject=f"0{s + 1}") for s in range(n_recordings)]
    return build_datasets(recs, Cache(tmp_path), PreprocessParams(sample_rate=100.0), FeatureStack([WordOnset()]),
                          WindowParams(tmin=-0.5, tmax=1.5, stride=0.25, offset_ms=100), SplitParams(0.0, 0.0),
                          NormParams(max_scale=3.0)).train


def _epochs(loader, n=2):
    """Every batch of ``n`` passes, copied (the loader may recycle its buffers once a batch is dropped)."""
    return [{k: v.clone() for k, v in batch.items()} for _ in range(n) for batch in loader]


def _assert_same(a, b):
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


def _old_brain(ds, index):
    """The window as the loader computed it before (mean over the strided slice, then in-place passes)."""
    rec = ds.recordings[ds._rec[index]]
    start, length = int(ds._start[index]), ds.window.n_samples(rec.sample_rate)
    k = ds.window.offset_samples(rec.sample_rate)
    data = rec.brain.array
    out = np.array(data[..., start + k:start + length], dtype=np.float32)
    n_pre = int(round(-ds.window.tmin * rec.sample_rate))
    shift = np.zeros(out.shape[:-1], dtype=np.float32)
    shift += data[..., start:start + n_pre].mean(axis=-1, dtype=np.float32)
    shift += rec.scaler.center
    out -= shift[..., None]
    out *= (1.0 / rec.scaler.scale)[..., None]
    np.clip(out, -rec.scaler.max_scale, rec.scaler.max_scale, out=out)
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_same_batches_same_order_as_dataloader(array_recording, tmp_path, workers):
    ds = _train(array_recording, tmp_path)
    assert len(ds) >= 12
    kwargs = dict(batch_size=5, shuffle=True, drop_last=True)
    ours = _epochs(BatchLoader(ds, num_workers=workers, generator=torch.Generator().manual_seed(7), **kwargs))
    theirs = _epochs(torch.utils.data.DataLoader(ds, collate_fn=collate, num_workers=workers,
                                                 generator=torch.Generator().manual_seed(7), **kwargs))
    _assert_same(ours, theirs)
    order = torch.cat([b["index"] for b in ours[:len(ours) // 2]]).tolist()
    assert order != sorted(order)  # shuffled
    # without a generator both draw from the global one, and leave it in the same state
    torch.manual_seed(0)
    ours = _epochs(BatchLoader(ds, num_workers=workers, **kwargs))
    ours_next = torch.rand(3)
    torch.manual_seed(0)
    theirs = _epochs(torch.utils.data.DataLoader(ds, collate_fn=collate, num_workers=workers, **kwargs))
    _assert_same(ours, theirs)
    assert torch.equal(ours_next, torch.rand(3))
    # and the numbers are the loader's of before, bit for bit
    for batch in ours[:3]:
        for row, index in zip(batch["brain"], batch["index"].tolist()):
            np.testing.assert_array_equal(row.numpy(), _old_brain(ds, index))
        items = collate([ds[i] for i in batch["index"].tolist()])
        assert torch.equal(items["features"], batch["features"])


def test_sequential_loader_and_sampler_argument(array_recording, tmp_path):
    ds = _train(array_recording, tmp_path, n_recordings=1)
    sampler = torch.utils.data.RandomSampler(ds, num_samples=3 * len(ds), generator=torch.Generator().manual_seed(1))
    ours = _epochs(BatchLoader(ds, batch_size=4, sampler=sampler, num_workers=2), n=1)
    sampler = torch.utils.data.RandomSampler(ds, num_samples=3 * len(ds), generator=torch.Generator().manual_seed(1))
    _assert_same(ours, _epochs(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate),
                               n=1))
    plain = BatchLoader(ds, batch_size=4)  # no shuffle, last batch kept
    assert len(plain) == -(-len(ds) // 4)
    assert torch.cat([b["index"] for b in plain]).tolist() == list(range(len(ds)))


def _drop_channels(ds, recording, keep, tmp_path):
    """``ds`` with recording ``recording`` reduced to the channels ``keep`` (another montage)."""
    rec = ds.recordings[recording]
    path = tmp_path / f"montage{recording}.npy"
    np.save(path, np.asarray(rec.brain.array)[keep])
    scaler = RobustScaler(rec.scaler.center[keep], rec.scaler.scale[keep], rec.scaler.max_scale)
    ds.recordings[recording] = dataclasses.replace(rec, brain=LazyArray(str(path)), positions=rec.positions[keep],
                                                   ch_names=[rec.ch_names[i] for i in keep], scaler=scaler)
    return ds


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_montages_are_padded_as_before(array_recording, tmp_path, workers):
    ds = _drop_channels(_train(array_recording, tmp_path), 1, list(range(7)), tmp_path)
    kwargs = dict(batch_size=6, shuffle=True, generator=None)
    torch.manual_seed(3)
    ours = _epochs(BatchLoader(ds, num_workers=workers, **kwargs), n=1)
    torch.manual_seed(3)
    theirs = _epochs(torch.utils.data.DataLoader(ds, collate_fn=collate, num_workers=workers, **kwargs), n=1)
    _assert_same(ours, theirs)
    masks = torch.cat([b["mask"] for b in ours])
    assert masks.shape[1] == 12 and {int(m.sum()) for m in masks} == {7, 12}  # both montages, padded to 12


def test_buffers_are_recycled_only_once_released(array_recording, tmp_path):
    ds = _train(array_recording, tmp_path, n_recordings=1)
    loader = BatchLoader(ds, batch_size=4, drop_last=True, num_workers=2, prefetch=1)
    kept = list(loader)  # the consumer keeps every batch: none may be overwritten
    copies = [{k: v.clone() for k, v in b.items()} for b in kept]
    kept2 = list(loader)
    _assert_same(kept, copies)
    _assert_same(kept2, copies)
    ptrs = {b["brain"].data_ptr() for b in kept + kept2}
    assert len(ptrs) == len(kept) + len(kept2)  # all distinct while held
    del kept, kept2, copies
    pool = loader.pool
    before = pool.allocated
    for _ in range(3):
        for _batch in loader:  # dropped at each step: the pool serves the buffers again
            pass
    del _batch
    assert pool.reused > 0 and pool.allocated - before <= 2 * 2  # brain and features, a few at most
    views = [b["brain"][:, :3] for b in loader]  # a view keeps its buffer as much as the batch itself
    assert len({v.data_ptr() for v in views}) == len(views)


def test_pool_hands_out_a_released_buffer_again():
    pool = BufferPool(max_per_shape=2)
    a = pool.take("brain", (2, 3))
    ptr = a.data_ptr()
    b = pool.take("brain", (2, 3))
    assert b.data_ptr() != ptr  # a is still held
    view = a[0]
    del a
    assert pool.take("brain", (2, 3)).data_ptr() not in (ptr, b.data_ptr())  # the view still holds a's memory
    del view
    assert pool.take("brain", (2, 3)).data_ptr() == ptr
    assert pool.take("brain", (3, 3)).shape == (3, 3) and pool.nbytes == 4 * (2 * 2 * 3 + 3 * 3)


def test_loader_threads_leave_the_trainer_threads_alone(array_recording, tmp_path):
    ds = _train(array_recording, tmp_path, n_recordings=1)
    before = torch.get_num_threads()
    list(BatchLoader(ds, batch_size=4, num_workers=2))
    assert torch.get_num_threads() == before
    torch.set_num_threads(2)
    try:  # 0 threads: the batch is filled on one intra-op thread, and the consumer gets its own setting back
        seen = [torch.get_num_threads() for _ in BatchLoader(ds, batch_size=4)]
        assert seen and set(seen) == {2}
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="num_workers >= 0"):
        BatchLoader(ds, num_workers=-1)


@pytest.mark.parametrize("workers", [0, 2])
def test_batch_sampler_gives_the_batches_of_dataloader(array_recording, tmp_path, workers):
    from bm2.data.samplers import ClassStructuredBatchSampler

    ds = _train(array_recording, tmp_path)
    sampler = ClassStructuredBatchSampler(np.arange(len(ds)) % 4, [0, 0, 1, 2], positives=2, negatives=1, seed=3)
    sizes = {len(b) for b in sampler}
    assert len(sizes) > 1  # classes of group 0 have one negative class fewer: batches of several sizes
    torch.manual_seed(5)
    ours = _epochs(BatchLoader(ds, batch_sampler=sampler, num_workers=workers), n=1)
    ours_next = torch.rand(3)
    torch.manual_seed(5)
    theirs = _epochs(torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate,
                                                 num_workers=workers), n=1)
    _assert_same(ours, theirs)
    assert torch.equal(ours_next, torch.rand(3))  # the global random state is left as DataLoader leaves it
    assert [b["index"].tolist() for b in ours] == list(sampler)


def test_window_plans_follow_a_replaced_scaler_and_are_not_pickled(array_recording, tmp_path):
    import pickle

    ds = _train(array_recording, tmp_path, n_recordings=1)
    first = ds.batch([0, 1, 2])["brain"].clone()
    assert ds._plans  # built on first use
    shipped = pickle.loads(pickle.dumps(ds))  # what a worker process receives (spawn)
    assert shipped._plans == {} and torch.equal(shipped.batch([0, 1, 2])["brain"], first)
    rec = ds.recordings[0]
    ds.recordings[0] = dataclasses.replace(rec, scaler=RobustScaler(rec.scaler.center, 2 * rec.scaler.scale,
                                                                    rec.scaler.max_scale))
    again = ds.batch([0, 1, 2])["brain"]
    assert not torch.equal(again, first)
    for row, index in zip(again, [0, 1, 2]):
        np.testing.assert_array_equal(row.numpy(), _old_brain(ds, index))
