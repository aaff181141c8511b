"""The meters: memray calibration, the saved-tensor meter, and the scaling the issue demands
on deterministic trace bytes and on allocator peaks."""

from __future__ import annotations

import numpy as np
import pytest

from suite.frameworks.torch_adapter import SavedTensorMeter
from suite.measure import memray_peak_bytes

from .conftest import FRAMEWORKS
from .helpers import peak_bytes, trace_bytes

CALIBRATION_BYTES = 64 * 2**20


def test_memray_reads_back_a_torch_allocation_within_one_percent():
    import torch

    def allocate():
        t = torch.empty(CALIBRATION_BYTES // 8, dtype=torch.float64)
        t.fill_(1.0)  # touch it: a lazily mapped buffer must still count in full
        return t

    peak = memray_peak_bytes(allocate)
    assert abs(peak - CALIBRATION_BYTES) <= 0.01 * CALIBRATION_BYTES


def test_memray_reads_back_a_jax_allocation_within_one_percent():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    def allocate():
        return jnp.ones(CALIBRATION_BYTES // 8, dtype=jnp.float64).block_until_ready()

    allocate()  # the protocol's warm-up: compiling the fill program is not the allocation
    peak = memray_peak_bytes(allocate)
    assert abs(peak - CALIBRATION_BYTES) <= 0.01 * CALIBRATION_BYTES


def test_memray_does_not_count_what_was_live_before():
    import torch

    before = torch.ones(CALIBRATION_BYTES // 8, dtype=torch.float64)
    peak = memray_peak_bytes(lambda: before.sum())
    assert peak < 0.01 * CALIBRATION_BYTES


def test_saved_tensor_meter_counts_storages_once_and_excludes_inputs():
    import torch

    x = torch.randn(1000, dtype=torch.float64)
    meter = SavedTensorMeter({x.untyped_storage().data_ptr()})
    leaf = x.detach().requires_grad_(True)  # shares x's storage: an input, not new memory
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        y = torch.exp(leaf)  # saves its output: 8000 bytes
        z = (y * y).sum()  # saves y twice (same storage): no new bytes
        w = (leaf * leaf).sum()  # saves the input twice: excluded
    assert meter.peak_bytes == 8000
    (z + w).backward()
    del y, z, w
    assert meter.live_bytes == 0


def test_saved_tensor_meter_is_a_high_water_mark_not_a_sum():
    import torch

    meter = SavedTensorMeter(set())
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        for _ in range(3):  # three graphs built and freed one after another
            leaf = torch.randn(500, dtype=torch.float64, requires_grad=True)
            torch.exp(leaf).sum().backward()
    assert meter.peak_bytes == 4000


_trace_bytes = trace_bytes
_peak_bytes = peak_bytes


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unrolled_trace_grows_linearly_in_K(framework):
    ratio = _trace_bytes("unrolled", framework, 400) / _trace_bytes("unrolled", framework, 100)
    assert 3.6 <= ratio <= 4.4


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("backend", ["ift-direct", "ift-cg"])
def test_ift_trace_is_flat_in_K(framework, backend):
    small, large = _trace_bytes(backend, framework, 100), _trace_bytes(backend, framework, 400)
    assert small > 0
    assert large == small  # a deterministic meter: achieved exactly equal in every case


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unrolled_trace_is_at_least_the_iterates(framework):
    """Reverse mode must keep at least one n-vector per step (DESIGN.md's Ω(Kn))."""
    n, K = 50, 200
    assert _trace_bytes("unrolled", framework, K, n) >= K * n * 8


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ift_direct_peak_grows_quadratically_in_n(framework):
    """The dense ∂F/∂x is built inside the gradient call: the allocator sees Θ(n²) — from
    n = 50 to 200 the peak grows by at least the Jacobian's own (200² − 50²)·8 bytes, and by
    more than the 4× any law a + b·n allows. (Before torch pushed its JVP columns in chunks,
    the n tangents' intermediates were a second n² term held at once, and the ratio was ≥ 8.)"""
    small = _peak_bytes("ift-direct", framework, 50, 50)
    large = _peak_bytes("ift-direct", framework, 50, 200)
    assert large - small >= (200 ** 2 - 50 ** 2) * 8
    assert 4.5 <= large / small <= 24


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_unrolled_peak_sees_the_trace(framework):
    """The allocator peak of an unrolled gradient is at least its trace bytes."""
    trace = _trace_bytes("unrolled", framework, 400, 100)
    assert _peak_bytes("unrolled", framework, 400, 100) >= 0.9 * trace


def test_memray_and_saved_tensor_meter_agree_on_a_known_graph():
    import torch

    n = 1 << 20
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)

    def forward_only():
        # saves exp's output (8 MiB) plus the tanh output (8 MiB), both kept until backward
        return torch.tanh(torch.exp(x)).sum()

    meter = SavedTensorMeter({x.untyped_storage().data_ptr()})
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        out = forward_only()
    del out
    peak = memray_peak_bytes(forward_only)
    assert meter.peak_bytes == 2 * n * 8
    assert np.isclose(peak, meter.peak_bytes, rtol=0.02)


def test_a_counting_pass_too_costly_for_its_size_is_skipped_and_says_why(monkeypatch):
    """Above COUNTING_MAX_DIM a framework that counts with a second program (JAX) records null
    counts and the reason; one that counts while tracing (torch) keeps its exact counts."""
    from suite import measure as measure_module
    from suite.point import Point, Settings

    monkeypatch.setattr(measure_module, "COUNTING_MAX_DIM", 7)
    skipped = measure_module.measure(Point("gd", "ift-cg", "jax", n=8, K=20), Settings(repeats=1))
    assert skipped.status == "ok", skipped.error
    assert (skipped.step_evals, skipped.hvp_evals, skipped.solver_iters) == (None, None, None)
    assert skipped.counts_note.startswith("counting pass skipped: dim x = 8 > 7")
    counted = measure_module.measure(Point("gd", "ift-cg", "torch", n=8, K=20),
                                     Settings(repeats=1))
    assert counted.step_evals == 20 and counted.counts_note is None
    monkeypatch.setattr(measure_module, "COUNTING_MAX_DIM", 8)
    exact = measure_module.measure(Point("gd", "ift-cg", "jax", n=8, K=20), Settings(repeats=1))
    assert exact.step_evals == 20 and exact.counts_note is None
    assert exact.hvp_evals == exact.solver_iters == counted.solver_iters > 0
