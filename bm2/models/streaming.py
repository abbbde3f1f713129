"""Streaming evaluation: run a causal model on a recording chunk by chunk, as it would run online.

A causal model (e.g. ``SimpleConv(causal=True)``) computes output sample t from input samples
``t - receptive_field + 1 .. t`` only. :func:`stream` feeds the recording in chunks of ``chunk`` samples and
prepends to each chunk the last ``receptive_field - 1`` input samples already seen (the only past the new
outputs can depend on), runs the model on that window and keeps the outputs of the new samples. Every kept
output then depends only on input samples inside the window, and layers' zero padding only ever touches
outputs that are thrown away, so for a causal model in eval mode the streamed output equals the offline
output of the whole recording (up to float rounding; :func:`check_streaming` measures it). A non-causal
model also runs, but its outputs near the end of each chunk miss their future samples, so the two differ:
that is what makes the check able to fail.

The model must be in eval mode: in training mode BatchNorm normalises with the statistics of each window and
dropout draws new masks, so no chunked run can reproduce the offline one.
"""

from __future__ import annotations

import typing as tp

import torch
from torch import nn

from ..tasks.base import OUTPUT, run_model

BRAIN = "brain"


def _as_batch(batch_or_brain: dict[str, torch.Tensor] | torch.Tensor,
              inputs: dict[str, tp.Any]) -> dict[str, torch.Tensor]:
    """A batch dict from either a batch or a brain tensor plus the other inputs as keyword arguments."""
    if isinstance(batch_or_brain, torch.Tensor):
        batch = {BRAIN: batch_or_brain}
        brain = batch_or_brain
        batch.setdefault("subject_index", torch.zeros(brain.shape[0], dtype=torch.long, device=brain.device))
        batch.setdefault("mask", torch.ones(brain.shape[:2], dtype=torch.bool, device=brain.device))
    else:
        batch = dict(batch_or_brain)
    batch.update({k: v for k, v in inputs.items() if v is not None})
    if BRAIN not in batch:
        raise KeyError(f"the batch has no {BRAIN!r}: keys {sorted(batch)}")
    return batch


def receptive_field(model: nn.Module) -> int:
    """The model's ``receptive_field`` in samples (DDP wrappers are looked through).

    Raises ``AttributeError`` when the model does not declare one (then pass ``context`` to :func:`stream`).
    """
    inner = getattr(model, "module", model)
    value = getattr(inner, "receptive_field", None)
    if value is None:
        raise AttributeError(f"{type(inner).__name__} has no receptive_field; pass context= (past samples to keep)")
    return int(value)


@torch.no_grad()
def stream(model: nn.Module, batch_or_brain: dict[str, torch.Tensor] | torch.Tensor, chunk: int, *,
           context: int | None = None, key: str = OUTPUT, **inputs: tp.Any) -> torch.Tensor:
    """Output ``key`` of ``model`` on a recording fed in chunks of ``chunk`` samples (time is the last axis).

    Args:
        model: a model in eval mode whose output ``key`` is per input sample (time last, same length);
            called through :func:`bm2.tasks.base.run_model` with the batch keys it declares.
        batch_or_brain: a batch dict with ``brain [B, C, T]`` (or ``[B, C, F, T]``) and the model's other
            inputs (not sliced: ``subject_index``, ``positions``, ``mask`` are per recording), or just the
            ``brain`` tensor; then ``subject_index`` defaults to zeros and ``mask`` to all True.
        chunk: new samples per step (>= 1); the last step may be shorter.
        context: past input samples kept before each chunk; default ``receptive_field(model) - 1``.
        key: which named output to stream (``"output"`` for a model that returns a tensor).
        **inputs: batch entries added to / replacing those of ``batch_or_brain`` (e.g. ``positions=...``).

    Returns the streamed output ``[B, ..., T]``, on the device of ``brain``.

    Raises ``ValueError`` if the model is in training mode, ``chunk < 1`` or ``context < 0``, or the output
    is not per input sample; ``AttributeError`` without ``context`` on a model with no ``receptive_field``.
    """
    if model.training:
        raise ValueError("stream() needs the model in eval mode (call model.eval()): in training mode BatchNorm "
                         "and dropout make every window's output depend on the window")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 sample, got {chunk}")
    context = receptive_field(model) - 1 if context is None else int(context)
    if context < 0:
        raise ValueError(f"context must be >= 0 samples, got {context}")
    batch = _as_batch(batch_or_brain, inputs)
    brain = batch[BRAIN]
    total = brain.shape[-1]
    pieces = []
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        first = max(0, start - context)  # at the recording's start there is no past: the model pads zeros
        outputs = run_model(model, {**batch, BRAIN: brain[..., first:stop]})
        if key not in outputs:
            raise KeyError(f"the model has no output {key!r}; outputs: {sorted(outputs)}")
        out = outputs[key]
        if out.shape[-1] != stop - first:
            raise ValueError(f"output {key!r} has {out.shape[-1]} samples for {stop - first} input samples: "
                             f"only a model whose output is per input sample can be streamed")
        pieces.append(out[..., start - first:])
    return torch.cat(pieces, dim=-1)


@torch.no_grad()
def check_streaming(model: nn.Module, batch_or_brain: dict[str, torch.Tensor] | torch.Tensor,
                    chunks: int | tp.Sequence[int] = (1, 7, 50), *, context: int | None = None,
                    key: str = OUTPUT, **inputs: tp.Any) -> float:
    """Largest absolute difference between the offline and the streamed output, over the chunk sizes given.

    The offline output is ``run_model(model, batch)[key]`` on the whole recording; the streamed one is
    :func:`stream` with each chunk size of ``chunks``. 0 (up to float rounding, ~1e-6 in float32) for a
    causal model in eval mode; larger for a non-causal one. Arguments and errors as in :func:`stream`.
    """
    if model.training:
        raise ValueError("check_streaming() needs the model in eval mode (call model.eval())")
    batch = _as_batch(batch_or_brain, inputs)
    offline = run_model(model, batch)[key]
    sizes = [chunks] if isinstance(chunks, int) else list(chunks)
    if not sizes:
        raise ValueError("check_streaming needs at least one chunk size")
    return max(float((stream(model, batch, size, context=context, key=key) - offline).abs().max())
               for size in sizes)
