"""Thin helpers around ``torch.distributed``; every function works (as a no-op) without it."""

from __future__ import annotations

import typing as tp

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without distribution)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without distribution)."""
    return dist.get_world_size() if is_distributed() else 1


def is_rank_zero() -> bool:
    """Whether this process writes checkpoints, history and logs."""
    return rank() == 0


def init(backend: str | None = None) -> None:
    """Join the process group Dora describes (``dora run -d``, SLURM tasks); gloo on CPU, nccl on GPU."""
    import dora.distrib

    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dora.distrib.init(backend=backend)


def average_metrics(metrics: dict[str, float], count: float = 1.0) -> dict[str, float]:
    """Average ``metrics`` over processes, each weighted by its ``count`` (e.g. number of samples)."""
    if not is_distributed():
        return dict(metrics)
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] * count for k in keys] + [count], dtype=torch.float64)
    dist.all_reduce(values)
    total = float(values[-1])
    return {k: float(v) / max(total, 1e-12) for k, v in zip(keys, values[:-1])}


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sends each rank the summed gradient of its own slice."""

    @staticmethod
    def forward(ctx: tp.Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.size = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: tp.Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every rank's loss may depend on this rank's slice
        start = dist.get_rank() * ctx.size
        return grad[start:start + ctx.size]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every process along dim 0 (same size on every rank), differentiably.

    Gradients of every rank's loss with respect to this rank's slice come back to this rank, so a loss
    averaged over ranks (as DDP does with gradients) equals the same loss computed on the full batch.
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)
