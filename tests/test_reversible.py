"""Exact-arithmetic reversible learning: the buffer, bit-exact reversal, bits per iteration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends.exact_arithmetic import InformationBuffer
from suite.point import Point
from suite.program import evaluate

from .conftest import FRAMEWORKS
from .helpers import rel


def _framework(name: str):
    from suite.frameworks import registry

    return registry()[name]("cpu", "float64")


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.37])
def test_multiply_then_divide_is_the_identity_bit_for_bit(framework, gamma):
    fw = _framework(framework)
    xp = fw.xp
    rng = np.random.default_rng(0)
    steps = 200
    buffer = InformationBuffer.for_run(gamma, steps)
    v0 = fw.asarray(rng.integers(-2**60, 2**60, size=16, dtype=np.int64))

    def there_and_back(v, count):
        def mul(c):
            return buffer.multiply(fw, *c)

        def div(c):
            return buffer.divide(fw, *c)

        B, v_mid = fw.iterate(mul, (buffer.empty(xp, 16), v), count)
        B_mid = B
        B, v_end = fw.iterate(div, (B, v_mid), count)
        return v_mid, B_mid, v_end, B

    for count in (1, 37, steps):
        v_mid, B_mid, v_end, B = fw.compile(lambda v, c=count: there_and_back(v, c))(v0)
        assert np.array_equal(fw.to_numpy(v_end), fw.to_numpy(v0))
        assert not np.any(fw.to_numpy(B))
        if count == 1:  # γ·v rounded down: the information went into B, not into v
            exact = gamma * fw.to_numpy(v0).astype(float)
            assert np.all(np.abs(fw.to_numpy(v_mid) - exact) <= 1e-15 * np.abs(exact) + 1)
        if count == steps:  # the buffer holds ≈ steps · log₂(1/γ) bits for each parameter
            bits = fw.to_numpy(buffer.bits(xp, B_mid))
            assert np.mean(bits) / steps == pytest.approx(np.log2(1 / gamma), rel=0.1)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_reversible_matches_unrolled_reconstructs_x0_and_packs_the_buffer(framework, gamma):
    options = {"momentum": str(gamma)}
    K = 400
    ev = evaluate(Point("gd", "reversible", framework, n=12, K=K, options=options), count=True)
    unrolled = evaluate(Point("gd", "unrolled", framework, n=12, K=K, options=options))
    assert rel(ev.gradient, unrolled.gradient) < 1e-10
    assert ev.aux["reconstruction_exact"] and not ev.aux["buffer_overflow"]
    bits, theory = ev.aux["buffer_bits_per_iteration"], math.log2(1 / gamma)
    assert ev.aux["buffer_bits_theory"] == pytest.approx(theory)
    assert abs(bits - theory) <= 0.25 * theory
    assert ev.counts["step_evals"] == 2 * K and ev.counts["vjp_evals"] == K + 2


def test_buffer_capacity_follows_k_log_inverse_gamma():
    small, large = InformationBuffer.for_run(0.9, 1000), InformationBuffer.for_run(0.9, 10000)
    bits_per_limb = math.log2(small.radix)
    assert small.limbs == math.ceil(1000 * math.log2(10 / 9) / bits_per_limb) + 2
    assert (large.limbs - 2) / (small.limbs - 2) == pytest.approx(10, rel=0.1)
    assert bits_per_limb > 50  # radix (num·den)^j packs ≥ 50 of every 64 bits


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reversible_buffer_is_in_trace_and_peak(framework):
    from .helpers import peak_bytes, trace_bytes

    K, n = 3000, 50
    buffer = InformationBuffer.for_run(0.9, K).capacity_bytes(n)
    trace = trace_bytes("reversible", framework, K, n, momentum="0.9")
    assert trace >= buffer
    assert peak_bytes("reversible", framework, K, n, momentum="0.9") >= buffer
