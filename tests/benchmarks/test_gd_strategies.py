"""pytest-benchmark timings of the key cells: every strategy on gd at one size, both frameworks.

``make bench-pytest`` times them; ``make test`` runs each once as a test (the gradient must
match its float64 reference). Save and compare baselines as the README shows.
"""

from __future__ import annotations

import numpy as np
import pytest

import backends
from suite.point import Point
from suite.program import prepare

N, K = 16, 200
OPTIONS = {"momentum": "0.9"}
#: the error each strategy must stay below at this size, against its own reference: exact
#: strategies to rounding; the IFT solvers to the distance of x_200 from w* (≈ 9e-5 here);
#: the biased ones only to the gradient's scale
TOLERANCE = {"ift-direct": 1e-3, "ift-cg": 1e-3, "ift-gmres": 1e-3, "truncated": 1.0,
             "ift-jfb": 1.0, "ift-neumann": 1.0}


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("backend", list(backends.registry()))
def test_gradient(benchmark, backend, framework):
    prep = prepare(Point("gd", backend, framework, n=N, K=K, options=OPTIONS))
    fw = prep.fw
    fn = fw.compile(prep.gradient_program())
    fw.synchronize(fn(prep.theta, prep.arrays))  # compile / warm up outside the timing

    def gradient():
        out = fn(prep.theta, prep.arrays)
        fw.synchronize(out)
        return out

    grad, _ = benchmark(gradient)
    reference = prep.problem.reference_gradient(prep.instance, K, prep.strategy.reference)
    error = np.linalg.norm(fw.to_numpy(grad) - reference) / np.linalg.norm(reference)
    assert error < TOLERANCE.get(backend, 1e-8)
