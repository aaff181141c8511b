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


#: test files, longest first (seconds per file, ``pytest --durations=0`` summed by file): the
#: Makefile hands whole files to pytest-xdist's workers in collection order
#: (``--no-loadscope-reorder``; by default they go largest test count first, which sends few
#: but long files such as test_trust last), and starting the longest files first keeps one
#: worker from running a long file alone at the end. Files not listed follow in their order.
LONGEST_FIRST = (
    "test_memory_scaling.py", "test_exact_strategies.py", "test_problems.py", "test_trust.py",
    "test_peers_jax.py", "test_qp.py", "test_executors.py", "test_deq.py", "test_report.py",
    "test_external_problems.py", "test_gate.py", "test_sweep_resume.py", "test_check.py",
    "test_failure_modes.py", "test_reversible.py", "test_gate_machines.py",
    "test_ift_family.py", "test_peers_torch.py", "test_figures.py", "test_problem_claims.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


FRAMEWORKS = ("torch", "jax")

