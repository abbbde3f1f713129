"""World-size invariance of the CLIP loss with gathered candidates (2 gloo processes vs. 1 process)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bm2.losses import ClipLoss

B, C, T = 8, 3, 5


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, 4, T, generator=g), torch.randn(B, C, T, generator=g)


def _model():
    torch.manual_seed(1)
    return torch.nn.Conv1d(4, C, 1)


def _reference(symmetric: bool):
    x, y = _data()
    model = _model()
    loss = ClipLoss(symmetric=symmetric)(model(x), y)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in model.parameters()]


def _worker(rank: int, world: int, port: int, gather: bool, symmetric: bool, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y = _data()
        sl = slice(rank * B // world, (rank + 1) * B // world)
        model = torch.nn.parallel.DistributedDataParallel(_model())
        loss = ClipLoss(symmetric=symmetric, gather_candidates=gather)(model(x[sl]), y[sl])
        loss.backward()  # DDP averages gradients over ranks
        value = loss.detach().clone()
        dist.all_reduce(value)
        out[rank] = (value.item() / world, [p.grad.clone() for p in model.parameters()])
    finally:
        dist.destroy_process_group()


def _run_ddp(gather: bool, symmetric: bool):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, port, gather, symmetric, out), nprocs=2, join=True)
        return dict(out)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gathered_candidates_match_the_full_batch(symmetric):
    ref_loss, ref_grads = _reference(symmetric)
    results = _run_ddp(gather=True, symmetric=symmetric)
    for rank in (0, 1):
        loss, grads = results[rank]
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_per_rank_negatives_differ_from_the_full_batch():
    ref_loss, ref_grads = _reference(False)
    loss, grads = _run_ddp(gather=False, symmetric=False)[0]
    assert abs(loss - ref_loss) > 1e-3  # fewer negatives: a different objective
    assert any(not torch.allclose(g, r, atol=1e-5) for g, r in zip(grads, ref_grads))
