"""The training and validation loader: threads that fill recycled batch buffers from the memory-mapped cache.

torch's :class:`~torch.utils.data.DataLoader` with worker processes hands every batch over in a fresh
shared-memory segment; on the 2-core machine where bm2 was measured, the first-touch page faults of those fresh
pages cost more than the copy of the windows itself. The cached recordings are memory maps that every thread of
the process shares, and numpy / torch release the GIL while they copy and scale a window, so a few threads fill the
batches here instead, each into buffers taken from a :class:`BufferPool`: a buffer is reused only once nothing
outside the pool references it any more (the trainer dropped the batch), so its pages are faulted in once.

:class:`BatchLoader` draws the same batches in the same order as ``DataLoader`` with the same arguments (it uses
the same samplers and consumes the random generator the same way), with any number of threads (0: in the caller's
thread). Datasets without :meth:`~bm2.data.dataset.SegmentDataset.batch` (e.g. the grouped LibriBrain items) are
read with ``__getitems__`` or per item + ``collate``, without buffer reuse.
"""

from __future__ import annotations

import collections
import sys
import threading
import typing as tp
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from .dataset import collate, single_intra_op_thread


def _free_refcount() -> int:
    """What ``sys.getrefcount`` reports, inside a loop over a pool list, for an array nothing else references: 3 on
    CPython 3.11 (the list, the loop name, the call's argument). Measured rather than assumed, as interpreters
    differ (borrowed references in newer CPythons, free-threaded builds): a count too high would reuse a buffer a
    batch still holds."""
    pool = [np.empty(1, dtype=np.float32)]
    for array in pool:
        return sys.getrefcount(array)
    raise AssertionError("unreachable")


_FREE_REFCOUNT = _free_refcount()


class BufferPool:
    """Float32 batch buffers recycled once the consumer has released them (thread-safe).

    :meth:`take` returns a tensor over a pooled numpy array: every tensor or view made from it keeps a reference to
    that array, so the array's reference count says exactly whether any batch still uses it. ``max_per_shape``
    bounds the buffers kept per ``(key, shape)``; beyond it (a consumer that keeps many batches) fresh, unpooled
    buffers are handed out.
    """

    def __init__(self, max_per_shape: int = 8) -> None:
        self.max_per_shape = max_per_shape
        self._buffers: dict[tuple[str, tuple[int, ...]], list[np.ndarray]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        self.allocated = 0  # buffers created (pooled or not), for tests and reports
        self.reused = 0

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """An uninitialised float32 tensor of ``shape`` for batch entry ``key``: a released pooled buffer if
        there is one, else a new one."""
        shape = tuple(int(s) for s in shape)
        with self._lock:
            pool = self._buffers[(key, shape)]
            for array in pool:
                # only the pool's own references (as counted by this interpreter): no batch uses it any more
                if sys.getrefcount(array) <= _FREE_REFCOUNT:
                    self.reused += 1
                    return torch.from_numpy(array)
            self.allocated += 1
            array = np.empty(shape, dtype=np.float32)
            if len(pool) < self.max_per_shape:
                pool.append(array)
            return torch.from_numpy(array)

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool."""
        with self._lock:
            return sum(a.nbytes for pool in self._buffers.values() for a in pool)


class BatchLoader:
    """Batches of ``dataset`` filled by ``num_workers`` threads (0: in the caller's thread), in order.

    Takes the arguments of :class:`torch.utils.data.DataLoader` that bm2 uses and yields the same batches in the
    same order (``shuffle`` with ``generator``, or a ``sampler``; ``drop_last``; or a ``batch_sampler`` yielding
    lists of indices, e.g. :class:`bm2.data.samplers.ClassStructuredBatchSampler`); ``prefetch`` batches per thread
    are filled ahead of the consumer. Batch tensors come from a :class:`BufferPool` when the dataset has
    ``batch(indices, alloc)``: a batch's memory is reused once the consumer has dropped every reference to it, so
    a consumer may keep batches as long as it likes (they are then simply not recycled).

    Each filling thread limits torch's intra-op parallelism to itself (``torch.set_num_threads(1)`` applies to the
    calling thread with OpenMP), so the loader never competes with the trainer's threads beyond ``num_workers``.
    Buffers are not pinned: a non-blocking copy from pinned memory could still be reading a buffer the pool hands
    out again, whereas a copy from pageable memory to a GPU returns once its source has been read.
    """

    PREFETCH = 2  # batches filled ahead per thread, by default

    def __init__(self, dataset: tp.Any, batch_size: int = 1, shuffle: bool = False,
                 sampler: torch.utils.data.Sampler | None = None, generator: torch.Generator | None = None,
                 drop_last: bool = False, num_workers: int = 0, prefetch: int = PREFETCH,
                 pool: BufferPool | None = None, batch_sampler: tp.Iterable[list[int]] | None = None) -> None:
        if batch_size < 1 or num_workers < 0 or prefetch < 1:
            raise ValueError(f"BatchLoader needs batch_size >= 1, num_workers >= 0 and prefetch >= 1, got "
                             f"{batch_size}, {num_workers}, {prefetch}")
        # torch's own loader object checks the arguments and builds the batch sampler; it is never iterated
        self._sampling: torch.utils.data.DataLoader
        if batch_sampler is not None:  # torch rejects batch_size / shuffle / sampler / drop_last beside it
            self._sampling = torch.utils.data.DataLoader(dataset, batch_sampler=batch_sampler, generator=generator,
                                                         collate_fn=collate)
        else:
            self._sampling = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                                         sampler=sampler, generator=generator, drop_last=drop_last,
                                                         collate_fn=collate)
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.pool = pool if pool is not None else BufferPool(max_per_shape=max(num_workers, 1) * prefetch + 2)

    def __len__(self) -> int:
        return len(self._sampling)

    def _fetch(self, indices: list[int]) -> dict[str, torch.Tensor]:
        # looked up on the class: a wrapper that forwards unknown attributes to the dataset it wraps (the grouped
        # LibriBrain items) would otherwise hand out its base's windows instead of its own items
        if hasattr(type(self.dataset), "batch"):
            return self.dataset.batch(indices, self.pool.take)
        if hasattr(type(self.dataset), "__getitems__"):
            return collate(self.dataset.__getitems__(indices))
        return collate([self.dataset[i] for i in indices])

    def _fetch_in_thread(self, indices: list[int]) -> dict[str, torch.Tensor]:
        torch.set_num_threads(1)  # this thread only (see the class docstring)
        return self._fetch(indices)

    def __iter__(self) -> tp.Iterator[dict[str, torch.Tensor]]:
        sampler = self._sampling.batch_sampler
        assert sampler is not None  # batch_size >= 1 or a batch_sampler
        batches = iter(sampler)
        # DataLoader draws its workers' base seed from the generator (the global one when None) before the first
        # index: drawn here too, so that the order, and the random state left to training, are the same.
        torch.empty((), dtype=torch.int64).random_(generator=self._sampling.generator)
        if self.num_workers == 0:
            for indices in batches:
                with single_intra_op_thread():  # as the filling threads (not held across the yield: the trainer's)
                    batch = self._fetch(list(indices))
                yield batch
            return
        pending: collections.deque[Future] = collections.deque()
        executor = ThreadPoolExecutor(self.num_workers, thread_name_prefix="bm2-loader")
        try:
            for indices in batches:
                pending.append(executor.submit(self._fetch_in_thread, list(indices)))
                if len(pending) >= self.num_workers * self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)  # also when the consumer stops early
