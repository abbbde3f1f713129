"""Mixed precision: which autocast (if any) a device gets.

bfloat16 autocast around the model's forward where the hardware computes bf16 natively: CUDA GPUs, and CPUs
with AVX-512 BF16 / AMX (detected through oneDNN, not assumed); float32 everywhere else. Losses and retrieval
scores are always computed in float32 (objectives cast the outputs).
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def autocast_dtype(device: str | torch.device, cuda: bool = True, cpu: bool = False) -> torch.dtype | None:
    """``torch.bfloat16`` when ``device`` should run its forward in bf16 (``cuda`` / ``cpu``: allowed per device
    type; the CPU also needs native bf16), else None (float32)."""
    kind = torch.device(device).type
    if kind == "cuda" and cuda:
        return torch.bfloat16
    if kind == "cpu" and cpu and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``device`` in ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


__all__ = ["autocast", "autocast_dtype", "cpu_has_native_bf16"]
