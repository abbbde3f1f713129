"""Stable content hashes (never Python's salted ``hash()``)."""

from __future__ import annotations

import hashlib
import json
import typing as tp


def canonical(obj: tp.Any) -> str:
    """A canonical JSON string for ``obj`` (sorted keys, no whitespace, repr for unknown types)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def content_hash(obj: tp.Any, length: int = 16) -> str:
    """sha1 of the canonical form of ``obj`` (a string is hashed as-is), truncated to ``length`` hex digits."""
    text = obj if isinstance(obj, str) else canonical(obj)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]
