"""Shared fixtures. Heavy frameworks are imported once per test session."""

from __future__ import annotations

import os

import pytest

# Tests run in-process computations too; keep them to one thread like the measured points.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")


@pytest.fixture(scope="session", autouse=True)
def _single_thread_torch():
    import torch

    torch.set_num_threads(1)
    yield


FRAMEWORKS = ("torch", "jax")


def pytest_collection_modifyitems(config, items):
    """Tests that share a module-scoped fixture (a measured sweep, a Ray cluster) are one
    pytest-xdist group, so that the fixture is made once in one worker (``--dist loadgroup``);
    every other test is handed out on its own, which keeps both workers busy to the end (with
    whole files as the unit, the last large file ran alone)."""
    for item in items:
        fixturedefs = item._fixtureinfo.name2fixturedefs.values()
        if any(d.scope == "module" for defs in fixturedefs for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
