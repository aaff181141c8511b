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


@pytest.fixture(scope="session", autouse=True)
def _shared_jax_compilation_cache(tmp_path_factory):
    """The in-process tests compile the same XLA programs many times over (every strategy is
    compared with unrolled on the same instance; trace and peak meters lower one program
    twice): JAX's persistent compilation cache, shared by the pytest-xdist workers of this
    session, compiles each once. Set through jax.config, not the environment, so that the
    points tests measure in subprocesses compile as a user's do (their compile_s is real)."""
    import jax

    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    jax.config.update("jax_compilation_cache_dir", str(shared / "jax-compilation-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


FRAMEWORKS = ("torch", "jax")

