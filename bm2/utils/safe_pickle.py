"""Reading pickles of data releases without running their code.

A plain :func:`pickle.load` executes whatever callable the file names (``os.system``, ``builtins.eval`` ...).
:func:`load_restricted` only lets the file name the globals of an allow-list, each mapped to a bm2 callable
that can only build data (an attribute dict, a numpy array ...); any other global, and any persistent id, is
refused with a :class:`RefusedGlobalError` naming the file and the global, before anything is called.
Truncated or corrupt files raise :class:`PickleReadError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import typing as tp
from pathlib import Path

import numpy as np


class PickleReadError(ValueError):
    """A pickle cannot be read (truncated, corrupt, not a pickle); the message names the file."""


class RefusedGlobalError(PickleReadError, pickle.UnpicklingError):
    """A pickle names a global outside the allow-list; :attr:`name` is ``module.qualname``."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class AttrDict(dict):
    """A dict whose items are also attributes (``item.name`` is ``item["name"]``): bm2's stand-in for the
    attribute-dict classes of pickled releases. Pickled state (an instance ``__dict__`` or a mapping) is merged
    into the items."""

    def __getattr__(self, key: str) -> tp.Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: tp.Any) -> None:
        self[key] = value

    def __setstate__(self, state: tp.Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if state is None:
            return
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"attribute-dict state must be a mapping, got {type(state).__name__}")
        self.update(state)


def _reconstructor(cls: tp.Any, base: tp.Any, state: tp.Any) -> tp.Any:
    """``copyreg._reconstructor`` (protocols 0 and 1) limited to the allowed attribute dict over ``dict``."""
    if cls is not AttrDict or base is not dict:
        raise pickle.UnpicklingError(f"copyreg._reconstructor is only allowed for an attribute dict, got {cls}")
    out = AttrDict()
    if state:
        out.update(state)
    return out


def _latin1(text: tp.Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes (``encode(str, 'latin1')``), and nothing else."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed as encode(str, 'latin1'), got {encoding!r}")
    return text.encode("latin1", errors)


def _numpy_callables() -> dict[str, tp.Callable[..., tp.Any]]:
    """numpy's array / dtype / scalar reconstruction under both module paths (numpy < 2: ``numpy.core``,
    numpy >= 2: ``numpy._core``); they build arrays only (object arrays' items go through this unpickler)."""
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    found: dict[str, tp.Callable[..., tp.Any]] = {"ndarray": np.ndarray, "dtype": np.dtype,
                                                  "_reconstruct": multiarray._reconstruct,
                                                  "scalar": multiarray.scalar}
    frombuffer = getattr(numeric, "_frombuffer", None)  # protocol 5 arrays
    out: dict[str, tp.Callable[..., tp.Any]] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for core in ("numpy.core", "numpy._core"):
        out[f"{core}.multiarray._reconstruct"] = found["_reconstruct"]
        out[f"{core}.multiarray.scalar"] = found["scalar"]
        if frombuffer is not None:
            out[f"{core}.numeric._frombuffer"] = frombuffer
    return out


#: globals every restricted load allows: numpy arrays and the byte strings of protocol 2
BASE_ALLOWED: dict[str, tp.Callable[..., tp.Any]] = {**_numpy_callables(), "_codecs.encode": _latin1,
                                                      "copyreg._reconstructor": _reconstructor,
                                                      "builtins.dict": dict}
#: module renames of protocols 0-2 written by Python 2 (what pickle's own find_class maps)
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of ``allowed`` (``{"module.qualname": callable}``)."""

    def __init__(self, file: tp.IO[bytes], allowed: tp.Mapping[str, tp.Callable[..., tp.Any]], source: str) -> None:
        super().__init__(file)
        self.allowed, self.source = dict(allowed), source

    def find_class(self, module: str, name: str) -> tp.Any:
        full = f"{_PY2_MODULES.get(module, module)}.{name}"
        if full not in self.allowed:
            raise RefusedGlobalError(
                f"{self.source}: refused to unpickle the global {full!r}: only {sorted(self.allowed)} are allowed "
                "(a pickle naming other callables could run code on load)", full)
        return self.allowed[full]

    def persistent_load(self, pid: tp.Any) -> tp.NoReturn:
        raise RefusedGlobalError(f"{self.source}: refused a persistent id ({pid!r}) in the pickle", "persistent_id")


def load_restricted(path: str | Path, allowed: tp.Mapping[str, tp.Callable[..., tp.Any]] | None = None,
                    classes: tp.Sequence[str] = ()) -> tp.Any:
    """The object pickled in ``path``, constructing only :data:`BASE_ALLOWED` and ``allowed``.

    ``classes``: ``module.qualname`` of attribute-dict classes of the release, each read as :class:`AttrDict`.
    Raises :class:`RefusedGlobalError` (any other global) or :class:`PickleReadError` (truncated / corrupt file),
    both naming ``path``; nothing outside the allow-list is ever called.
    """
    path = Path(path)
    table: dict[str, tp.Callable[..., tp.Any]] = {**BASE_ALLOWED, **{name: AttrDict for name in classes},
                                                  **(allowed or {})}
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise PickleReadError(f"{path}: cannot read the pickle ({exc})") from exc
    try:
        obj = RestrictedUnpickler(io.BytesIO(payload), table, str(path)).load()
    except RefusedGlobalError:
        raise
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as exc:
        kind = "truncated" if isinstance(exc, EOFError) or "truncated" in str(exc) else "corrupt"
        raise PickleReadError(f"{path}: the pickle is {kind} or not a pickle ({type(exc).__name__}: {exc}); "
                              "download the file again") from exc
    return obj


__all__ = ["AttrDict", "BASE_ALLOWED", "PickleReadError", "RefusedGlobalError", "RestrictedUnpickler",
           "load_restricted"]
