"""Fixtures of the integration tests: the local SLURM (started once per session, stopped if we started it)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scripts.slurm_local import LocalSlurm


@pytest.fixture(scope="session")
def local_slurm() -> Iterator[LocalSlurm]:
    """The local SLURM of the default state dir, started if needed; stops at the end only what it started."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM needs root")
    slurm = LocalSlurm()
    with slurm.running() as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        yield slurm


