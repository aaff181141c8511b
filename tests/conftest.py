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



#: the test files that take longest (CPU seconds in one `make test` here: memory scaling 190,
#: exact strategies 146, JAX peers 107, report 98, problems 97, executors 85, trust ≈ 80, qp 65,
#: external problems 56, deq 52, gate 45), started first: pytest-xdist hands out whole files
#: in collection order, and a long file started last ran alone at the end
HEAVY_FIRST = ("test_memory_scaling", "test_exact_strategies", "test_peers_jax", "test_report",
               "test_problems", "test_executors", "test_trust", "test_qp",
               "test_external_problems", "test_deq", "test_gate")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    # a stable sort: the tests of one file keep their order and stay together
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1],
                                         len(HEAVY_FIRST)))
