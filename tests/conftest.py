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
