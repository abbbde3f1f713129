"""Optimisers, learning-rate schedules and weight averaging, built from plain arguments.

* :func:`param_groups`: parameters grouped by learning-rate multiplier (``lr_mult``: module-name prefix ->
  multiplier, e.g. ``{encoder: 0.1}`` for a pre-trained encoder) and, with ``no_decay_norm_bias``, without weight
  decay on biases and normalisation weights (the usual AdamW recipe). Frozen parameters are left out.
* :func:`build_optimizer`: Adam (default, as brainmagick) or AdamW, as :func:`eager_optimizer_class` subclasses
  (the same updates, without importing ``torch._dynamo`` at start-up).
* :class:`WarmupCosine`: linear warm-up then cosine decay to ``min_lr_ratio * lr``, stepped per update or per epoch.
* :func:`build_ema`: an exponential moving average of the model (:class:`torch.optim.swa_utils.AveragedModel`).
"""

from __future__ import annotations

import inspect
import math
import sys
import typing as tp

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = (None, "none", "cosine")


def _is_norm_or_bias(module: nn.Module, param_name: str) -> bool:
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    return param_name.endswith("bias") or isinstance(module, norms)


def param_groups(modules: dict[str, nn.Module], lr: float, weight_decay: float,
                 lr_mult: dict[str, float] | None = None, no_decay_norm_bias: bool = False) -> list[dict]:
    """Parameter groups of ``modules`` (name -> module; names prefix the parameter names for ``lr_mult``).

    With neither ``lr_mult`` nor ``no_decay_norm_bias`` this is one group holding every trainable parameter in
    module order, i.e. exactly ``torch.optim.Adam(params)`` as before. Raises ``KeyError`` for a ``lr_mult`` prefix
    that names no parameter. With ``no_decay_norm_bias``, the parameters a module lists in its
    ``no_weight_decay()`` (names relative to it, e.g. positional embeddings) get no weight decay either.
    """
    lr_mult = dict(lr_mult or {})
    used: set[str] = set()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for prefix, root in modules.items():
        listed = getattr(root, "no_weight_decay", None)
        skip = set(listed()) if callable(listed) else set()
        for mod_name, module in root.named_modules():
            for p_name, param in module.named_parameters(recurse=False):
                if not param.requires_grad:
                    continue
                full = ".".join(x for x in (prefix, mod_name, p_name) if x)
                mult = 1.0
                for key, value in lr_mult.items():
                    if full == key or full.startswith(key + "."):
                        mult = float(value)
                        used.add(key)
                own = ".".join(x for x in (mod_name, p_name) if x)
                decay = 0.0 if (no_decay_norm_bias and (_is_norm_or_bias(module, p_name) or own in skip)) \
                    else weight_decay
                groups.setdefault((mult, decay), []).append(param)
    unused = sorted(set(lr_mult) - used)
    if unused:
        raise KeyError(f"optim.lr_mult names {unused}, which match no trainable parameter; module names are "
                       f"{sorted({n.split('.')[0] for m in modules.values() for n, _ in m.named_parameters()})}")
    return [{"params": params, "lr": lr * mult, "weight_decay": decay, "lr_mult": mult}
            for (mult, decay), params in groups.items()]


#: the methods of torch.optim.Optimizer that torch wraps in ``torch._disable_dynamo``
_DYNAMO_GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_EAGER_CLASSES: dict[type, type] = {}


def _dynamo_imported() -> bool:
    return "torch._dynamo" in sys.modules


def _wrapper_kind(fn: tp.Any) -> str:
    """Where the wrapper around ``fn`` was defined, e.g. ``_disable_dynamo.<locals>.inner`` ("" when ``fn`` is not
    wrapped, or before Python 3.11: its code's ``co_qualname``; ``functools.wraps`` copies the wrapped function's
    ``__qualname__``)."""
    code = getattr(fn, "__code__", None)
    return getattr(code, "co_qualname", "") if hasattr(fn, "__wrapped__") else ""


def eager_optimizer_class(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """A subclass of the torch optimizer ``cls`` that does not import ``torch._dynamo`` until something else does.

    torch 2.13 wraps ``Optimizer.add_param_group`` / ``zero_grad`` / ``state_dict`` / ``load_state_dict`` in
    ``torch._disable_dynamo`` and each optimizer's ``step`` in ``_use_grad_for_differentiable``; both import
    ``torch._dynamo`` on their first call (about 1 s of a 3.4 s cached ``dora run`` on the 2-core machine, and
    the constructor calls ``add_param_group``), only to keep a ``torch.compile`` trace out of the optimizer. A
    compilation needs ``torch._dynamo`` imported, so while it is not, these wrappers have nothing to guard: the
    subclass then calls the functions they wrap directly (``step`` with the gradient mode the wrapper sets:
    ``defaults["differentiable"]``). Once ``torch._dynamo`` is in ``sys.modules`` (anything imported it: a
    compilation, a library) every call goes through torch's own wrappers again, step hooks included. The updates
    are those of ``cls``, bit for bit (tested), and its state dicts are interchangeable with ``cls``'s.

    ``cls`` itself is returned unless its methods are wrapped exactly as in torch 2.13 (another torch version) or it
    overrides one of the four methods. The class is named as ``cls`` (reprs, profiler names) and registered as
    ``bm2.solvers.optim.Eager<cls>`` so that optimisers pickle; ``EagerAdam`` and ``EagerAdamW`` exist from import,
    so those also unpickle in a fresh process.
    """
    if cls in _EAGER_CLASSES:
        return _EAGER_CLASSES[cls]
    base = torch.optim.Optimizer
    guarded_step: tp.Any = cls.step
    while getattr(guarded_step, "hooked", False):  # Optimizer._patch_step_function's profiling hook, if applied
        guarded_step = guarded_step.__wrapped__
    expected = all(getattr(cls, n) is getattr(base, n) and _wrapper_kind(getattr(base, n)) ==
                   "_disable_dynamo.<locals>.inner" for n in _DYNAMO_GUARDED) and \
        _wrapper_kind(guarded_step) == "_use_grad_for_differentiable.<locals>._use_grad"
    if not expected:
        _EAGER_CLASSES[cls] = cls
        return cls
    raw = {name: inspect.unwrap(getattr(base, name)) for name in _DYNAMO_GUARDED}
    raw_step = inspect.unwrap(guarded_step)

    def direct(name: str) -> tp.Callable[..., tp.Any]:
        def method(self: torch.optim.Optimizer, *args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            if _dynamo_imported():
                return getattr(super(eager, self), name)(*args, **kwargs)
            return raw[name](self, *args, **kwargs)

        method.__name__ = method.__qualname__ = name
        method.__doc__ = raw[name].__doc__
        return method

    def step(self: torch.optim.Optimizer, closure: tp.Any = None) -> tp.Any:
        if _dynamo_imported():
            return guarded_step(self, closure)
        before = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(bool(self.defaults.get("differentiable", False)))
            return raw_step(self, closure)
        finally:
            torch.set_grad_enabled(before)

    step.__doc__ = raw_step.__doc__
    qualname = f"Eager{cls.__name__}"
    namespace: dict[str, tp.Any] = {name: direct(name) for name in _DYNAMO_GUARDED}
    namespace.update(step=step, __module__=__name__, __qualname__=qualname,
                     __doc__=f"{cls.__name__} (see :func:`eager_optimizer_class`).")
    eager = type(cls.__name__, (cls,), namespace)
    globals().setdefault(qualname, eager)  # where pickle looks it up
    _EAGER_CLASSES[cls] = eager
    return eager


EagerAdam = eager_optimizer_class(torch.optim.Adam)
EagerAdamW = eager_optimizer_class(torch.optim.AdamW)


def build_optimizer(groups: list[dict], name: str = "adam", lr: float = 3e-4,
                    betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam or AdamW over ``groups`` (:func:`param_groups`), as :func:`eager_optimizer_class` subclasses; the error
    lists the valid names."""
    classes: dict[str, tp.Any] = {"adam": EagerAdam, "adamw": EagerAdamW}  # Adam / AdamW's own arguments
    if name not in classes:
        raise KeyError(f"unknown optim.name {name!r}; valid optimisers: {list(OPTIMIZERS)}")
    return classes[name](groups, lr=lr, betas=betas, weight_decay=weight_decay)


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over ``warmup`` steps, then cosine decay from ``lr`` to ``min_lr_ratio * lr`` at ``total``.

    A step is an update or an epoch, whichever the solver steps it with. With ``warmup = 0`` and
    ``min_lr_ratio = 0`` stepped per epoch this equals :class:`torch.optim.lr_scheduler.CosineAnnealingLR` with
    ``T_max = total``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int = 0,
                 min_lr_ratio: float = 0.0) -> None:
        if total < 1 or warmup < 0:
            raise ValueError(f"a schedule needs total >= 1 and warmup >= 0 steps, got total={total}, warmup={warmup}")
        self.total, self.warmup, self.min_lr_ratio = total, warmup, min_lr_ratio
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step``."""
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, name: str | None, epochs: int, steps_per_epoch: int,
                    per_step: bool = False, warmup: float = 0.0, min_lr_ratio: float = 0.0
                    ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The schedule ``name`` (None or ``cosine``); ``warmup`` is in epochs (fractions allowed when per step)."""
    if name in (None, "none"):
        return None
    if name != "cosine":
        raise KeyError(f"unknown optim.scheduler {name!r}; use null or 'cosine'")
    if not per_step and warmup == 0 and min_lr_ratio == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))  # as before
    unit = max(1, steps_per_epoch) if per_step else 1
    return WarmupCosine(optimizer, total=max(1, epochs * unit), warmup=int(round(warmup * unit)),
                        min_lr_ratio=min_lr_ratio)


def build_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of ``model``'s parameters and buffers (None when ``decay`` is 0)."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"optim.ema must be in (0, 1) (or 0: off), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True)


__all__ = ["OPTIMIZERS", "WarmupCosine", "build_ema", "build_optimizer", "build_scheduler", "param_groups"]

